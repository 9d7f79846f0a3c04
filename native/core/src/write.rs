//! Writing many small files at once, for the receiving side of a sync.
//!
//! Creating a small file costs a handful of syscalls (create, write, chmod, utimes, stat, close) and almost no
//! data, so one thread doing them one after another spends its time waiting on the kernel. These functions take
//! a batch and spread it over a small thread pool of their own (apart from rayon's global pool, which a local
//! agent keeps at one thread so that it does not fight the client's scan).
//!
//! Every path is relative to a root the caller trusts and is resolved one component at a time with
//! `openat(O_NOFOLLOW|O_DIRECTORY)`, so nothing is ever created or renamed through a symlink, even one that
//! appears after the caller checked the parents. A batch opens each directory it touches once.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;

use crate::chunk::{chunk_id, recipe_digest, unpack_refs};

/// One file of a batch, written whole into a new temp file.
pub struct WriteItem<'a> {
    /// Relative to the root, `/`-separated: directories (made when missing, if asked), then the name of the file to
    /// create.
    pub path: &'a [u8],
    pub data: &'a [u8],
    /// The file's chunks, packed (32-byte id, u32 LE length): each is checked against its bytes before any
    /// byte is written.
    pub refs: &'a [u8],
    /// The whole-file digest the recipe must have (`recipe_digest`), when the caller has not checked it.
    pub digest: Option<&'a [u8; 32]>,
    pub mode: u32,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
}

/// What `fstat` said of the finished file. The inode, size and mtime survive a rename into place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
}

#[derive(Debug)]
pub enum WriteError {
    /// A path that is absolute, empty, or has an empty, `.` or `..` component, or a NUL byte.
    BadPath,
    BadDigest,
    /// The chunk at this index does not match its id (or the lengths do not add up to the data).
    BadChunk(usize),
    /// A directory on the way could not be opened as a plain directory (a symlink, a file, missing...).
    Parent(io::Error),
    Io(&'static str, io::Error),
}

impl WriteError {
    /// What kind of failure, for callers that react to some: "path", "digest", "chunk", "parent" or "io".
    pub fn kind(&self) -> &'static str {
        match self {
            WriteError::BadPath => "path",
            WriteError::BadDigest => "digest",
            WriteError::BadChunk(_) => "chunk",
            WriteError::Parent(_) => "parent",
            WriteError::Io(..) => "io",
        }
    }

    /// The OS error number, when the failure came from the OS.
    pub fn errno(&self) -> Option<i32> {
        match self {
            WriteError::Parent(e) | WriteError::Io(_, e) => e.raw_os_error(),
            _ => None,
        }
    }
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::BadPath => write!(f, "refused: not a plain relative path"),
            WriteError::BadDigest => write!(f, "recipe does not match its digest"),
            WriteError::BadChunk(_) => write!(f, "received chunk does not match its id"),
            WriteError::Parent(e) => write!(f, "cannot open its directory without following a symlink: {e}"),
            WriteError::Io(op, e) => write!(f, "{op}: {e}"),
        }
    }
}

impl std::error::Error for WriteError {}

/// Threads for batches of file operations: one per core, at least two (one writes while the other waits on the
/// kernel) and at most eight (the directories' locks serialize more). On two cores, 1, 2 and 4 threads measured
/// the same: the JavaScript thread that feeds them is the limit. `SKYSYNC_WRITE_THREADS` overrides the choice.
/// None when no thread could be started: the batch then runs on the caller's thread.
fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::env::var("SKYSYNC_WRITE_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8));
        rayon::ThreadPoolBuilder::new().num_threads(threads).thread_name(|i| format!("skysync-io-{i}")).build().ok()
    })
    .as_ref()
}

pub(crate) fn in_pool<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    match pool() {
        Some(p) => p.install(f),
        None => f(),
    }
}

/// Splits a relative path into its directory and its last component, refusing anything but plain names.
fn split(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.is_empty() || path[0] == b'/' || path.contains(&0) {
        return None;
    }
    if path.split(|&b| b == b'/').any(|c| c.is_empty() || c == b"." || c == b"..") {
        return None;
    }
    Some(match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&b""[..], path),
    })
}

fn cstr(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn open_dir_at(dir: RawFd, name: &[u8]) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `c` is a NUL-terminated string that outlives the call; the returned fd is owned by nobody else.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd from openat.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a directory, creating it (mode 0755 before the umask) when it is missing and `make` is set.
fn open_or_make_dir_at(dir: RawFd, name: &[u8], make: bool) -> io::Result<OwnedFd> {
    match open_dir_at(dir, name) {
        Err(e) if make && e.raw_os_error() == Some(libc::ENOENT) => {
            let c = cstr(name)?;
            // SAFETY: `c` is NUL-terminated and outlives the call.
            if unsafe { libc::mkdirat(dir, c.as_ptr(), 0o755) } < 0 {
                let e = io::Error::last_os_error();
                // Someone else made it meanwhile: open what is there now, with the same checks.
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e);
                }
            }
            open_dir_at(dir, name)
        }
        r => r,
    }
}

