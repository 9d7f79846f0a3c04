//! The watcher (`watch.rs`) with the partial scan it feeds (`scan_tree_partial`), on a real filesystem: after
//! each change, the partial scan of what the watcher names must equal a full scan, entry for entry, warning for
//! warning, change for change. Plus what must make it ask for a full scan.

#![cfg(target_os = "linux")]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use skysync_core::watch::{Changes, Token, WatchError, WatchOptions, Watcher};
use skysync_core::{scan_tree, scan_tree_partial, ScanOutput, Tree, DEFAULT_PARAMS};

mod common;
use common::{seed, Rng};

fn p(root: &Path, rel: &str) -> PathBuf {
    root.join(rel)
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let path = p(root, rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

fn start(root: &Path) -> Watcher {
    let w = Watcher::start(root, WatchOptions::default()).unwrap();
    assert!(w.wait_ready(Duration::from_secs(20)));
    w
}

/// A scan of the tree as it is now, and the token given just before it: what a push stores.
fn base(w: &Watcher, root: &Path) -> (Token, Tree) {
    let t = w.changes_since(None).unwrap().token;
    (t, Tree::from_scan(scan_tree(root).unwrap(), DEFAULT_PARAMS))
}

fn show(v: &[Vec<u8>]) -> Vec<String> {
    v.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect()
}

fn describe(o: &ScanOutput) -> String {
    let mut s = String::new();
    for e in o.entries.iter() {
        s += &format!(
            "{} {:?} {:o} {} {} {} {:?}\n",
            String::from_utf8_lossy(e.path()),
            e.meta.kind,
            e.meta.mode,
            e.meta.size,
            e.meta.mtime_ns,
            e.meta.ino,
            e.target()
        );
    }
    for w in &o.warnings {
        s += &format!("warning {:?} {} {}\n", w.kind, String::from_utf8_lossy(&w.path), w.message);
    }
    for u in &o.unreadable_dirs {
        s += &format!("unreadable {}\n", String::from_utf8_lossy(u));
    }
    s
}

fn changes_of(prev: &Tree, out: ScanOutput) -> (Tree, Vec<String>) {
    let (next, changes) = prev.diff(out, DEFAULT_PARAMS);
    let list = changes
        .iter()
        .map(|c| {
            let path = match c.index {
                Some(i) => next.entry(i).path().to_vec(),
                None => prev.entry(c.prev_index.unwrap()).path().to_vec(),
            };
            format!("{} {}", c.kind.as_str(), String::from_utf8_lossy(&path))
        })
        .collect();
    (next, list)
}

/// The partial scan `c` allows against `prev` equals a full scan now; returns how many directories it listed.
fn check_same(root: &Path, prev: &Tree, c: &Changes) -> u64 {
    assert!(!c.full, "full: {:?}", c.reason);
    let part = scan_tree_partial(root, prev, &c.dirs, &c.subtrees).unwrap();
    let full = scan_tree(root).unwrap();
    let listed = part.dirs_listed;
    assert!(part.partial);
    assert_eq!(describe(&part), describe(&full), "dirs {:?} subtrees {:?}", show(&c.dirs), show(&c.subtrees));
    let (a, ca) = changes_of(prev, part);
    let (b, cb) = changes_of(prev, full);
    assert_eq!(ca, cb);
    assert_eq!(a.entries(), b.entries());
    listed
}

fn tree(root: &Path) {
    for d in ["a/b/c", "a/d", "e", "f/g"] {
        fs::create_dir_all(p(root, d)).unwrap();
    }
    for f in ["top.txt", "a/one", "a/b/two", "a/b/c/three", "a/d/four", "e/five", "f/g/six", "a.txt", "a-x"] {
        write(root, f, f.as_bytes());
    }
    write(root, ".gitignore", b"*.log\nbuild/\n");
    write(root, "a/noise.log", b"x");
    fs::create_dir_all(p(root, "build/deep")).unwrap();
}

#[test]
fn an_edit_names_only_its_directory_and_the_partial_scan_equals_a_full_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    tree(root);
    let w = start(root);
    let (t, prev) = base(&w, root);
    write(root, "a/b/two", b"changed");
    let c = w.changes_since(Some(t)).unwrap();
    assert_eq!(show(&c.dirs), ["a/b"]);
    assert!(c.subtrees.is_empty());
    assert_eq!(check_same(root, &prev, &c), 1);
    // Ignored names: only a name made or removed counts (it moves the directory's times).
    let (t, prev) = base(&w, root);
    write(root, "a/more.log", b"y");
    write(root, "build/deep/x", b"y");
    let c = w.changes_since(Some(t)).unwrap();
    assert_eq!(show(&c.dirs), ["a"]);
    assert_eq!(check_same(root, &prev, &c), 1);
    let (t, prev) = base(&w, root);
    write(root, "a/more.log", b"appended");
    write(root, "build/deep/x", b"y2");
    let c = w.changes_since(Some(t)).unwrap();
    assert!(c.dirs.is_empty() && c.subtrees.is_empty(), "{:?}", show(&c.dirs));
    assert_eq!(check_same(root, &prev, &c), 0);
}

#[test]
fn a_new_directory_filled_at_once_is_a_subtree_and_watched_from_then_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    tree(root);
    let w = start(root);
    let (t, prev) = base(&w, root);
    // Faster than the watcher can add watches: the subtree mark covers what came before them.
    for i in 0..20 {
        write(root, &format!("new/n{i}/deeper/file{i}"), b"x");
    }
    let c = w.changes_since(Some(t)).unwrap();
    assert!(c.subtrees.contains(&b"new".to_vec()), "{:?}", show(&c.subtrees));
    check_same(root, &prev, &c);
    // Later changes deep inside are seen through the watches added meanwhile.
    let (t, prev) = base(&w, root);
    write(root, "new/n7/deeper/file7", b"later");
    write(root, "new/n3/deeper/added", b"later");
    let c = w.changes_since(Some(t)).unwrap();
    assert_eq!(show(&c.dirs), ["new/n3/deeper", "new/n7/deeper"]);
    check_same(root, &prev, &c);
}

