//! The napi binding: a thin layer over `skysync-core`. Paths cross as latin1 strings (one char per byte), so
//! names that are not UTF-8 survive byte for byte; JavaScript converts for display only.

#![deny(clippy::all)]

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use napi::bindgen_prelude::*;
use napi::sys;
use napi_derive::napi;
use skysync_core as core;

/// A path as raw bytes, carried to and from JavaScript as a latin1 string.
pub struct BytePath(pub Vec<u8>);

impl TypeName for BytePath {
    fn type_name() -> &'static str {
        "string"
    }
    fn value_type() -> ValueType {
        ValueType::String
    }
}

impl ValidateNapiValue for BytePath {}

impl ToNapiValue for BytePath {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        let mut out = std::ptr::null_mut();
        check_status!(unsafe {
            sys::napi_create_string_latin1(env, val.0.as_ptr().cast(), val.0.len() as isize, &mut out)
        })?;
        Ok(out)
    }
}

impl FromNapiValue for BytePath {
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> Result<Self> {
        let mut len = 0usize;
        check_status!(unsafe { sys::napi_get_value_string_latin1(env, value, std::ptr::null_mut(), 0, &mut len) })?;
        let mut buf = vec![0u8; len + 1];
        let mut written = 0usize;
        check_status!(unsafe {
            sys::napi_get_value_string_latin1(env, value, buf.as_mut_ptr().cast(), len + 1, &mut written)
        })?;
        buf.truncate(written);
        Ok(BytePath(buf))
    }
}

fn join(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(std::ffi::OsStr::from_bytes(rel))
}

#[napi(object)]
#[derive(Clone, Copy)]
pub struct ChunkParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl From<core::ChunkParams> for ChunkParams {
    fn from(p: core::ChunkParams) -> Self {
        ChunkParams { min_size: p.min_size, avg_size: p.avg_size, max_size: p.max_size }
    }
}

fn params_of(p: Option<ChunkParams>) -> Result<core::ChunkParams> {
    let p = match p {
        Some(p) => core::ChunkParams { min_size: p.min_size, avg_size: p.avg_size, max_size: p.max_size },
        None => core::DEFAULT_PARAMS,
    };
    p.validate().map_err(|e| Error::new(Status::InvalidArg, e))?;
    Ok(p)
}

/// The chunk parameters skysync uses unless told otherwise.
#[napi]
pub fn default_chunk_params() -> ChunkParams {
    core::DEFAULT_PARAMS.into()
}

/// A file's content as chunks. `chunks` packs each chunk as a 32-byte BLAKE3 id followed by its length
/// (u32 little endian), 36 bytes a chunk, so a 1 GB file's recipe crosses as one buffer.
#[napi(object)]
pub struct Recipe {
    pub size: f64,
    pub digest: Buffer,
    pub chunks: Buffer,
}

fn pack_chunks(chunks: &[core::ChunkRef]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.len() * 36);
    for c in chunks {
        out.extend_from_slice(&c.id);
        out.extend_from_slice(&c.len.to_le_bytes());
    }
    out
}

fn unpack_chunks(buf: &[u8]) -> Result<Vec<core::ChunkRef>> {
    if buf.len() % 36 != 0 {
        return Err(Error::new(Status::InvalidArg, "packed chunks must be a multiple of 36 bytes".to_string()));
    }
    Ok(buf
        .chunks_exact(36)
        .map(|c| core::ChunkRef { id: c[..32].try_into().unwrap(), len: u32::from_le_bytes(c[32..].try_into().unwrap()) })
        .collect())
}

fn recipe_js(r: &core::Recipe) -> Recipe {
    Recipe { size: r.size as f64, digest: r.digest.to_vec().into(), chunks: pack_chunks(&r.chunks).into() }
}

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

