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
mod tests {
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};

    use crate::entry::{Entry, Kind, Meta};
    use crate::{Tree, DEFAULT_PARAMS};

    /// Records each path (relative to `root`) as placed, with the lstat it has now.
    fn placed(root: &Path, paths: &[&str]) -> Tree {
        let ups = paths
            .iter()
            .map(|p| {
                let md = fs::symlink_metadata(root.join(p)).unwrap();
                (entry_from(p.as_bytes(), &md), None)
            })
            .collect();
        let mut s = Tree::empty(DEFAULT_PARAMS);
        s.update(ups, Vec::new());
        s
    }

    fn entry_from(path: &[u8], md: &fs::Metadata) -> Entry {
        let kind = if md.is_dir() {
            Kind::Dir
        } else if md.file_type().is_symlink() {
            Kind::Symlink
        } else {
            Kind::File
        };
        let m = Meta {
            size: md.size(),
            mtime_ns: 0,
            ctime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ino: md.ino(),
            mode: (md.mode() & 0o7777) as u16,
            kind,
        };
        Entry::new(path, m, None)
    }

    fn drifted(s: &Tree, root: &Path) -> Vec<String> {
        s.drift(root).into_iter().map(|i| String::from_utf8_lossy(s.entries().path(i)).into_owned()).collect()
    }

    /// What drift must answer, the slow way: every directory on the way must still be a real directory (lstat of
    /// each prefix), then the entry itself is compared as a full-path lstat always did.
    fn reference(s: &Tree, root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in s.entries().iter() {
            if e.meta.kind == Kind::Dir {
                continue;
            }
            let comps: Vec<&[u8]> = e.path().split(|&b| b == b'/').collect();
            let plain = comps.iter().all(|c| !c.is_empty() && *c != b"." && *c != b"..");
            let mut p = root.to_path_buf();
            let mut reachable = plain;
            for c in &comps[..comps.len() - 1] {
                p.push(std::ffi::OsStr::from_bytes(c));
                reachable = reachable && fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
            }
            p.push(std::ffi::OsStr::from_bytes(comps[comps.len() - 1]));
            let same = reachable
                && fs::symlink_metadata(&p).is_ok_and(|md| {
                    let kind_ok = if e.meta.kind == Kind::File { md.is_file() } else { md.file_type().is_symlink() };
                    kind_ok
                        && md.size() == e.meta.size
                        && md.ino() == e.meta.ino
                        && md.mtime() * 1_000_000_000 + md.mtime_nsec() == e.meta.ctime_ns
                });
            if !same {
                out.push(String::from_utf8_lossy(e.path()).into_owned());
            }
        }
        out
    }

    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n.max(1) as u64) as usize
        }
    }

    fn seed() -> u64 {
        std::env::var("SKYSYNC_SEED").map(|s| s.parse().expect("SKYSYNC_SEED must be a u64")).unwrap_or_else(|_| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        }) | 1
    }

    /// Builds a random tree under `root`; returns every path in it, directories first.
    fn random_tree(rng: &mut Rng, root: &Path, depth_max: usize) -> Vec<String> {
        let mut dirs = vec![String::new()];
        let mut all = Vec::new();
        for i in 0..40 {
            let parent = dirs[rng.below(dirs.len())].clone();
            if parent.matches('/').count() + 1 >= depth_max {
                continue;
            }
            let d = if parent.is_empty() { format!("d{i}") } else { format!("{parent}/d{i}") };
            fs::create_dir(root.join(&d)).unwrap();
            dirs.push(d.clone());
            all.push(d);
        }
        for i in 0..400 {
            let parent = &dirs[rng.below(dirs.len())];
            let f = if parent.is_empty() { format!("f{i}") } else { format!("{parent}/f{i}") };
            if rng.below(8) == 0 {
                std::os::unix::fs::symlink(format!("t{}", rng.below(5)), root.join(&f)).unwrap();
            } else {
                fs::write(root.join(&f), vec![b'x'; rng.below(100)]).unwrap();
            }
            all.push(f);
        }
        all
    }

    fn mutate(rng: &mut Rng, root: &Path, outside: &Path, paths: &[String]) -> String {
        let p = &paths[rng.below(paths.len())];
        let full = root.join(p);
        let Ok(md) = fs::symlink_metadata(&full) else { return format!("{p}: already gone") };
        let what = match rng.below(9) {
            0 if md.is_file() => {
                fs::write(&full, b"changed content").unwrap();
                "rewritten"
            }
            1 if md.is_file() => {
                let f = fs::File::options().write(true).open(&full).unwrap();
                f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000)).unwrap();
                "mtime"
            }
            2 if !md.is_dir() => {
                fs::remove_file(&full).unwrap();
                "removed"
            }
            3 if !md.is_dir() => {
                fs::remove_file(&full).unwrap();
                fs::create_dir(&full).unwrap();
                "file became a directory"
            }
            4 if md.is_dir() => {
                fs::remove_dir_all(&full).unwrap();
                "directory removed"
            }
            5 if md.is_dir() => {
                // The same names, looked up through a symlink that leads out of the root.
                let copy = outside.join(p.replace('/', "_"));
                fs::rename(&full, &copy).unwrap();
                std::os::unix::fs::symlink(&copy, &full).unwrap();
                "directory moved out and symlinked"
            }
            6 if md.is_dir() => {
                fs::remove_dir_all(&full).unwrap();
                fs::write(&full, b"").unwrap();
                "directory became a file"
            }
            7 if md.is_file() => {
                let tmp = root.join(".tmp-swap");
                fs::write(&tmp, fs::read(&full).unwrap()).unwrap();
                fs::rename(&tmp, &full).unwrap();
                "replaced by an equal file (new inode)"
            }
            _ => "left alone",
        };
        format!("{p}: {what}")
    }

    #[test]
    fn drift_matches_a_component_by_component_lstat_on_random_trees() {
        let seed = seed();
        let mut rng = Rng(seed);
        for round in 0..12 {
            let dir = tempfile::tempdir().unwrap();
            let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
            fs::create_dir_all(&root).unwrap();
            fs::create_dir_all(&outside).unwrap();
            let paths = random_tree(&mut rng, &root, if round % 3 == 0 { 80 } else { 6 });
            let refs: Vec<&str> = paths.iter().map(|s| s.as_str()).collect();
            let s = placed(&root, &refs);
            assert_eq!(drifted(&s, &root), Vec::<String>::new(), "round {round}, SKYSYNC_SEED={seed}");
            let log: Vec<String> = (0..1 + rng.below(12)).map(|_| mutate(&mut rng, &root, &outside, &paths)).collect();
            assert_eq!(drifted(&s, &root), reference(&s, &root), "round {round} after {log:?}; SKYSYNC_SEED={seed}");
        }
    }

    #[test]
    fn a_directory_replaced_by_a_symlink_is_not_looked_through() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("sub/deeper")).unwrap();
        fs::write(root.join("sub/a"), b"a").unwrap();
        fs::write(root.join("sub/deeper/b"), b"b").unwrap();
        fs::write(root.join("top"), b"t").unwrap();
        let s = placed(&root, &["sub", "sub/a", "sub/deeper", "sub/deeper/b", "top"]);
        // The same files, same inodes and times, now only reachable through a symlink out of the root.
        fs::rename(root.join("sub"), dir.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), root.join("sub")).unwrap();
        assert_eq!(drifted(&s, &root), vec!["sub/a", "sub/deeper/b"]);
        // Through a symlink inside the root, too.
        fs::remove_file(root.join("sub")).unwrap();
        std::os::unix::fs::symlink("../elsewhere", root.join("sub")).unwrap();
        assert_eq!(drifted(&s, &root), vec!["sub/a", "sub/deeper/b"]);
        // Back as a real directory, the same entries are as placed.
        fs::remove_file(root.join("sub")).unwrap();
        fs::rename(dir.path().join("elsewhere"), root.join("sub")).unwrap();
        assert_eq!(drifted(&s, &root), Vec::<String>::new());
        // The root itself may be a symlink.
        std::os::unix::fs::symlink(&root, dir.path().join("link-to-root")).unwrap();
        assert_eq!(drifted(&s, &dir.path().join("link-to-root")), Vec::<String>::new());
        assert_eq!(drifted(&s, &dir.path().join("no-such-root")), vec!["sub/a", "sub/deeper/b", "top"]);
    }

    #[test]
    fn paths_that_leave_the_root_drift_instead_of_being_stated() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("d")).unwrap();
        fs::write(dir.path().join("out"), b"o").unwrap();
        fs::write(root.join("d/in"), b"i").unwrap();
        let out = fs::symlink_metadata(dir.path().join("out")).unwrap();
        let inside = fs::symlink_metadata(root.join("d/in")).unwrap();
        // Hand-made records that would match a file if the path were resolved as is.
        let ups = ["../out", "d/../../out", "./d/in", "d//in", "d/./in"]
            .iter()
            .map(|p| (entry_from(p.as_bytes(), if p.ends_with("out") { &out } else { &inside }), None))
            .chain([(entry_from(b"d/in", &inside), None)])
            .collect();
        let mut s = Tree::empty(DEFAULT_PARAMS);
        s.update(ups, Vec::new());
        let mut got = drifted(&s, &root);
        got.sort();
        assert_eq!(got, vec!["../out", "./d/in", "d/../../out", "d/./in", "d//in"]);
    }

    #[test]
    fn deep_trees_past_the_recursion_limit() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut paths = Vec::new();
        let mut p = PathBuf::new();
        for level in 0..super::MAX_DEPTH * 2 + 3 {
            p.push("d");
            fs::create_dir(root.join(&p)).unwrap();
            paths.push(p.to_str().unwrap().to_string());
            if level % 7 == 0 {
                let f = p.join(format!("f{level}"));
                fs::write(root.join(&f), b"f").unwrap();
                paths.push(f.to_str().unwrap().to_string());
            }
        }
        let refs: Vec<&str> = paths.iter().map(|s| s.as_str()).collect();
        let s = placed(root, &refs);
        assert_eq!(drifted(&s, root), Vec::<String>::new());
        let deep = paths.iter().filter(|p| p.contains("/f")).nth(12).unwrap().clone();
        fs::write(root.join(&deep), b"changed").unwrap();
        let cut = paths[super::MAX_DEPTH + 20].clone();
        fs::rename(root.join(&cut), root.join("moved")).unwrap();
        std::os::unix::fs::symlink(root.join("moved"), root.join(&cut)).unwrap();
        assert_eq!(drifted(&s, root), reference(&s, root));
        assert!(drifted(&s, root).contains(&deep));
        assert!(drifted(&s, root).iter().all(|p| p == &deep || p.starts_with(&format!("{cut}/"))));
    }

    #[test]
    fn a_large_flat_directory() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..1000).map(|i| format!("f{i:04}")).collect();
        for n in &names {
            fs::write(dir.path().join(n), n).unwrap();
        }
        let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let s = placed(dir.path(), &refs);
        for n in names.iter().step_by(97) {
            fs::write(dir.path().join(n), b"changed!").unwrap();
        }
        let want: Vec<String> = names.iter().step_by(97).cloned().collect();
        assert_eq!(drifted(&s, dir.path()), want);
    }
}