#[test]
fn deleting_and_renaming_directories_is_followed_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    tree(root);
    let w = start(root);
    let (t, prev) = base(&w, root);
    fs::remove_dir_all(p(root, "a/b")).unwrap();
    let c = w.changes_since(Some(t)).unwrap();
    assert!(c.dirs.contains(&b"a".to_vec()));
    check_same(root, &prev, &c);

    let (t, prev) = base(&w, root);
    fs::rename(p(root, "f"), p(root, "a/moved")).unwrap();
    let c = w.changes_since(Some(t)).unwrap();
    assert!(c.subtrees.contains(&b"a/moved".to_vec()), "{:?}", show(&c.subtrees));
    check_same(root, &prev, &c);
    // The moved directory's watches follow it: a change inside is reported under its new name.
    let (t, prev) = base(&w, root);
    write(root, "a/moved/g/six", b"edited after the move");
    let c = w.changes_since(Some(t)).unwrap();
    assert_eq!(show(&c.dirs), ["a/moved/g"]);
    check_same(root, &prev, &c);
    // Moved out of the tree (into an ignored directory), and back in under another name.
    let (t, prev) = base(&w, root);
    fs::rename(p(root, "a/moved"), p(root, "build/away")).unwrap();
    write(root, "build/away/g/seven", b"7");
    fs::rename(p(root, "build/away"), p(root, "e/back")).unwrap();
    let c = w.changes_since(Some(t)).unwrap();
    check_same(root, &prev, &c);
    // A directory replaced by a file of the same name, and the reverse.
    let (t, prev) = base(&w, root);
    fs::remove_dir_all(p(root, "e/back")).unwrap();
    write(root, "e/back", b"a file now");
    fs::remove_file(p(root, "e/five")).unwrap();
    fs::create_dir(p(root, "e/five")).unwrap();
    write(root, "e/five/inner", b"i");
    let c = w.changes_since(Some(t)).unwrap();
    check_same(root, &prev, &c);
}

