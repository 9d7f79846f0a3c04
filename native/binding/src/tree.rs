//! The tree: what the last sync left (entries, stat data, recipes), held in Rust behind a handle.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use napi::bindgen_prelude::*;
use napi_derive::napi;
use skysync_core as core;

use crate::chunk::{params_of, recipe_js, ChunkParams, Recipe};
use crate::layouts::{chunk_ref, unpack_chunks};
use crate::paths::BytePath;

#[napi(object)]
pub struct Entry {
    #[napi(ts_type = "string")]
    pub path: BytePath,
    #[napi(ts_type = "'file' | 'dir' | 'symlink'")]
    pub kind: String,
    pub mode: u32,
    pub size: f64,
    /// Whole seconds and nanoseconds apart: a nanosecond mtime does not fit a double.
    pub mtime_sec: f64,
    pub mtime_nsec: u32,
    #[napi(ts_type = "string | undefined")]
    pub target: Option<BytePath>,
}

pub(crate) fn entry_js(e: core::EntryRef) -> Entry {
    Entry {
        path: BytePath(e.path().to_vec()),
        kind: e.meta.kind.as_str().to_string(),
        mode: e.meta.mode as u32,
        size: e.meta.size as f64,
        mtime_sec: e.meta.mtime_ns.div_euclid(1_000_000_000) as f64,
        mtime_nsec: e.meta.mtime_ns.rem_euclid(1_000_000_000) as u32,
        target: e.target().map(|t| BytePath(t.to_vec())),
    }
}

/// Where each chunk id first appears in a tree: entry index, index within the recipe, byte offset.
type ChunkIndex = HashMap<[u8; 32], (u32, u32, u64)>;

/// A scanned tree with the recipes of its files: what the last sync left. Lives in Rust; JavaScript holds a
/// handle and asks for single entries.
#[napi]
#[derive(Clone)]
pub struct Tree {
    pub(crate) inner: Arc<RwLock<core::Tree>>,
    pub(crate) chunk_index: Arc<RwLock<Option<ChunkIndex>>>,
}

impl Tree {
    pub(crate) fn wrap(s: core::Tree) -> Tree {
        Tree { inner: Arc::new(RwLock::new(s)), chunk_index: Arc::new(RwLock::new(None)) }
    }
}

#[napi(object)]
pub struct ChunkLocation {
    #[napi(ts_type = "string")]
    pub path: BytePath,
    /// Index of the chunk within the file's recipe.
    pub index: u32,
    pub offset: f64,
}

#[napi]
impl Tree {
    #[napi(factory)]
    pub fn empty(params: Option<ChunkParams>) -> Result<Tree> {
        Ok(Tree::wrap(core::Tree::empty(params_of(params)?)))
    }

    /// Loads a saved tree. A damaged file is an error whose message starts with "corrupted snapshot".
    #[napi(factory)]
    pub fn load(path: String) -> Result<Tree> {
        core::Tree::load(Path::new(&path))
            .map(Tree::wrap)
            .map_err(|e| Error::new(Status::GenericFailure, format!("{path}: {e}")))
    }

    #[napi]
    pub fn save(&self, path: String) -> Result<()> {
        self.inner
            .read()
            .unwrap()
            .save(Path::new(&path))
            .map_err(|e| Error::new(Status::GenericFailure, format!("{path}: cannot save snapshot: {e}")))
    }

    #[napi(getter)]
    pub fn size(&self) -> u32 {
        self.inner.read().unwrap().len() as u32
    }

    #[napi(getter)]
    pub fn params(&self) -> ChunkParams {
        self.inner.read().unwrap().params.into()
    }

    #[napi]
    pub fn entry(&self, #[napi(ts_arg_type = "string")] path: BytePath) -> Option<Entry> {
        let s = self.inner.read().unwrap();
        s.find(&path.0).map(|i| entry_js(s.entry(i)))
    }

    /// Every entry, in path order. For tests and listings; the sync path never needs it.
    #[napi]
    pub fn entries(&self) -> Vec<Entry> {
        self.inner.read().unwrap().entries().iter().map(entry_js).collect()
    }

    #[napi]
    pub fn recipe(&self, #[napi(ts_arg_type = "string")] path: BytePath) -> Option<Recipe> {
        let s = self.inner.read().unwrap();
        s.find(&path.0).and_then(|i| s.recipe_of(i)).map(|r| recipe_js(&r))
    }

    /// Records a file's recipe; false when the path is not a scanned file or the sizes disagree.
    #[napi]
    pub fn set_recipe(&self, #[napi(ts_arg_type = "string")] path: BytePath, chunks: Buffer) -> Result<bool> {
        let chunks = unpack_chunks(&chunks)?;
        let mut s = self.inner.write().unwrap();
        *self.chunk_index.write().unwrap() = None;
        Ok(match s.find(&path.0) {
            Some(i) => s.set_recipe(i, &chunks),
            None => false,
        })
    }

    /// Forgets a file's recipe so the next scan reports it again.
    #[napi]
    pub fn forget(&self, #[napi(ts_arg_type = "string")] path: BytePath) {
        let mut s = self.inner.write().unwrap();
        if let Some(i) = s.find(&path.0) {
            s.forget(i);
        }
    }

    /// Same entries as `other`, every recorded field alike (recipes aside): a scan that found the tree as it was.
    #[napi]
    pub fn same_entries(&self, other: &Tree) -> bool {
        if Arc::ptr_eq(&self.inner, &other.inner) {
            return true;
        }
        let (a, b) = (self.inner.read().unwrap(), other.inner.read().unwrap());
        a.entries() == b.entries()
    }

    /// Where each chunk (packed 32-byte ids) can be found in this tree, or null.
    #[napi]
    pub fn locate_chunks(&self, ids: Buffer) -> Result<Vec<Option<ChunkLocation>>> {
        if !ids.len().is_multiple_of(chunk_ref::ID_SIZE) {
            return Err(Error::new(Status::InvalidArg, "ids must be a multiple of 32 bytes".to_string()));
        }
        let s = self.inner.read().unwrap();
        {
            let mut idx = self.chunk_index.write().unwrap();
            if idx.is_none() {
                let mut map = HashMap::new();
                for ei in 0..s.len() {
                    if let Some(cs) = s.chunks_of(ei) {
                        let mut off = 0u64;
                        for (ci, c) in cs.iter().enumerate() {
                            map.entry(c.id).or_insert((ei as u32, ci as u32, off));
                            off += c.len as u64;
                        }
                    }
                }
                *idx = Some(map);
            }
        }
        let idx = self.chunk_index.read().unwrap();
        let map = idx.as_ref().unwrap();
        Ok(ids
            .chunks_exact(chunk_ref::ID_SIZE)
            .map(|id| {
                let id: [u8; 32] = id.try_into().unwrap();
                map.get(&id).map(|&(ei, ci, off)| ChunkLocation {
                    path: BytePath(s.entries().path(ei as usize).to_vec()),
                    index: ci,
                    offset: off as f64,
                })
            })
            .collect())
    }

    /// The stat an agent recorded for a placed entry: mtime observed after placing, and inode.
    #[napi]
    pub fn observed(&self, #[napi(ts_arg_type = "string")] path: BytePath) -> Option<Vec<String>> {
        let s = self.inner.read().unwrap();
        s.find(&path.0).map(|i| {
            let m = s.entry(i).meta;
            vec![m.ctime_ns.to_string(), m.ino.to_string()]
        })
    }
}
