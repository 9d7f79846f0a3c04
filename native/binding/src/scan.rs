//! Scanning: walk a root with its ignore rules, compare with the previous tree, return only what changed.

use std::path::PathBuf;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use skysync_core as core;

use crate::chunk::{params_of, recipe_js, ChunkParams, Recipe};
use crate::paths::{dir_scope, BytePath, DirScope};
use crate::tree::{entry_js, Entry, Tree};

#[napi(object)]
pub struct Change {
    #[napi(ts_type = "'added' | 'modified' | 'typechanged' | 'deleted'")]
    pub status: String,
    /// The entry now (for a deletion: the entry as it was).
    pub entry: Entry,
    #[napi(ts_type = "'file' | 'dir' | 'symlink' | undefined")]
    pub prev_kind: Option<String>,
    /// The recipe the file had at the last sync, when it was a chunked file.
    pub prev_recipe: Option<Recipe>,
}

#[napi(object)]
pub struct ScanWarning {
    #[napi(ts_type = "'unreadable' | 'special' | 'ignore-file'")]
    pub kind: String,
    #[napi(ts_type = "string")]
    pub path: BytePath,
    pub message: String,
}

#[napi(object)]
pub struct ScanStats {
    pub entries: u32,
    pub files: u32,
    pub dirs: u32,
    pub symlinks: u32,
    pub bytes: f64,
    pub ignored: u32,
    pub unchanged: u32,
    pub duration_ms: f64,
    #[napi(ts_type = "'gitignore' | 'skyignore'")]
    pub ignore_mode: String,
    /// Directories whose entries were listed.
    pub dirs_listed: u32,
    /// Only some directories were listed (`scanPartial`), the rest taken from the previous tree.
    pub partial: bool,
}

#[napi(object, object_from_js = false)]
pub struct ScanResult {
    pub tree: Tree,
    pub changes: Vec<Change>,
    pub warnings: Vec<ScanWarning>,
    pub stats: ScanStats,
}

pub struct ScanTask {
    root: PathBuf,
    previous: Option<Tree>,
    params: core::ChunkParams,
    /// For a partial scan: the directories to list, and those to walk whole.
    rescan: Option<DirScope>,
}

pub struct ScanDone {
    tree: core::Tree,
    prev: Option<Tree>,
    changes: Vec<core::Change>,
    warnings: Vec<core::Warning>,
    ignored: u64,
    dirs_listed: u64,
    partial: bool,
    duration_ms: f64,
}

impl Task for ScanTask {
    type Output = ScanDone;
    type JsValue = ScanResult;

    fn compute(&mut self) -> Result<ScanDone> {
        let t0 = std::time::Instant::now();
        let (hint_entries, hint_bytes) = match &self.previous {
            Some(t) => {
                let s = t.inner.read().unwrap();
                (s.len(), s.entries().name_bytes())
            }
            None => (0, 0),
        };
        let empty;
        let prev_guard;
        let prev: &core::Tree = match &self.previous {
            Some(t) => {
                prev_guard = t.inner.read().unwrap();
                &prev_guard
            }
            None => {
                empty = core::Tree::empty(self.params);
                &empty
            }
        };
        let out = match (&self.rescan, &self.previous) {
            (Some((dirs, subtrees)), Some(_)) => core::scan_tree_partial(&self.root, prev, dirs, subtrees),
            _ => core::scan_tree_sized(&self.root, hint_entries, hint_bytes),
        }
        .map_err(|e| Error::new(Status::GenericFailure, e.to_string()))?;
        let warnings = out.warnings.clone();
        let ignored = out.ignored;
        let dirs_listed = out.dirs_listed;
        let partial = out.partial;
        let (tree, changes) = prev.diff(out, self.params);
        Ok(ScanDone {
            tree,
            prev: self.previous.clone(),
            changes,
            warnings,
            ignored,
            dirs_listed,
            partial,
            duration_ms: t0.elapsed().as_secs_f64() * 1000.0,
        })
    }