#[test]
fn a_changed_ignore_file_or_exclude_file_asks_for_a_full_scan() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    tree(root);
    fs::create_dir_all(p(root, ".git/info")).unwrap();
    let w = start(root);
    let (t, _) = base(&w, root);
    write(root, "a/.gitignore", b"one\n");
    let c = w.changes_since(Some(t)).unwrap();
    assert!(c.full);
    assert!(c.reason.unwrap().contains("a/.gitignore"));
    // Once rebuilt, the newly ignored file is not watched for, and a token from after the change is good.
    let (t, prev) = base(&w, root);
    write(root, "a/one", b"ignored now");
    let c = w.changes_since(Some(t)).unwrap();
    assert!(c.dirs.is_empty(), "{:?}", show(&c.dirs));
    check_same(root, &prev, &c);
    let (t, _) = base(&w, root);
    write(root, ".git/info/exclude", b"e/\n");
    assert!(w.changes_since(Some(t)).unwrap().full);
    let (t, _) = base(&w, root);
    write(root, ".skyignore", b"f/\n");
    assert!(w.changes_since(Some(t)).unwrap().full);
    // A rule file that is itself ignored still counts.
    let (t, _) = base(&w, root);
    write(root, ".skyignore", b".skyignore\nf/\n");
    assert!(w.changes_since(Some(t)).unwrap().full);
    let (t, _) = base(&w, root);
    write(root, "e/.skyignore", b"five\n");
    assert!(w.changes_since(Some(t)).unwrap().full);
}

#[test]
fn the_exclude_file_counts_when_git_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    tree(root);
    fs::create_dir_all(p(root, ".git/info")).unwrap();
    write(root, ".gitignore", b".git/\n");
    let w = start(root);
    let (t, prev) = base(&w, root);
    write(root, ".git/objects", b"not synced");
    let c = w.changes_since(Some(t)).unwrap();
    check_same(root, &prev, &c);
    let (t, _) = base(&w, root);
    write(root, ".git/info/exclude", b"a/\n");
    assert!(w.changes_since(Some(t)).unwrap().full);
}

#[test]
fn an_overflowed_queue_asks_for_a_full_scan_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    tree(root);
    // No reader thread: events wait in the kernel queue, which holds fs.inotify.max_queued_events of them.
    let w = Watcher::start(root, WatchOptions { no_thread: true }).unwrap();
    let (t, _) = base(&w, root);
    let max: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events").unwrap().trim().parse().unwrap();
    fs::create_dir(p(root, "many")).unwrap();
    let (t2, _) = base(&w, root);
    for i in 0..max / 2 + 100 {
        // Each one gives two events (create, close after write).
        fs::File::create(p(root, &format!("many/{i}"))).unwrap();
    }
    let c = w.changes_since(Some(t)).unwrap();
    assert!(c.full);
    assert!(c.reason.as_deref().unwrap().contains("overflow"), "{:?}", c.reason);
    assert!(w.changes_since(Some(t2)).unwrap().full);
    let (t, prev) = base(&w, root);
    write(root, "many/17", b"x");
    let c = w.changes_since(Some(t)).unwrap();
    assert_eq!(show(&c.dirs), ["many"]);
    check_same(root, &prev, &c);
}

#[test]
fn tokens_of_another_watcher_or_none_are_not_vouched_for() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    tree(root);
    let w1 = start(root);
    let w2 = start(root);
    let t1 = w1.changes_since(None).unwrap();
    assert!(t1.full);
    let c = w2.changes_since(Some(t1.token)).unwrap();
    assert!(c.full);
    assert!(w2.changes_since(Some(Token { instance: w2.instance(), seq: 1 << 40 })).unwrap().full);
    assert!(!w1.changes_since(Some(t1.token)).unwrap().full);
    assert_eq!(Token::parse(&t1.token.encode()), Some(t1.token));
}

#[test]
fn the_root_going_away_stops_the_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    tree(&root);
    let w = start(&root);
    let (t, _) = base(&w, &root);
    fs::rename(&root, dir.path().join("elsewhere")).unwrap();
    fs::create_dir(&root).unwrap();
    assert!(matches!(w.changes_since(Some(t)), Err(WatchError::Dead(_))));
}