fn entry_js(e: core::EntryRef) -> Entry {
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

/// A scanned tree with the recipes of its files: what the last sync left. Lives in Rust; JavaScript holds a
/// handle and asks for single entries.
#[napi]
#[derive(Clone)]
pub struct Tree {
    inner: Arc<RwLock<core::Snapshot>>,
    chunk_index: Arc<RwLock<Option<HashMap<[u8; 32], (u32, u32, u64)>>>>,
}

impl Tree {
    fn wrap(s: core::Snapshot) -> Tree {
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
        Ok(Tree::wrap(core::Snapshot::empty(params_of(params)?)))
    }

    /// Loads a saved tree. A damaged file is an error whose message starts with "corrupted snapshot".
    #[napi(factory)]
    pub fn load(path: String) -> Result<Tree> {
        core::Snapshot::load(Path::new(&path))
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
        if ids.len() % 32 != 0 {
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
            .chunks_exact(32)
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
}

/// What an agent placed: recorded with the source's metadata and the stat it saw right after placing, so a
/// later `drift` can tell whether something else changed the file since.
#[napi(object)]
pub struct PlacedEntry {
    #[napi(ts_type = "string")]
    pub path: BytePath,
    #[napi(ts_type = "'file' | 'dir' | 'symlink'")]
    pub kind: String,
    pub mode: u32,
    pub size: f64,
    pub mtime_sec: f64,
    pub mtime_nsec: u32,
    /// lstat after placing: mtime in nanoseconds and inode, as decimal strings (they exceed 2^53).
    pub observed_mtime_ns: String,
    pub ino: String,
    #[napi(ts_type = "string | undefined")]
    pub target: Option<BytePath>,
    pub chunks: Option<Buffer>,
}

fn placed_to_core(p: PlacedEntry) -> Result<(core::Entry, Option<Vec<core::ChunkRef>>)> {
    let kind = match p.kind.as_str() {
        "file" => core::Kind::File,
        "dir" => core::Kind::Dir,
        "symlink" => core::Kind::Symlink,
        k => return Err(Error::new(Status::InvalidArg, format!("unknown kind {k}"))),
    };
    let bad = |what: &str| Error::new(Status::InvalidArg, format!("bad {what}"));
    let meta = core::Meta {
        size: p.size as u64,
        mtime_ns: p.mtime_sec as i64 * 1_000_000_000 + p.mtime_nsec as i64,
        ctime_ns: p.observed_mtime_ns.parse().map_err(|_| bad("observedMtimeNs"))?,
        ino: p.ino.parse().map_err(|_| bad("ino"))?,
        mode: (p.mode & 0o7777) as u16,
        kind,
    };
    if p.path.0.is_empty() || p.path.0.contains(&0) {
        return Err(bad("path"));
    }
    let chunks = match p.chunks {
        Some(c) => Some(unpack_chunks(&c)?),
        None => None,
    };
    let entry = core::Entry::new(&p.path.0, meta, p.target.as_ref().map(|t| t.0.as_slice()));
    Ok((entry, chunks))
}

/// Bytes of one entry in `updatePacked`'s records.
const PLACED_RECORD: usize = 48;

/// The entries of `updatePacked`, checked as `placed_to_core` checks one object.
fn unpack_placed(paths: &[u8], records: &[u8], chunks: &[u8], targets: &[u8]) -> Result<Vec<(core::Entry, Option<Vec<core::ChunkRef>>)>> {
    let bad = |what: &str| Error::new(Status::InvalidArg, format!("updatePacked: bad {what}"));
    if records.len() % PLACED_RECORD != 0 {
        return Err(bad("records"));
    }
    let n = records.len() / PLACED_RECORD;
    let paths: Vec<&[u8]> = if n == 0 { Vec::new() } else { paths.split(|&b| b == 0).collect() };
    if paths.len() != n {
        return Err(bad("paths"));
    }
    let mut targets = targets.split(|&b| b == 0);
    let mut at = 0usize;
    let mut out = Vec::with_capacity(n);
    for (rec, path) in records.chunks_exact(PLACED_RECORD).zip(paths) {
        let u32_at = |i: usize| u32::from_le_bytes([rec[i], rec[i + 1], rec[i + 2], rec[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&rec[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let kind = match rec[0] {
            0 => core::Kind::File,
            1 => core::Kind::Dir,
            2 => core::Kind::Symlink,
            _ => return Err(bad("kind")),
        };
        if path.is_empty() {
            return Err(bad("path"));
        }
        let meta = core::Meta {
            size: u64_at(8),
            // Saturating: a hostile record must not overflow (a panic must never cross into JavaScript).
            mtime_ns: (u64_at(16) as i64).saturating_mul(1_000_000_000).saturating_add(u32_at(24) as i64),
            ctime_ns: u64_at(32) as i64,
            ino: u64_at(40),
            mode: (u32_at(4) & 0o7777) as u16,
            kind,
        };
        let target = if kind == core::Kind::Symlink { Some(targets.next().ok_or_else(|| bad("targets"))?) } else { None };
        let recipe = if kind == core::Kind::File {
            let len = u32_at(28) as usize * 36;
            let packed = chunks.get(at..at + len).ok_or_else(|| bad("chunks"))?;
            at += len;
            Some(unpack_chunks(packed)?)
        } else {
            None
        };
        out.push((core::Entry::new(path, meta, target), recipe));
    }
    if at != chunks.len() {
        return Err(bad("chunks"));
    }
    Ok(out)
}

pub struct DriftTask {
    tree: Tree,
    root: PathBuf,
    /// Directories (their direct entries) and subtrees to check; None: everything.
    scope: Option<(Vec<Vec<u8>>, Vec<Vec<u8>>)>,
}

impl Task for DriftTask {
    type Output = Vec<Vec<u8>>;
    type JsValue = Vec<BytePath>;

    fn compute(&mut self) -> Result<Self::Output> {
        let s = self.tree.inner.read().unwrap();
        let found = match &self.scope {
            None => s.drift(&self.root),
            Some((dirs, subtrees)) => s.drift_in(&self.root, &core::drift::DriftScope { dirs, subtrees }),
        };
        Ok(found.into_iter().map(|i| s.entries().path(i).to_vec()).collect())
    }

    fn resolve(&mut self, _env: Env, out: Self::Output) -> Result<Self::JsValue> {
        Ok(out.into_iter().map(BytePath).collect())
    }
}

#[napi]
impl Tree {
    /// Inserts or replaces what an agent placed and forgets removed paths, keeping the tree sorted.
    #[napi]
    pub fn update(&self, placed: Vec<PlacedEntry>, #[napi(ts_arg_type = "string[]")] removed: Vec<BytePath>) -> Result<()> {
        let ups = placed.into_iter().map(placed_to_core).collect::<Result<Vec<_>>>()?;
        let mut s = self.inner.write().unwrap();
        *self.chunk_index.write().unwrap() = None;
        s.update(ups, removed.into_iter().map(|p| p.0).collect());
        Ok(())
    }

    /// `update` for many entries at once, packed: a conversion per entry field costs more than the update itself.
    /// `paths` and the symlinks' `targets` are joined with NUL bytes; `records` holds 48 bytes an entry (little
    /// endian): kind u8 (0 file, 1 dir, 2 symlink), 3 unused, mode u32, size u64, mtime seconds i64, mtime
    /// nanoseconds u32, chunk count u32, observed mtime in nanoseconds i64, inode u64; each file's packed chunks
    /// follow the previous file's in `chunks`.
    #[napi]
    pub fn update_packed(
        &self,
        #[napi(ts_arg_type = "string")] paths: BytePath,
        records: Buffer,
        chunks: Buffer,
        #[napi(ts_arg_type = "string")] targets: BytePath,
        #[napi(ts_arg_type = "string[]")] removed: Vec<BytePath>,
    ) -> Result<()> {
        let ups = unpack_placed(&paths.0, &records, &chunks, &targets.0)?;
        let mut s = self.inner.write().unwrap();
        *self.chunk_index.write().unwrap() = None;
        s.update(ups, removed.into_iter().map(|p| p.0).collect());
        Ok(())
    }

    /// Paths of placed files and symlinks under `root` that changed since they were placed (or are gone).
    #[napi(ts_return_type = "Promise<string[]>")]
    pub fn drift(&self, root: String) -> AsyncTask<DriftTask> {
        AsyncTask::new(DriftTask { tree: self.clone(), root: PathBuf::from(root), scope: None })
    }

    /// `drift` for only the entries directly in `dirs` and anywhere below `subtrees` (relative paths, "" for the
    /// root): what a watch reported as changed since the last check. The rest is taken as unchanged.
    #[napi(ts_return_type = "Promise<string[]>")]
    pub fn drift_in(
        &self,
        root: String,
        #[napi(ts_arg_type = "string[]")] dirs: Vec<BytePath>,
        #[napi(ts_arg_type = "string[]")] subtrees: Vec<BytePath>,
    ) -> AsyncTask<DriftTask> {
        let scope = (dirs.into_iter().map(|d| d.0).collect(), subtrees.into_iter().map(|d| d.0).collect());
        AsyncTask::new(DriftTask { tree: self.clone(), root: PathBuf::from(root), scope: Some(scope) })
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

pub struct ScanTask {
    root: PathBuf,
    previous: Option<Tree>,
    params: core::ChunkParams,
    /// For a partial scan: the directories to list, and those to walk whole.
    rescan: Option<(Vec<Vec<u8>>, Vec<Vec<u8>>)>,
}

pub struct ScanDone {
    snapshot: core::Snapshot,
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
        let prev: &core::Snapshot = match &self.previous {
            Some(t) => {
                prev_guard = t.inner.read().unwrap();
                &prev_guard
            }
            None => {
                empty = core::Snapshot::empty(self.params);
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
        let (snapshot, changes) = prev.diff(out, self.params);
        Ok(ScanDone {
            snapshot,
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
            entries: done.snapshot.len() as u32,
            files: 0,
            dirs: 0,
            symlinks: 0,
            bytes: 0.0,
            ignored: done.ignored as u32,
            unchanged: 0,
            duration_ms: done.duration_ms,
            ignore_mode: done.snapshot.ignore_mode.map(|m| m.as_str()).unwrap_or("gitignore").to_string(),
            dirs_listed: done.dirs_listed as u32,
            partial: done.partial,
        };
        for e in done.snapshot.entries() {
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
                    Some(i) => entry_js(done.snapshot.entry(i)),
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
        Ok(ScanResult { tree: Tree::wrap(done.snapshot), changes, warnings, stats })
    }
}

/// Walks `root` with its ignore rules and compares it with `previous` (the tree of the last sync). Only what
/// changed crosses into JavaScript; the returned tree carries recipes over for unchanged files.
#[napi(ts_return_type = "Promise<ScanResult>")]
pub fn scan(root: String, previous: Option<&Tree>, params: Option<ChunkParams>) -> Result<AsyncTask<ScanTask>> {
    Ok(AsyncTask::new(ScanTask { root: PathBuf::from(root), previous: previous.cloned(), params: params_of(params)?, rescan: None }))
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
        rescan: Some((dirs.into_iter().map(|d| d.0).collect(), subtrees.into_iter().map(|d| d.0).collect())),
    }))
}

#[napi(object)]
pub struct WatchAnswer {
    /// `ok`: answered; `starting`: a walk is under way (the first one, or one after lost events): no token yet;
    /// `dead`: this watcher can never answer again (its directory went away or moved): start another.
    #[napi(ts_type = "'ok' | 'starting' | 'dead'")]
    pub state: String,
    /// The token to store with the tree of a scan that starts after this answer.
    pub token: Option<String>,
    /// Scan everything: the watcher cannot vouch for the token given.
    pub full: bool,
    pub reason: Option<String>,
    #[napi(ts_type = "string[]")]
    pub dirs: Vec<BytePath>,
    #[napi(ts_type = "string[]")]
    pub subtrees: Vec<BytePath>,
}

/// Watches a directory tree (Linux inotify) so that a later scan lists only what changed (`scanPartial`).
/// Throws when watching is not supported here (platform, filesystem).
#[napi]
pub struct Watcher {
    inner: Option<core::watch::Watcher>,
}

#[napi]
impl Watcher {
    #[napi(constructor)]
    pub fn new(root: String) -> Result<Watcher> {
        core::watch::Watcher::start(Path::new(&root), core::watch::WatchOptions::default())
            .map(|w| Watcher { inner: Some(w) })
            .map_err(|e| Error::new(Status::GenericFailure, format!("{root}: {e}")))
    }

    /// What changed since `token` (null: nothing known), and the token for a scan that starts now.
    #[napi]
    pub fn changes_since(&self, token: Option<String>) -> WatchAnswer {
        let since = token.as_deref().and_then(core::watch::Token::parse);
        let Some(w) = &self.inner else {
            return WatchAnswer { state: "dead".into(), token: None, full: true, reason: Some("closed".into()), dirs: vec![], subtrees: vec![] };
        };
        match w.changes_since(since) {
            Ok(c) => WatchAnswer {
                state: "ok".into(),
                token: Some(c.token.encode()),
                full: c.full,
                reason: c.reason,
                dirs: c.dirs.into_iter().map(BytePath).collect(),
                subtrees: c.subtrees.into_iter().map(BytePath).collect(),
            },
            Err(e @ (core::watch::WatchError::NotReady | core::watch::WatchError::Busy)) => {
                WatchAnswer { state: "starting".into(), token: None, full: true, reason: Some(e.to_string()), dirs: vec![], subtrees: vec![] }
            }
            Err(e) => WatchAnswer { state: "dead".into(), token: None, full: true, reason: Some(e.to_string()), dirs: vec![], subtrees: vec![] },
        }
    }

    /// Stops watching (also done when the object is collected).
    #[napi]
    pub fn close(&mut self) {
        self.inner = None;
    }
}

pub struct ChunkTask {
    root: PathBuf,
    paths: Vec<Vec<u8>>,
    params: core::ChunkParams,
    hints: Option<Vec<Option<Vec<core::ChunkRef>>>>,
}

#[napi(object)]
pub struct ChunkOutcome {
    pub recipe: Option<Recipe>,
    pub error: Option<String>,
}

impl Task for ChunkTask {
    type Output = Vec<std::io::Result<core::Recipe>>;
    type JsValue = Vec<ChunkOutcome>;

    fn compute(&mut self) -> Result<Self::Output> {
        let abs: Vec<PathBuf> = self.paths.iter().map(|p| join(&self.root, p)).collect();
        Ok(match &self.hints {
            Some(hints) => core::chunk_files_hinted(&abs, hints, self.params),
            None => core::chunk_files(&abs, self.params),
        })
    }

    fn resolve(&mut self, _env: Env, out: Self::Output) -> Result<Self::JsValue> {
        Ok(out
            .into_iter()
            .map(|r| match r {
                Ok(r) => ChunkOutcome { recipe: Some(recipe_js(&r)), error: None },
                Err(e) => ChunkOutcome { recipe: None, error: Some(e.to_string()) },
            })
            .collect())
    }
}

/// Chunks files under `root` in parallel. One outcome per path, in order: a recipe or the read error.
///
/// `hints`, when given, has one entry per path: the packed recipe the caller had for that file before (as in
/// `Recipe.chunks`), or null. The outcomes are the same as without hints; where a large file still holds the
/// chunks of its hint they are hashed instead of cut again. A hint must come from the same chunk parameters
/// (the tree's `params`): with others, the cuts may differ from a run without hints.
#[napi(ts_return_type = "Promise<ChunkOutcome[]>")]
pub fn chunk_files(
    root: String,
    #[napi(ts_arg_type = "string[]")] paths: Vec<BytePath>,
    params: Option<ChunkParams>,
    #[napi(ts_arg_type = "Array<Buffer | null | undefined> | null")] hints: Option<Vec<Option<Buffer>>>,
) -> Result<AsyncTask<ChunkTask>> {
    let hints = match hints {
        Some(h) if h.len() != paths.len() => {
            return Err(Error::new(
                Status::InvalidArg,
                format!("hints must have one entry per path ({} paths, {} hints)", paths.len(), h.len()),
            ))
        }
        Some(h) => Some(
            h.iter()
                .enumerate()
                .map(|(i, b)| match b {
                    Some(b) => unpack_chunks(b).map(Some).map_err(|e| Error::new(Status::InvalidArg, format!("hint {i}: {}", e.reason))),
                    None => Ok(None),
                })
                .collect::<Result<Vec<_>>>()?,
        ),
        None => None,
    };
    Ok(AsyncTask::new(ChunkTask {
        root: PathBuf::from(root),
        paths: paths.into_iter().map(|p| p.0).collect(),
        params: params_of(params)?,
        hints,
    }))
}

#[napi]
pub fn chunk_buffer(data: Buffer, params: Option<ChunkParams>) -> Result<Recipe> {
    Ok(recipe_js(&core::chunk_bytes(&data, params_of(params)?)))
}

/// Chunk lengths for a buffer, for golden vectors and the fallback's tests.
#[napi]
pub fn cut_points(data: Buffer, params: Option<ChunkParams>) -> Result<Vec<u32>> {
    Ok(core::chunk::cut_points(&data, params_of(params)?).into_iter().map(|l| l as u32).collect())
}

#[napi]
pub fn blake3(data: Buffer) -> Buffer {
    core::chunk::chunk_id(&data).to_vec().into()
}

pub struct VerifyTask {
    data: Buffer,
    refs: Buffer,
}

impl Task for VerifyTask {
    type Output = i64;
    type JsValue = i64;

    fn compute(&mut self) -> Result<i64> {
        Ok(core::chunk::verify_chunks(&self.data, &self.refs).map(|i| i as i64).unwrap_or(-1))
    }

    fn resolve(&mut self, _env: Env, output: i64) -> Result<i64> {
        Ok(output)
    }
}

/// Verifies consecutive chunks of `data` against packed refs (id + length) off the JavaScript thread, so a
/// receiver keeps reading while it hashes. Resolves with the index of the first bad chunk, or -1.
#[napi(ts_return_type = "Promise<number>")]
pub fn verify_chunks(data: Buffer, refs: Buffer) -> AsyncTask<VerifyTask> {
    AsyncTask::new(VerifyTask { data, refs })
}

/// The whole-file digest of a packed recipe.
#[napi]
pub fn recipe_digest(chunks: Buffer) -> Result<Buffer> {
    Ok(core::chunk::recipe_digest(&unpack_chunks(&chunks)?).to_vec().into())
}

#[napi]
pub struct ZstdEncoder {
    inner: Option<core::compress::Compressor>,
}

#[napi]
impl ZstdEncoder {
    #[napi(constructor)]
    pub fn new(level: i32) -> Result<Self> {
        Ok(ZstdEncoder { inner: Some(core::compress::Compressor::new(level).map_err(io_err)?) })
    }

    #[napi]
    pub fn write(&mut self, input: Buffer) -> Result<Buffer> {
        Ok(self.enc()?.write(&input).map_err(io_err)?.into())
    }

    #[napi]
    pub fn flush(&mut self) -> Result<Buffer> {
        Ok(self.enc()?.flush().map_err(io_err)?.into())
    }

    /// Compresses what comes next at `level` (ends the current zstd frame when it changes the level).
    #[napi]
    pub fn set_level(&mut self, level: i32) -> Result<()> {
        self.enc()?.set_level(level).map_err(io_err)
    }

    #[napi]
    pub fn finish(&mut self) -> Result<Buffer> {
        let enc = self.inner.take().ok_or_else(|| Error::new(Status::GenericFailure, "encoder finished".to_string()))?;
        Ok(enc.finish().map_err(io_err)?.into())
    }
}

impl ZstdEncoder {
    fn enc(&mut self) -> Result<&mut core::compress::Compressor> {
        self.inner.as_mut().ok_or_else(|| Error::new(Status::GenericFailure, "encoder finished".to_string()))
    }
}

#[napi]
pub struct ZstdDecoder {
    inner: core::compress::Decompressor,
}

#[napi]
impl ZstdDecoder {
    /// `max_output` bounds what one `write` may produce, so a hostile stream cannot exhaust memory.
    #[napi(constructor)]
    pub fn new(max_output: u32) -> Result<Self> {
        Ok(ZstdDecoder { inner: core::compress::Decompressor::new(max_output as usize).map_err(io_err)? })
    }

    #[napi]
    pub fn write(&mut self, input: Buffer) -> Result<Buffer> {
        Ok(self.inner.write(&input).map_err(io_err)?.into())
    }
}

fn io_err(e: std::io::Error) -> Error {
    Error::new(Status::GenericFailure, e.to_string())
}

/// Moves a finished temp file over `dest` (see `core::replace`): a regular file there is exchanged, not
/// overwritten, and a large one is freed on a thread of its own, so the caller does not wait for either.
#[napi]
pub fn replace_file(temp: Buffer, dest: Buffer) -> Result<()> {
    let old = core::replace::replace_file(Path::new(std::ffi::OsStr::from_bytes(&temp)), Path::new(std::ffi::OsStr::from_bytes(&dest)))
        .map_err(io_err)?;
    if let Some(file) = old {
        if file.metadata().map(|m| m.len() >= 1 << 20).unwrap_or(false) {
            std::thread::spawn(move || drop(file));
        }
    }
    Ok(())
}

/// Bytes of one file's record in `writeFiles`' layout buffer.
const WRITE_RECORD: usize = 56;

/// One file of a batch that could not be written or renamed: nothing of it is left behind.
#[napi(object)]
pub struct FileOpFailure {
    pub index: u32,
    /// `parent` when a directory on the way is missing, a symlink or not a directory; also `path`, `digest`,
    /// `chunk`, `io`.
    #[napi(ts_type = "'parent' | 'path' | 'digest' | 'chunk' | 'io'")]
    pub kind: String,
    /// The OS error number, when the OS refused (EEXIST, ELOOP, EISDIR...).
    pub errno: Option<i32>,
    pub message: String,
}

fn failure(index: usize, e: &core::write::WriteError) -> FileOpFailure {
    FileOpFailure { index: index as u32, kind: e.kind().to_string(), errno: e.errno(), message: e.to_string() }
}

#[napi(object)]
pub struct WriteFilesResult {
    /// 24 bytes a file, in order: inode (u64 LE), size (u64 LE), mtime in nanoseconds (i64 LE), as fstat saw
    /// the finished file; zeros for a file that failed.
    pub stats: Buffer,
    pub failures: Vec<FileOpFailure>,
}

pub struct WriteFilesTask {
    root: PathBuf,
    paths: Vec<Vec<u8>>,
    layout: Buffer,
    data: Buffer,
    refs: Buffer,
    make_dirs: bool,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl Task for WriteFilesTask {
    type Output = Vec<std::result::Result<core::write::Written, core::write::WriteError>>;
    type JsValue = WriteFilesResult;

    fn compute(&mut self) -> Result<Self::Output> {
        let (layout, data, refs) = (&self.layout[..], &self.data[..], &self.refs[..]);
        let mut items = Vec::with_capacity(self.paths.len());
        let (mut d, mut r) = (0usize, 0usize);
        for (i, path) in self.paths.iter().enumerate() {
            let rec = layout.get(i * WRITE_RECORD..(i + 1) * WRITE_RECORD).ok_or_else(bad_layout)?;
            let size = le_u32(rec, 0) as usize;
            let nrefs = le_u32(rec, 4) as usize * 36;
            let digest: &[u8; 32] = rec[24..56].try_into().map_err(|_| bad_layout())?;
            items.push(core::write::WriteItem {
                path,
                data: data.get(d..d + size).ok_or_else(bad_layout)?,
                refs: refs.get(r..r + nrefs).ok_or_else(bad_layout)?,
                digest: Some(digest),
                mode: le_u32(rec, 8),
                mtime_nsec: le_u32(rec, 12),
                mtime_sec: i64::from_le_bytes(rec[16..24].try_into().map_err(|_| bad_layout())?),
            });
            d += size;
            r += nrefs;
        }
        if d != data.len() || r != refs.len() {
            return Err(bad_layout());
        }
        Ok(core::write::write_files(&self.root, &items, self.make_dirs))
    }

    fn resolve(&mut self, _env: Env, out: Self::Output) -> Result<WriteFilesResult> {
        let mut stats = vec![0u8; out.len() * 24];
        let mut failures = Vec::new();
        for (i, r) in out.iter().enumerate() {
            match r {
                Ok(w) => {
                    stats[i * 24..i * 24 + 8].copy_from_slice(&w.ino.to_le_bytes());
                    stats[i * 24 + 8..i * 24 + 16].copy_from_slice(&w.size.to_le_bytes());
                    stats[i * 24 + 16..i * 24 + 24].copy_from_slice(&w.mtime_ns.to_le_bytes());
                }
                Err(e) => failures.push(failure(i, e)),
            }
        }
        Ok(WriteFilesResult { stats: stats.into(), failures })
    }
}

/// Paths joined with NUL bytes (which no path holds), one by one; none for an empty string.
fn split_nul(joined: &[u8]) -> Vec<Vec<u8>> {
    if joined.is_empty() {
        return Vec::new();
    }
    joined.split(|&b| b == 0).map(|p| p.to_vec()).collect()
}

fn bad_layout() -> Error {
    Error::new(Status::InvalidArg, "writeFiles: layout does not match paths, data and refs".to_string())
}

/// Writes a batch of small files into new temp files under `root`, in parallel off the JavaScript thread. `paths`
/// holds the files' paths relative to `root`, joined with NUL bytes (one string crosses, not thousands). File
/// i's bytes follow file i-1's in `data`, and its packed chunk refs (36 bytes each) follow in `refs`; `layout`
/// holds 56 bytes a file (little endian): size u32, chunk count u32, mode u32, mtime nanoseconds u32, mtime
/// seconds i64, recipe digest (32 bytes). No directory on the way may be a symlink, and missing ones are created
/// when `makeDirs` is set. Each file's digest and chunks are checked before
/// it is created (`O_EXCL|O_NOFOLLOW`); a file that fails is removed and reported alone.
#[napi(ts_return_type = "Promise<WriteFilesResult>")]
pub fn write_files(
    root: String,
    #[napi(ts_arg_type = "string")] paths: BytePath,
    layout: Buffer,
    data: Buffer,
    refs: Buffer,
    make_dirs: bool,
) -> Result<AsyncTask<WriteFilesTask>> {
    let paths = split_nul(&paths.0);
    if layout.len() != paths.len() * WRITE_RECORD {
        return Err(bad_layout());
    }
    Ok(AsyncTask::new(WriteFilesTask { root: PathBuf::from(root), paths, layout, data, refs, make_dirs }))
}

pub struct RenameFilesTask {
    root: PathBuf,
    from: Vec<Vec<u8>>,
    to: Vec<Vec<u8>>,
}

impl Task for RenameFilesTask {
    type Output = Vec<FileOpFailure>;
    type JsValue = Vec<FileOpFailure>;

    fn compute(&mut self) -> Result<Self::Output> {
        let pairs: Vec<(&[u8], &[u8])> = self.from.iter().zip(&self.to).map(|(a, b)| (a.as_slice(), b.as_slice())).collect();
        Ok(core::write::rename_files(&self.root, &pairs)
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().err().map(|e| failure(i, e)))
            .collect())
    }

    fn resolve(&mut self, _env: Env, out: Self::Output) -> Result<Self::JsValue> {
        Ok(out)
    }
}

/// Renames path i of `from` to path i of `to` (both relative to `root`, joined with NUL bytes), in parallel off
/// the JavaScript thread; resolves with the pairs that failed. The targets must be distinct and none may be
/// needed as a directory by another pair. No directory on the way may be a symlink.
#[napi(ts_return_type = "Promise<FileOpFailure[]>")]
pub fn rename_files(
    root: String,
    #[napi(ts_arg_type = "string")] from: BytePath,
    #[napi(ts_arg_type = "string")] to: BytePath,
) -> Result<AsyncTask<RenameFilesTask>> {
    let (from, to) = (split_nul(&from.0), split_nul(&to.0));
    if from.len() != to.len() {
        return Err(Error::new(Status::InvalidArg, "renameFiles: from and to differ in length".to_string()));
    }
    Ok(AsyncTask::new(RenameFilesTask { root: PathBuf::from(root), from, to }))
}

pub struct ReadRangesTask {
    root: PathBuf,
    paths: Vec<Vec<u8>>,
    ranges: Buffer,
}

impl Task for ReadRangesTask {
    type Output = Vec<u8>;
    type JsValue = Buffer;

    fn compute(&mut self) -> Result<Self::Output> {
        let ranges: Vec<core::read::ReadRange> = self
            .paths
            .iter()
            .zip(self.ranges.chunks_exact(READ_RANGE))
            .map(|(p, r)| core::read::ReadRange {
                path: p,
                offset: u64::from_le_bytes(r[0..8].try_into().unwrap()),
                len: u32::from_le_bytes(r[8..12].try_into().unwrap()),
            })
            .collect();
        core::read::read_ranges(&self.root, &ranges).map_err(|f| {
            let path = String::from_utf8_lossy(&self.paths[f.index]).into_owned();
            Error::new(Status::GenericFailure, format!("{path}: {}", f.error))
        })
    }

    fn resolve(&mut self, _env: Env, out: Self::Output) -> Result<Self::JsValue> {
        Ok(out.into())
    }
}

/// Bytes of one range in `readRanges`: offset u64 LE, length u32 LE.
const READ_RANGE: usize = 12;

/// Reads byte ranges of many files under `root` in parallel, off the JavaScript thread, and resolves with their
/// bytes one after another. `paths` are relative to `root`, joined with NUL bytes; `ranges` holds 12 bytes per
/// path (offset u64 LE, length u32 LE). The last component is never followed if it is a symlink; a file shorter
/// than its range rejects ("path: changed while it was read").
#[napi(ts_return_type = "Promise<Buffer>")]
pub fn read_ranges(root: String, #[napi(ts_arg_type = "string")] paths: BytePath, ranges: Buffer) -> Result<AsyncTask<ReadRangesTask>> {
    let paths = split_nul(&paths.0);
    if ranges.len() != paths.len() * READ_RANGE {
        return Err(Error::new(Status::InvalidArg, "readRanges: ranges do not match paths".to_string()));
    }
    Ok(AsyncTask::new(ReadRangesTask { root: PathBuf::from(root), paths, ranges }))
}
