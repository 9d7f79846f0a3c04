//! The drift check behind [`crate::Tree::drift`]: one lstat per placed file or symlink, issued per directory.
//!
//! Each directory is opened once, relative to its parent's descriptor, and its entries are stat'ed by name
//! (`fstatat`): the kernel no longer resolves every path from the root again, and the directories are walked in
//! parallel. No component below the root is followed if it is a symlink (`O_NOFOLLOW` on every open): a
//! directory that was replaced by a symlink is never looked through, and everything recorded under it counts
//! as drifted, like everything under a directory that is gone or cannot be opened.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rayon::prelude::*;

use crate::entry::{EntryList, Kind, Meta};

/// Threads of the pool the check runs in when the caller did not size rayon itself (`RAYON_NUM_THREADS`). An
/// lstat waits on the disk far longer than it uses a core: on a cold cache, or a network disk as cloud VMs have,
/// more of them in flight than there are cores finish sooner.
const IO_THREADS: usize = 8;

fn io_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        if std::env::var_os("RAYON_NUM_THREADS").is_some() {
            return None;
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(IO_THREADS)
            .thread_name(|i| format!("skysync-stat-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

/// Directory levels handled by recursion (one open descriptor and a few stack frames each). Deeper ones, which
/// only a hand-made tree has, are resolved entry by entry instead, so no tree can exhaust a stack.
const MAX_DEPTH: usize = 64;

struct Dir<'a> {
    name: &'a [u8],
    parent: usize,
    depth: usize,
    /// Entries to check here: index in the list, and name in this directory.
    files: Vec<(usize, &'a [u8])>,
    subdirs: Vec<usize>,
}

/// Indexes of the files and symlinks in `entries` whose lstat under `root` no longer matches the record.
pub(crate) fn drifted(entries: &EntryList, root: &Path) -> Vec<usize> {
    drifted_where(entries, root, |_| true)
}

/// Which recorded entries a partial drift check looks at: those directly in one of `dirs`, and those anywhere
/// below one of `subtrees` (relative paths, "" for the root). Used when a watch says only these directories
/// saw changes since the last check.
pub struct DriftScope<'a> {
    pub dirs: &'a [Vec<u8>],
    pub subtrees: &'a [Vec<u8>],
}

impl DriftScope<'_> {
    fn covers(&self, path: &[u8]) -> bool {
        let (parent, _) = split(path);
        self.dirs.iter().any(|d| d.as_slice() == parent)
            || self
                .subtrees
                .iter()
                .any(|t| t.is_empty() || (path.len() > t.len() && path.starts_with(t) && path[t.len()] == b'/'))
    }
}

/// [`drifted`], restricted to the entries `scope` covers; the others are taken as unchanged.
pub(crate) fn drifted_in(entries: &EntryList, root: &Path, scope: &DriftScope) -> Vec<usize> {
    let dirs: std::collections::HashSet<&[u8]> = scope.dirs.iter().map(|d| d.as_slice()).collect();
    if scope.subtrees.is_empty() {
        // The common case (a few dirty directories): a set lookup per entry.
        return drifted_where(entries, root, |p| dirs.contains(split(p).0));
    }
    drifted_where(entries, root, |p| scope.covers(p))
}

fn drifted_where(entries: &EntryList, root: &Path, keep: impl Fn(&[u8]) -> bool) -> Vec<usize> {
    let (dirs, mut out) = directories(entries, keep);
    match open_root(root) {
        Ok(fd) => out.extend(match io_pool() {
            Some(pool) => pool.install(|| visit(entries, &dirs, 0, &fd)),
            None => visit(entries, &dirs, 0, &fd),
        }),
        Err(_) => out.extend(files_below(&dirs, 0).map(|(i, _)| i)),
    }
    out.sort_unstable();
    out
}

/// The directories that hold entries to check, as a tree; also the entries whose path has an empty, `.` or
/// `..` component (only a hand-made tree has them): they cannot name anything under the root, so they drifted.
fn directories(entries: &EntryList, keep: impl Fn(&[u8]) -> bool) -> (Vec<Dir<'_>>, Vec<usize>) {
    let mut dirs = vec![Dir { name: b"", parent: 0, depth: 0, files: Vec::new(), subdirs: Vec::new() }];
    let mut by_path: HashMap<&[u8], usize> = HashMap::new();
    let mut bad = Vec::new();
    // Entries come in path order, so most share the directory of the one before.
    let mut last: Option<(&[u8], Option<usize>)> = None;
    for i in 0..entries.len() {
        if entries.meta(i).kind == Kind::Dir || !keep(entries.path(i)) {
            continue;
        }
        let (parent, name) = split(entries.path(i));
        let dir = match last {
            Some((p, d)) if p == parent => d,
            _ => dir_of(&mut dirs, &mut by_path, parent),
        };
        last = Some((parent, dir));
        match dir {
            Some(d) if plain(name) => dirs[d].files.push((i, name)),
            _ => bad.push(i),
        }
    }
    (dirs, bad)
}

fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(s) => (&path[..s], &path[s + 1..]),
        None => (&path[..0], path),
    }
}

fn plain(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&0)
}

/// The node of directory `path` (relative, "" for the root), created with its missing ancestors.
fn dir_of<'a>(dirs: &mut Vec<Dir<'a>>, by_path: &mut HashMap<&'a [u8], usize>, path: &'a [u8]) -> Option<usize> {
    if path.is_empty() {
        return Some(0);
    }
    let mut missing = Vec::new();
    let mut p = path;
    let mut top = 0;
    while !p.is_empty() {
        if let Some(&d) = by_path.get(p) {
            top = d;
            break;
        }
        let (up, name) = split(p);
        if !plain(name) {
            return None;
        }
        missing.push((p, name));
        p = up;
    }
    for (p, name) in missing.into_iter().rev() {
        let d = dirs.len();
        dirs.push(Dir { name, parent: top, depth: dirs[top].depth + 1, files: Vec::new(), subdirs: Vec::new() });
        dirs[top].subdirs.push(d);
        by_path.insert(p, d);
        top = d;
    }
    Some(top)
}