    fn resolve(&mut self, _env: Env, done: ScanDone) -> Result<ScanResult> {
        let prev_lock = done.prev.as_ref().map(|t| t.inner.read().unwrap());
        let mut stats = ScanStats {
            entries: done.tree.len() as u32,
            files: 0,
            dirs: 0,
            symlinks: 0,
            bytes: 0.0,
            ignored: done.ignored as u32,
            unchanged: 0,
            duration_ms: done.duration_ms,
            ignore_mode: done.tree.ignore_mode.map(|m| m.as_str()).unwrap_or("gitignore").to_string(),
            dirs_listed: done.dirs_listed as u32,
            partial: done.partial,
        };
        for e in done.tree.entries() {
            match e.meta.kind {
                core::Kind::File => {
                    stats.files += 1;
                    stats.bytes += e.meta.size as f64;
                }
                core::Kind::Dir => stats.dirs += 1,
                core::Kind::Symlink => stats.symlinks += 1,
            }
        }
        let changes: Vec<Change> = done
            .changes
            .iter()
            .map(|c| {
                let prev_entry = c.prev_index.and_then(|i| prev_lock.as_ref().map(|p| (p, i)));
                let entry = match c.index {
                    Some(i) => entry_js(done.tree.entry(i)),
                    None => {
                        let (p, i) = prev_entry.unwrap();
                        entry_js(p.entry(i))
                    }
                };
                Change {
                    status: c.kind.as_str().to_string(),
                    entry,
                    prev_kind: prev_entry.map(|(p, i)| p.entry(i).meta.kind.as_str().to_string()),
                    prev_recipe: prev_entry.and_then(|(p, i)| p.recipe_of(i)).map(|r| recipe_js(&r)),
                }
            })
            .collect();
        stats.unchanged = stats.entries - done.changes.iter().filter(|c| c.index.is_some()).count() as u32;
        drop(prev_lock);
        let warnings = done
            .warnings
            .into_iter()
            .map(|w| ScanWarning {
                kind: match w.kind {
                    core::WarningKind::Unreadable => "unreadable",
                    core::WarningKind::Special => "special",
                    core::WarningKind::BadIgnoreFile => "ignore-file",
                }
                .to_string(),
                path: BytePath(w.path),
                message: w.message,
            })
            .collect();
        Ok(ScanResult { tree: Tree::wrap(done.tree), changes, warnings, stats })
    }
}

/// Walks `root` with its ignore rules and compares it with `previous` (the tree of the last sync). Only what
/// changed crosses into JavaScript; the returned tree carries recipes over for unchanged files.
#[napi(ts_return_type = "Promise<ScanResult>")]
pub fn scan(root: String, previous: Option<&Tree>, params: Option<ChunkParams>) -> Result<AsyncTask<ScanTask>> {
    Ok(AsyncTask::new(ScanTask {
        root: PathBuf::from(root),
        previous: previous.cloned(),
        params: params_of(params)?,
        rescan: None,
    }))
}

/// `scan`, listing only `dirs` (their direct entries), `subtrees` (walked whole) and directories `previous` does
/// not hold, and taking every other entry from `previous`. Equal to `scan` when nothing changed elsewhere since
/// `previous` was scanned: what a `Watcher` vouches for. `stats.partial` is false when it had to scan everything
/// (the ignore rules' kind changed).
#[napi(ts_return_type = "Promise<ScanResult>")]
pub fn scan_partial(
    root: String,
    previous: &Tree,
    #[napi(ts_arg_type = "string[]")] dirs: Vec<BytePath>,
    #[napi(ts_arg_type = "string[]")] subtrees: Vec<BytePath>,
    params: Option<ChunkParams>,
) -> Result<AsyncTask<ScanTask>> {
    Ok(AsyncTask::new(ScanTask {
        root: PathBuf::from(root),
        previous: Some(previous.clone()),
        params: params_of(params)?,
        rescan: Some(dir_scope(dirs, subtrees)),
    }))
}