fn open_root(root: &Path) -> io::Result<OwnedFd> {
    let c = cstr(root.as_os_str().as_bytes())?;
    // SAFETY: as in `open_dir_at`. The root itself may be reached through symlinks: the caller chose it.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd from open.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

type DirResult = Result<Arc<OwnedFd>, Arc<io::Error>>;

/// Opens every directory in `dirs` (relative, sorted, distinct) component by component without following a
/// symlink, creating missing ones when `make` is set. Directories that share a prefix share the walk: the handles
/// of the last directory's chain are kept.
fn open_dirs<'a>(root: &Arc<OwnedFd>, dirs: &[&'a [u8]], make: bool) -> HashMap<&'a [u8], DirResult> {
    let mut out = HashMap::with_capacity(dirs.len());
    // The last directory opened, and the handle of each of its prefixes (length in bytes, handle).
    let mut last: &[u8] = b"";
    let mut chain: Vec<(usize, Arc<OwnedFd>)> = Vec::new();
    for &dir in dirs {
        if dir.is_empty() {
            out.insert(dir, Ok(root.clone()));
            continue;
        }
        while let Some(&(len, _)) = chain.last() {
            if dir.len() > len && dir[len] == b'/' && dir[..len] == last[..len] {
                break;
            }
            chain.pop();
        }
        let mut result: DirResult = Ok(chain.last().map_or_else(|| root.clone(), |(_, fd)| fd.clone()));
        let mut pos = chain.last().map_or(0, |&(len, _)| len + 1);
        while pos <= dir.len() {
            let end = dir[pos..].iter().position(|&b| b == b'/').map_or(dir.len(), |i| pos + i);
            let Ok(parent) = &result else { break };
            match open_or_make_dir_at(parent.as_raw_fd(), &dir[pos..end], make) {
                Ok(fd) => {
                    let fd = Arc::new(fd);
                    chain.push((end, fd.clone()));
                    result = Ok(fd);
                }
                Err(e) => result = Err(Arc::new(e)),
            }
            pos = end + 1;
        }
        last = dir;
        out.insert(dir, result);
    }
    out
}

/// How many directories a batch holds open at once, to stay far below the file descriptor limit.
const DIRS_PER_WAVE: usize = 256;