#[test]
fn hard_links_make_their_directories_listed_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    tree(&root);
    let outside = dir.path().join("outside");
    fs::hard_link(p(&root, "e/five"), &outside).unwrap();
    let w = start(&root);
    let (t, prev) = base(&w, &root);
    // Written through the other name: no event in the tree's directories, yet the content there changed.
    fs::write(&outside, b"written through the other name").unwrap();
    let c = w.changes_since(Some(t)).unwrap();
    assert_eq!(show(&c.dirs), ["e"]);
    check_same(&root, &prev, &c);
    // A second name made inside the tree: its other names could be anywhere, so everything is walked again.
    let (t, _) = base(&w, &root);
    fs::hard_link(p(&root, "a/d/four"), p(&root, "f/g/four-again")).unwrap();
    let c = w.changes_since(Some(t)).unwrap();
    assert!(c.full, "{:?}", show(&c.dirs));
    let (t, prev) = base(&w, &root);
    fs::write(p(&root, "f/g/four-again"), b"through the new name").unwrap();
    let c = w.changes_since(Some(t)).unwrap();
    assert!(c.dirs.contains(&b"a/d".to_vec()), "{:?}", show(&c.dirs));
    check_same(&root, &prev, &c);
}

#[test]
fn mode_changes_of_directories_and_special_files_match_a_full_scan() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    tree(root);
    let w = start(root);
    let (t, prev) = base(&w, root);
    fs::set_permissions(p(root, "a/b"), fs::Permissions::from_mode(0o700)).unwrap();
    let c = w.changes_since(Some(t)).unwrap();
    check_same(root, &prev, &c);
    // A FIFO is warned about at every scan: the warning's directory must be listed again (push does that with
    // the warnings it saved); here the watcher names it because it was just made.
    let (t, prev) = base(&w, root);
    let fifo = std::ffi::CString::new(p(root, "e/pipe").as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let c = w.changes_since(Some(t)).unwrap();
    check_same(root, &prev, &c);
    let (t, prev) = base(&w, root);
    let c = w.changes_since(Some(t)).unwrap();
    let mut with_warned = c.clone();
    with_warned.dirs.push(b"e".to_vec());
    check_same(root, &prev, &with_warned);
    let _ = OsStr::new("");
}

fn all_paths(root: &Path, rel: &str, files: &mut Vec<String>, dirs: &mut Vec<String>) {
    let Ok(list) = fs::read_dir(p(root, rel)) else { return };
    for de in list.flatten() {
        let name = de.file_name().to_string_lossy().into_owned();
        let r = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        let ft = de.file_type().unwrap();
        if ft.is_dir() {
            dirs.push(r.clone());
            all_paths(root, &r, files, dirs);
        } else {
            files.push(r);
        }
    }
}

/// Writes a file, never through a FIFO (opening one for writing waits for a reader).
fn put(path: &Path, data: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(mut f) =
        fs::File::options().write(true).create(true).truncate(true).custom_flags(libc::O_NONBLOCK).open(path)
    {
        if f.metadata().is_ok_and(|m| m.is_file()) {
            let _ = f.write_all(data);
        }
    }
}

