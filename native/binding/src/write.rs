//! The receiving side's batches: replace a file, write small files, rename them into place.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use napi::bindgen_prelude::*;
use napi_derive::napi;
use skysync_core as core;

use crate::io_err;
use crate::layouts::{chunk_ref, le_u32, le_u64, write_record, write_stat};
use crate::paths::{split_nul, BytePath};

/// Moves a finished temp file over `dest` (see `core::replace`): a regular file there is exchanged, not
/// overwritten, and a large one is freed on a thread of its own, so the caller does not wait for either.
#[napi]
pub fn replace_file(temp: Buffer, dest: Buffer) -> Result<()> {
    let old = core::replace::replace_file(
        Path::new(std::ffi::OsStr::from_bytes(&temp)),
        Path::new(std::ffi::OsStr::from_bytes(&dest)),
    )
    .map_err(io_err)?;
    if let Some(file) = old {
        if file.metadata().map(|m| m.len() >= 1 << 20).unwrap_or(false) {
            std::thread::spawn(move || drop(file));
        }
    }
    Ok(())
}

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

impl Task for WriteFilesTask {
    type Output = Vec<std::result::Result<core::write::Written, core::write::WriteError>>;
    type JsValue = WriteFilesResult;

    fn compute(&mut self) -> Result<Self::Output> {
        let (layout, data, refs) = (&self.layout[..], &self.data[..], &self.refs[..]);
        let mut items = Vec::with_capacity(self.paths.len());
        let (mut d, mut r) = (0usize, 0usize);
        for (i, path) in self.paths.iter().enumerate() {
            use write_record::*;
            let rec = layout.get(i * SIZE..(i + 1) * SIZE).ok_or_else(bad_layout)?;
            let size = le_u32(rec, FILE_SIZE) as usize;
            let nrefs = le_u32(rec, CHUNK_COUNT) as usize * chunk_ref::SIZE;
            let digest: &[u8; 32] = rec[DIGEST..DIGEST + 32].try_into().map_err(|_| bad_layout())?;
            items.push(core::write::WriteItem {
                path,
                data: data.get(d..d + size).ok_or_else(bad_layout)?,
                refs: refs.get(r..r + nrefs).ok_or_else(bad_layout)?,
                digest: Some(digest),
                mode: le_u32(rec, MODE),
                mtime_nsec: le_u32(rec, MTIME_NSEC),
                mtime_sec: le_u64(rec, MTIME_SEC) as i64,
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
        use write_stat::*;
        let mut stats = vec![0u8; out.len() * SIZE];
        let mut failures = Vec::new();
        for (i, r) in out.iter().enumerate() {
            match r {
                Ok(w) => {
                    let rec = &mut stats[i * SIZE..(i + 1) * SIZE];
                    rec[INO..INO + 8].copy_from_slice(&w.ino.to_le_bytes());
                    rec[FILE_SIZE..FILE_SIZE + 8].copy_from_slice(&w.size.to_le_bytes());
                    rec[MTIME_NS..MTIME_NS + 8].copy_from_slice(&w.mtime_ns.to_le_bytes());
                }
                Err(e) => failures.push(failure(i, e)),
            }
        }
        Ok(WriteFilesResult { stats: stats.into(), failures })
    }
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
    if layout.len() != paths.len() * write_record::SIZE {
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
        let pairs: Vec<(&[u8], &[u8])> =
            self.from.iter().zip(&self.to).map(|(a, b)| (a.as_slice(), b.as_slice())).collect();
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