/// Runs `op` for every item with the handles of its directories (or the errors opening them), in parallel,
/// keeping the order of the results.
fn with_dirs<'a, I: Sync, T: Send>(
    root: &Path,
    make_dirs: bool,
    items: &'a [I],
    dir_of: impl Fn(&'a I) -> Vec<&'a [u8]> + Sync,
    op: impl Fn(&'a I, &[DirResult]) -> T + Sync + Send,
) -> Vec<T> {
    let root = match open_root(root) {
        Ok(fd) => Arc::new(fd),
        Err(e) => {
            let e = Arc::new(e);
            return items.iter().map(|it| op(it, &vec![Err(e.clone()); dir_of(it).len()])).collect();
        }
    };
    let mut out = Vec::with_capacity(items.len());
    let mut start = 0;
    while start < items.len() {
        // A wave: as many items as fit in DIRS_PER_WAVE distinct directories (at least one item).
        let mut dirs: HashSet<&[u8]> = HashSet::new();
        let mut end = start;
        while end < items.len() {
            let more: Vec<&[u8]> = dir_of(&items[end]).into_iter().filter(|d| !dirs.contains(d)).collect();
            if end > start && dirs.len() + more.len() > DIRS_PER_WAVE {
                break;
            }
            dirs.extend(more);
            end += 1;
        }
        let mut dirs: Vec<&[u8]> = dirs.into_iter().collect();
        dirs.sort_unstable();
        let handles = open_dirs(&root, &dirs, make_dirs);
        let missing: DirResult = Err(Arc::new(io::Error::from(io::ErrorKind::NotFound)));
        let wave: Vec<T> = in_pool(|| {
            items[start..end]
                .par_iter()
                .with_max_len(4)
                .map(|it| {
                    let fds: Vec<DirResult> =
                        dir_of(it).iter().map(|d| handles.get(d).unwrap_or(&missing).clone()).collect();
                    op(it, &fds)
                })
                .collect()
        });
        out.extend(wave);
        start = end;
    }
    out
}

/// An error shared by the items of one directory, for one of them.
fn copy_err(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(n) => io::Error::from_raw_os_error(n),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

fn check(item: &WriteItem) -> Result<(), WriteError> {
    let refs = unpack_refs(item.refs).ok_or(WriteError::BadChunk(0))?;
    if let Some(want) = item.digest {
        if recipe_digest(&refs) != *want {
            return Err(WriteError::BadDigest);
        }
    }
    let mut off = 0usize;
    for (i, r) in refs.iter().enumerate() {
        let len = r.len as usize;
        let chunk = off.checked_add(len).and_then(|end| item.data.get(off..end)).ok_or(WriteError::BadChunk(i))?;
        if chunk_id(chunk) != r.id {
            return Err(WriteError::BadChunk(i));
        }
        off += len;
    }
    if off != item.data.len() {
        return Err(WriteError::BadChunk(refs.len()));
    }
    Ok(())
}

fn os<T>(op: &'static str, r: libc::c_int, ok: T) -> Result<T, WriteError> {
    if r < 0 {
        Err(WriteError::Io(op, io::Error::last_os_error()))
    } else {
        Ok(ok)
    }
}

fn write_one(item: &WriteItem, dir: &DirResult) -> Result<Written, WriteError> {
    let (_, name) = split(item.path).ok_or(WriteError::BadPath)?;
    check(item)?;
    let dir = match dir {
        Ok(fd) => fd,
        Err(e) => return Err(WriteError::Parent(copy_err(e))),
    };
    let cname = cstr(name).map_err(|_| WriteError::BadPath)?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `cname` is NUL-terminated and outlives the call; the fd is owned by `file` from here on.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), cname.as_ptr(), flags, 0o600 as libc::c_uint) };
    let fd = os("cannot create temp file", fd, fd)?;
    // SAFETY: a fresh fd from openat, owned by nobody else.
    let mut file = unsafe { File::from_raw_fd(fd) };
    let finish = |file: &mut File| -> Result<Written, WriteError> {
        file.write_all(item.data).map_err(|e| WriteError::Io("write", e))?;
        let fd = file.as_raw_fd();
        // SAFETY: plain syscalls on an fd this function owns; the pointers are to locals that outlive them.
        unsafe {
            os("chmod", libc::fchmod(fd, (item.mode & 0o7777) as libc::mode_t), ())?;
            let t = libc::timespec { tv_sec: item.mtime_sec as libc::time_t, tv_nsec: item.mtime_nsec as _ };
            os("set mtime", libc::futimens(fd, [t, t].as_ptr()), ())?;
            let mut st: libc::stat = std::mem::zeroed();
            os("stat", libc::fstat(fd, &mut st), ())?;
            Ok(Written {
                ino: st.st_ino as u64,
                size: st.st_size as u64,
                mtime_ns: (st.st_mtime as i64).saturating_mul(1_000_000_000).saturating_add(st.st_mtime_nsec as i64),
            })
        }
    };
    let r = finish(&mut file);
    drop(file);
    if r.is_err() {
        // SAFETY: as above; the name is the file this call created.
        unsafe { libc::unlinkat(dir.as_raw_fd(), cname.as_ptr(), 0) };
    }
    r
}

/// Writes each item into a new file (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600 until its own mode is set), after
/// checking its digest and every chunk against its id; then sets its mode and mtime (atime too) and stats it.
/// Missing directories on the way are created when `make_dirs` is set (mode 0755 before the umask). One result
/// per item, in order. A failed item leaves nothing behind and does not affect the others. No fsync.
pub fn write_files(root: &Path, items: &[WriteItem], make_dirs: bool) -> Vec<Result<Written, WriteError>> {
    with_dirs(
        root,
        make_dirs,
        items,
        |it| split(it.path).map(|(d, _)| vec![d]).unwrap_or_default(),
        |it, dirs| match dirs.first() {
            Some(d) => write_one(it, d),
            None => Err(WriteError::BadPath),
        },
    )
}

/// Renames each `(from, to)` within the root, in parallel: the targets must be distinct and neither may be a
/// directory the others need. One result per pair, in order.
pub fn rename_files(root: &Path, pairs: &[(&[u8], &[u8])]) -> Vec<Result<(), WriteError>> {
    with_dirs(
        root,
        false,
        pairs,
        |&(from, to)| match (split(from), split(to)) {
            (Some((a, _)), Some((b, _))) => vec![a, b],
            _ => Vec::new(),
        },
        |&(from, to), dirs| {
            let (Some((_, a)), Some((_, b)), [da, db]) = (split(from), split(to), dirs) else {
                return Err(WriteError::BadPath);
            };
            let (da, db) = match (da, db) {
                (Ok(da), Ok(db)) => (da, db),
                (Err(e), _) | (_, Err(e)) => return Err(WriteError::Parent(copy_err(e))),
            };
            let (ca, cb) = (cstr(a).map_err(|_| WriteError::BadPath)?, cstr(b).map_err(|_| WriteError::BadPath)?);
            // SAFETY: NUL-terminated names that outlive the call, directory fds held open by the batch.
            let r = unsafe { libc::renameat(da.as_raw_fd(), ca.as_ptr(), db.as_raw_fd(), cb.as_ptr()) };
            os("rename", r, ())
        },
    )
}