/// `watched(dir)`: the directory is in the tree. Hard links are only made there: one made in an ignored directory
/// gives no event (a blind spot of inotify, see watch.rs).
fn mutate(rng: &mut Rng, root: &Path, watched: &dyn Fn(&str) -> bool) -> String {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    const NAMES: &[&str] =
        &["a", "b", "c", "src", "lib", "x.log", "build", "keep.log", "n1", "n2", "tmp", "a.b", "a-b"];
    const RULES: &[&str] = &["*.log", "build/", "!keep.log", "tmp*", "b/c", "/lib", "n2"];
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    all_paths(root, "", &mut files, &mut dirs);
    let dir = if dirs.is_empty() || rng.below(4) == 0 { String::new() } else { rng.pick(&dirs).clone() };
    let fresh = |rng: &mut Rng| {
        let n = *rng.pick(NAMES);
        if dir.is_empty() {
            n.to_string()
        } else {
            format!("{dir}/{n}")
        }
    };
    let op = rng.below(17);
    let r = match op {
        0 | 1 => {
            let f = fresh(rng);
            put(&p(root, &f), format!("{}", rng.next()).repeat(rng.below(20)).as_bytes());
            format!("write {f}")
        }
        2 if !files.is_empty() => {
            let f = rng.pick(&files).clone();
            let _ = fs::remove_file(p(root, &f));
            format!("rm {f}")
        }
        3 if !files.is_empty() => {
            // Same size, same mtime: only ctime (and the bytes) tell.
            let f = rng.pick(&files).clone();
            if let Ok(md) = fs::symlink_metadata(p(root, &f)) {
                if md.is_file() {
                    let len = md.len() as usize;
                    put(&p(root, &f), &vec![b'z'; len]);
                    if let Ok(file) = fs::File::options().write(true).open(p(root, &f)) {
                        let _ = file.set_modified(md.modified().unwrap());
                    }
                }
            }
            format!("rewrite-same {f}")
        }
        4 if !files.is_empty() => {
            let f = rng.pick(&files).clone();
            let _ = fs::set_permissions(
                p(root, &f),
                fs::Permissions::from_mode(if rng.below(2) == 0 { 0o755 } else { 0o644 }),
            );
            format!("chmod {f}")
        }
        5 if !files.is_empty() => {
            let f = rng.pick(&files).clone();
            if let Ok(file) = fs::File::options().write(true).custom_flags(libc::O_NONBLOCK).open(p(root, &f)) {
                let _ = file.set_modified(std::time::SystemTime::now() - Duration::from_secs(rng.below(1000) as u64));
            }
            format!("touch {f}")
        }
        6 | 7 => {
            let d = fresh(rng);
            let _ = fs::create_dir_all(p(root, &format!("{d}/{}", rng.pick(NAMES))));
            put(&p(root, &format!("{d}/f{}", rng.below(3))), b"in a new dir");
            format!("mkdir {d}")
        }
        8 if !dirs.is_empty() => {
            let d = rng.pick(&dirs).clone();
            let _ = fs::remove_dir_all(p(root, &d));
            format!("rm -r {d}")
        }
        9 if !dirs.is_empty() => {
            let d = rng.pick(&dirs).clone();
            let to = fresh(rng);
            let _ = fs::rename(p(root, &d), p(root, &to));
            format!("mv {d} {to}")
        }
        10 => {
            let f = fresh(rng);
            let target = if files.is_empty() { "nowhere".to_string() } else { rng.pick(&files).clone() };
            let _ = std::os::unix::fs::symlink(&target, p(root, &f));
            format!("ln -s {target} {f}")
        }
        11 => {
            let f = if dir.is_empty() { ".gitignore".to_string() } else { format!("{dir}/.gitignore") };
            let rules: Vec<&str> = (0..rng.below(3)).map(|_| *rng.pick(RULES)).collect();
            put(&p(root, &f), rules.join("\n").as_bytes());
            format!("rules {f}: {rules:?}")
        }
        12 if !dirs.is_empty() => {
            let d = rng.pick(&dirs).clone();
            let _ = fs::set_permissions(
                p(root, &d),
                fs::Permissions::from_mode(if rng.below(2) == 0 { 0o700 } else { 0o755 }),
            );
            format!("chmod dir {d}")
        }
        13 => {
            let f = fresh(rng);
            let c = std::ffi::CString::new(p(root, &f).as_os_str().as_bytes()).unwrap();
            unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
            format!("mkfifo {f}")
        }
        14 if !files.is_empty() => {
            // Moved over another name, as editors save.
            let f = rng.pick(&files).clone();
            let to = fresh(rng);
            let _ = fs::rename(p(root, &f), p(root, &to));
            format!("mv {f} {to}")
        }
        15 if !files.is_empty() && rng.below(3) == 0 && watched(&dir) => {
            // A second name: a write through either must be seen in both directories.
            let f = rng.pick(&files).clone();
            let to = fresh(rng);
            let _ = fs::hard_link(p(root, &f), p(root, &to));
            format!("ln {f} {to}")
        }
        _ => {
            let f = fresh(rng);
            put(&p(root, &f), b"x");
            format!("write {f}")
        }
    };
    r
}