/// Every entry to check in directory `d` and below, with the directory it is in.
fn files_below<'d, 'a>(dirs: &'d [Dir<'a>], d: usize) -> impl Iterator<Item = (usize, usize)> + 'd {
    let mut stack = vec![d];
    std::iter::from_fn(move || stack.pop().inspect(|&n| stack.extend(&dirs[n].subdirs)))
        .flat_map(move |n| dirs[n].files.iter().map(move |&(i, _)| (i, n)))
}

fn visit(entries: &EntryList, dirs: &[Dir], d: usize, fd: &OwnedFd) -> Vec<usize> {
    let dir = &dirs[d];
    if dir.depth >= MAX_DEPTH {
        return visit_deep(entries, dirs, d, fd);
    }
    let (mut out, below) = rayon::join(
        || {
            dir.files
                .par_iter()
                .with_min_len(64)
                .filter(|&&(i, name)| changed(fd.as_raw_fd(), name, &entries.meta(i)))
                .map(|&(i, _)| i)
                .collect::<Vec<_>>()
        },
        || {
            dir.subdirs
                .par_iter()
                .flat_map_iter(|&s| match open_dir_at(fd.as_raw_fd(), dirs[s].name) {
                    Ok(sub) => visit(entries, dirs, s, &sub),
                    Err(_) => files_below(dirs, s).map(|(i, _)| i).collect(),
                })
                .collect::<Vec<_>>()
        },
    );
    out.extend(below);
    out
}

/// Below the recursion limit: each entry's directory is reached from `d` one component at a time, holding at
/// most two descriptors.
fn visit_deep(entries: &EntryList, dirs: &[Dir], d: usize, fd: &OwnedFd) -> Vec<usize> {
    files_below(dirs, d)
        .filter(|&(i, n)| {
            let mut chain = Vec::new();
            let mut m = n;
            while m != d {
                chain.push(dirs[m].name);
                m = dirs[m].parent;
            }
            let mut cur: Option<OwnedFd> = None;
            for name in chain.into_iter().rev() {
                match open_dir_at(cur.as_ref().unwrap_or(fd).as_raw_fd(), name) {
                    Ok(next) => cur = Some(next),
                    Err(_) => return true,
                }
            }
            let name = split(entries.path(i)).1;
            changed(cur.as_ref().unwrap_or(fd).as_raw_fd(), name, &entries.meta(i))
        })
        .map(|(i, _)| i)
        .collect()
}

/// Same test as a full-path lstat had: gone, another kind, or another size, inode or mtime than the one
/// observed right after placing (kept in the ctime slot).
// The stat field types differ between platforms (time_t, ino_t): the conversions are only no-ops on some.
#[allow(clippy::useless_conversion)]
fn changed(dir: RawFd, name: &[u8], recorded: &Meta) -> bool {
    let st = match with_c_name(name, |c| {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `c` is NUL-terminated and `st` is written in full when the call succeeds.
        let rc = unsafe { libc::fstatat(dir, c, st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
        (rc == 0).then(|| unsafe { st.assume_init() })
    }) {
        Some(Some(st)) => st,
        _ => return true,
    };
    let fmt = st.st_mode & libc::S_IFMT;
    let kind_ok = if recorded.kind == Kind::File { fmt == libc::S_IFREG } else { fmt == libc::S_IFLNK };
    // Same arithmetic as std's `mtime() * 1e9 + mtime_nsec()`, which recorded the value.
    let mtime = i64::from(st.st_mtime).wrapping_mul(1_000_000_000).wrapping_add(i64::from(st.st_mtime_nsec));
    !kind_ok || st.st_size as u64 != recorded.size || u64::from(st.st_ino) != recorded.ino || mtime != recorded.ctime_ns
}

fn open_root(root: &Path) -> std::io::Result<OwnedFd> {
    let c = CString::new(root.as_os_str().as_bytes())?;
    // The root itself may be reached through a symlink, as a path given by the user may be.
    open_at(libc::AT_FDCWD, c.as_ptr(), 0)
}

fn open_dir_at(dir: RawFd, name: &[u8]) -> std::io::Result<OwnedFd> {
    with_c_name(name, |c| open_at(dir, c, libc::O_NOFOLLOW))
        .unwrap_or_else(|| Err(std::io::ErrorKind::InvalidInput.into()))
}

fn open_at(dir: RawFd, c: *const libc::c_char, extra: libc::c_int) -> std::io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | extra;
    // SAFETY: `c` is NUL-terminated; a descriptor returned by openat is ours to own.
    let fd = unsafe { libc::openat(dir, c, flags) };
    if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Calls `f` with `name` NUL-terminated, on the stack when it fits a file name; None when `name` holds a NUL.
fn with_c_name<T>(name: &[u8], f: impl FnOnce(*const libc::c_char) -> T) -> Option<T> {
    if name.contains(&0) {
        return None;
    }
    let mut buf = [0u8; 256];
    if name.len() < buf.len() {
        buf[..name.len()].copy_from_slice(name);
        Some(f(buf.as_ptr().cast()))
    } else {
        let c = CString::new(name).ok()?;
        Some(f(c.as_ptr()))
    }
}

#[cfg(test)]
mod tests;
