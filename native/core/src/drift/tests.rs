//! Drift against a component-by-component lstat of every placed path: random trees, symlinked directories,
//! paths that leave the root, deep and wide trees.

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