#[test]
fn random_changes_the_partial_scan_always_equals_a_full_one() {
    let seed = seed();
    let rounds: usize = std::env::var("SKYSYNC_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    tree(root);
    let w = start(root);
    let (mut token, mut prev) = base(&w, root);
    let mut warned: Vec<Vec<u8>> = Vec::new();
    let (mut partial, mut full) = (0, 0);
    let mut log: Vec<String> = Vec::new();
    for round in 0..rounds {
        for _ in 0..1 + rng.below(4) {
            let watched = |d: &str| {
                d.is_empty()
                    || prev.find(d.as_bytes()).is_some_and(|i| prev.entry(i).meta.kind == skysync_core::Kind::Dir)
            };
            log.push(format!("{round}: {}", mutate(&mut rng, root, &watched)));
        }
        let c = w.changes_since(Some(token)).unwrap();
        let out = if c.full {
            full += 1;
            scan_tree(root).unwrap()
        } else {
            partial += 1;
            let mut dirs = c.dirs.clone();
            let mut subtrees = c.subtrees.clone();
            for path in &warned {
                // What push does with the warnings of the scan it stored: they recur at every scan.
                subtrees.push(path.clone());
                dirs.push(path.rsplit_once_parent());
            }
            let part = scan_tree_partial(root, &prev, &dirs, &subtrees).unwrap();
            let whole = scan_tree(root).unwrap();
            if describe(&part) != describe(&whole) {
                panic!(
                    "seed {seed} round {round}: partial != full\nlast ops:\n{}\ndirs {:?}\nsubtrees {:?}\n--- partial\n{}--- full\n{}",
                    log[log.len().saturating_sub(8)..].join("\n"),
                    show(&dirs),
                    show(&subtrees),
                    describe(&part),
                    describe(&whole)
                );
            }
            let (_, a) = changes_of(&prev, scan_tree_partial(root, &prev, &dirs, &subtrees).unwrap());
            let (_, b) = changes_of(&prev, scan_tree(root).unwrap());
            assert_eq!(a, b, "seed {seed} round {round}");
            part
        };
        warned = out.warnings.iter().map(|w| w.path.clone()).collect();
        token = c.token;
        prev = prev.diff(out, DEFAULT_PARAMS).0;
    }
    eprintln!("{partial} partial scans, {full} full");
    assert!(partial > rounds / 4, "only {partial} of {rounds} rounds were vouched for");
}

trait Parent {
    fn rsplit_once_parent(&self) -> Vec<u8>;
}

impl Parent for Vec<u8> {
    fn rsplit_once_parent(&self) -> Vec<u8> {
        match self.iter().rposition(|&b| b == b'/') {
            Some(i) => self[..i].to_vec(),
            None => Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// permissions, checked as an unprivileged user (they do not apply to root)

/// Runs `test` of this binary as uid/gid 65534; None (with the reason printed) when that is impossible.
fn run_unprivileged(test: &str, scratch: &Path, env: &[(&str, &OsStr)]) -> Option<std::process::Output> {
    use std::os::unix::fs::PermissionsExt;
    let mut cmd = if unsafe { libc::geteuid() } != 0 {
        std::process::Command::new(std::env::current_exe().unwrap())
    } else {
        let Some(setpriv) = ["/usr/bin/setpriv", "/bin/setpriv"].into_iter().find(|p| Path::new(p).exists()) else {
            eprintln!("SKIPPED: running as root and setpriv is not installed; permissions cannot be tested");
            return None;
        };
        // The test binary may live where the unprivileged user cannot reach it: run a copy from the scratch dir.
        let exe = scratch.join("watch-test-bin");
        fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = std::process::Command::new(setpriv);
        c.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"]).arg(exe);
        c
    };
    cmd.args(["--exact", test, "--include-ignored", "--nocapture", "--test-threads=1"]).env("HOME", scratch);
    for (k, v) in env {
        cmd.env(k, v);
    }
    match cmd.output() {
        Ok(out)
            if matches!(out.status.code(), Some(126) | Some(127))
                || String::from_utf8_lossy(&out.stderr).contains("setpriv:") =>
        {
            eprintln!("SKIPPED: could not run the test unprivileged: {}", String::from_utf8_lossy(&out.stderr));
            None
        }
        Ok(out) => Some(out),
        Err(e) => {
            eprintln!("SKIPPED: cannot run setpriv: {e}");
            None
        }
    }
}

#[test]
fn a_directory_that_cannot_be_watched_means_full_answers_until_it_can() {
    let scratch = tempfile::Builder::new().prefix("skysync-watch-perm-").tempdir_in("/tmp").unwrap();
    let root = scratch.path().join("tree");
    fs::create_dir(&root).unwrap();
    tree(&root);
    if unsafe { libc::geteuid() } == 0 {
        // The unprivileged child owns the tree, so it can lock and unlock it itself.
        for entry in [scratch.path().to_path_buf()].into_iter().chain(walk_all(&root)) {
            let c = std::ffi::CString::new(entry.as_os_str().as_bytes()).unwrap();
            unsafe { libc::lchown(c.as_ptr(), 65534, 65534) };
        }
    }
    let Some(out) = run_unprivileged(
        "child_cannot_watch",
        scratch.path(),
        &[("SKYSYNC_TEST_CHILD", OsStr::new("watch")), ("SKYSYNC_ROOT", root.as_os_str())],
    ) else {
        return;
    };
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the unprivileged check failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("child_cannot_watch ... ok"), "the child test did not run:\n{stdout}\n{stderr}");
}

fn walk_all(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for de in fs::read_dir(dir).unwrap().flatten() {
        if de.file_type().unwrap().is_dir() {
            out.extend(walk_all(&de.path()));
        } else {
            out.push(de.path());
        }
    }
    out
}

#[test]
#[ignore = "child process of a_directory_that_cannot_be_watched_means_full_answers_until_it_can"]
fn child_cannot_watch() {
    use std::os::unix::fs::PermissionsExt;
    if std::env::var("SKYSYNC_TEST_CHILD").as_deref() != Ok("watch") {
        return;
    }
    let root = PathBuf::from(std::env::var_os("SKYSYNC_ROOT").unwrap());
    let w = start(&root);
    let (t, _) = base(&w, &root);
    // Locked after the watch was added: the watch stays, and listing it fails the same way in both scans.
    fs::set_permissions(p(&root, "a/d"), fs::Permissions::from_mode(0o000)).unwrap();
    let c = w.changes_since(Some(t)).unwrap();
    assert!(c.dirs.contains(&b"a/d".to_vec()), "{:?}", show(&c.dirs));
    fs::set_permissions(p(&root, "a/d"), fs::Permissions::from_mode(0o755)).unwrap();
    drop(w);
    // Locked when the watcher walks: it cannot watch it, so it cannot vouch for anything.
    fs::set_permissions(p(&root, "a/b"), fs::Permissions::from_mode(0o000)).unwrap();
    let w = start(&root);
    let (t, _) = base(&w, &root);
    write(&root, "e/five", b"changed");
    let c = w.changes_since(Some(t)).unwrap();
    assert!(c.full);
    assert!(c.reason.as_deref().unwrap().contains("a/b"), "{:?}", c.reason);
    // Readable again: one more full answer (what happened inside meanwhile is unknown), then partial ones.
    fs::set_permissions(p(&root, "a/b"), fs::Permissions::from_mode(0o755)).unwrap();
    let c = w.changes_since(Some(c.token)).unwrap();
    assert!(c.full, "{:?}", show(&c.dirs));
    let (t, prev) = base(&w, &root);
    write(&root, "a/b/c/three", b"seen");
    let c = w.changes_since(Some(t)).unwrap();
    assert_eq!(show(&c.dirs), ["a/b/c"]);
    check_same(&root, &prev, &c);
}

#[test]
fn a_partial_scan_lists_the_parent_of_a_named_directory_that_is_gone() {
    // Not what a watcher says (it names the parent too), but the scan must not trust a directory on the way.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    tree(root);
    write(root, "a/c/x/deep", b"d");
    let prev = Tree::from_scan(scan_tree(root).unwrap(), DEFAULT_PARAMS);
    fs::remove_dir_all(p(root, "a/b")).unwrap();
    write(root, "a/new", b"n");
    // Only `a`'s own times can be off then (its entry comes from the root's listing, which was not named): a
    // directory's times are recorded but never compared.
    let no_dir_times = |o: &ScanOutput| {
        o.entries
            .iter()
            .map(|e| match e.meta.kind {
                skysync_core::Kind::Dir => format!("{} dir {:o}", String::from_utf8_lossy(e.path()), e.meta.mode),
                _ => format!("{} {:?}", String::from_utf8_lossy(e.path()), e.meta),
            })
            .collect::<Vec<_>>()
    };
    for named in [&b"a/b"[..], b"a/b/c"] {
        let part = scan_tree_partial(root, &prev, &[named.to_vec()], &[]).unwrap();
        let full = scan_tree(root).unwrap();
        assert_eq!(no_dir_times(&part), no_dir_times(&full));
        assert_eq!(changes_of(&prev, part).1, changes_of(&prev, full).1);
    }
}
