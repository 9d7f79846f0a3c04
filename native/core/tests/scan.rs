//! Integration tests for the tree scan, the tree diff and the tree file format.
//!
//! Tests that need an unprivileged user (permissions do not apply to root) or a different working directory
//! re-run this test binary as a child process: the child tests are `#[ignore]`d and do nothing unless the
//! parent sets `SKYSYNC_TEST_CHILD`.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use skysync_core::ignore_rules::IgnoreMode;
use skysync_core::{
    chunk_file, scan_tree, ChangeKind, ChunkParams, Kind, LoadError, ScanError, ScanOutput, Tree, WarningKind,
    DEFAULT_PARAMS,
};

// ---------------------------------------------------------------------------------------------------------------
// helpers

fn p(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
}

fn write(root: &Path, rel: &[u8], data: &[u8]) {
    let path = p(root, rel);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).unwrap();
    }
    fs::write(&path, data).unwrap();
}

fn symlink(root: &Path, rel: &[u8], target: &[u8]) {
    let path = p(root, rel);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).unwrap();
    }
    std::os::unix::fs::symlink(OsStr::from_bytes(target), &path).unwrap();
}

/// Sets a file's mtime an hour back, so no scan in this test sees it as racy.
fn age(root: &Path, rel: &[u8]) {
    let f = fs::File::options().write(true).open(p(root, rel)).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(3600)).unwrap();
}

fn scan(root: &Path) -> ScanOutput {
    scan_tree(root).unwrap_or_else(|e| panic!("scan of {} failed: {e}", root.display()))
}

fn paths(out: &ScanOutput) -> Vec<Vec<u8>> {
    out.entries.iter().map(|e| e.path().to_vec()).collect()
}

fn show(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

fn kind_of(out: &ScanOutput, rel: &[u8]) -> Option<Kind> {
    out.entries.iter().find(|e| e.path() == rel).map(|e| e.meta.kind)
}

/// A tree of `root` with every file chunked, as a completed sync leaves it.
fn synced(root: &Path) -> Tree {
    let mut snap = Tree::from_scan(scan(root), DEFAULT_PARAMS);
    record_recipes(root, &mut snap);
    snap
}

fn record_recipes(root: &Path, snap: &mut Tree) {
    let files: Vec<(usize, Vec<u8>)> = snap
        .entries()
        .iter()
        .enumerate()
        .filter(|(_, e)| e.meta.kind == Kind::File)
        .map(|(i, e)| (i, e.path().to_vec()))
        .collect();
    for (i, rel) in files {
        if let Ok(r) = chunk_file(&p(root, &rel), snap.params) {
            assert!(snap.set_recipe(i, &r.chunks), "set_recipe refused {}", show(&rel));
        }
    }
}

/// The changes of `next` against `prev`, as path -> status.
fn changes(prev: &Tree, out: ScanOutput) -> (Tree, BTreeMap<Vec<u8>, ChangeKind>) {
    let (next, list) = prev.diff(out, prev.params);
    let mut map = BTreeMap::new();
    for c in &list {
        let path = match c.index {
            Some(i) => next.entry(i).path().to_vec(),
            None => prev.entry(c.prev_index.unwrap()).path().to_vec(),
        };
        assert!(map.insert(path.clone(), c.kind).is_none(), "{} reported twice", show(&path));
    }
    (next, map)
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("skysync-scan-").tempdir().unwrap()
}

// ---------------------------------------------------------------------------------------------------------------
// names, symlinks, special files

#[test]
fn non_utf8_names_are_kept_byte_exact() {
    let dir = tempdir();
    let root = dir.path();
    let names: [&[u8]; 5] = [b"caf\xe9.txt", b"\xff\xfe", b"d\x80ir/inner\xc3\x28", b"ok-\xc3\xa9", b"sp ace\t\n"];
    for n in names {
        write(root, n, n);
    }
    symlink(root, b"link\xe9", b"target-\xff/\x80");
    let out = scan(root);
    let got = paths(&out);
    for n in names {
        assert!(got.contains(&n.to_vec()), "missing {:?} in {:?}", n, got);
        let e = out.entries.iter().find(|e| e.path() == n).unwrap();
        assert_eq!(e.meta.kind, Kind::File);
        assert_eq!(e.meta.size, n.len() as u64);
    }
    assert!(got.contains(&b"d\x80ir".to_vec()));
    let link = out.entries.iter().find(|e| e.path() == b"link\xe9").expect("symlink with a non-UTF-8 name");
    assert_eq!(link.target(), Some(&b"target-\xff/\x80"[..]));
    // Sorted by raw bytes, which is what the diff's merge relies on.
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(got, sorted);
    // Patterns match raw bytes too: `*.txt` covers a name that is not UTF-8.
    write(root, b".gitignore", b"*.txt\n");
    let out = scan(root);
    assert_eq!(kind_of(&out, b"caf\xe9.txt"), None);
    assert_eq!(kind_of(&out, b"ok-\xc3\xa9"), Some(Kind::File));
    // And they survive a save/load.
    let snap = Tree::from_scan(scan(root), DEFAULT_PARAMS);
    let back = Tree::decode(&snap.encode()).unwrap();
    assert_eq!(back.entries(), snap.entries());
    assert!(back.find(b"d\x80ir/inner\xc3\x28").is_some());
}

#[test]
fn symlinks_are_recorded_never_followed() {
    let dir = tempdir();
    let outside = tempdir();
    let root = dir.path();
    write(root, b"real/file", b"x");
    write(outside.path(), b"secret", b"outside");
    symlink(root, b"to-file", b"real/file");
    symlink(root, b"to-dir", b"real");
    symlink(root, b"to-outside", outside.path().as_os_str().as_bytes());
    symlink(root, b"dangling", b"does/not/exist");
    symlink(root, b"loop-a", b"loop-b");
    symlink(root, b"loop-b", b"loop-a");
    symlink(root, b"self", b"self");
    symlink(root, b"real/up", b"..");
    let out = scan(root);
    let expect: [(&[u8], &[u8]); 8] = [
        (b"to-file", b"real/file"),
        (b"to-dir", b"real"),
        (b"to-outside", outside.path().as_os_str().as_bytes()),
        (b"dangling", b"does/not/exist"),
        (b"loop-a", b"loop-b"),
        (b"loop-b", b"loop-a"),
        (b"self", b"self"),
        (b"real/up", b".."),
    ];
    for (path, target) in expect {
        let e = out.entries.iter().find(|e| e.path() == path).unwrap_or_else(|| panic!("{} missing", show(path)));
        assert_eq!(e.meta.kind, Kind::Symlink, "{}", show(path));
        assert_eq!(e.target(), Some(target), "{}", show(path));
        assert_eq!(e.meta.size, target.len() as u64, "a link's size is its target's length");
    }
    // Nothing was listed through a link.
    for e in &out.entries {
        let path = e.path();
        for (link, _) in expect {
            let mut prefix = link.to_vec();
            prefix.push(b'/');
            assert!(!path.starts_with(&prefix), "{} listed through a symlink", show(path));
        }
    }
    assert_eq!(out.entries.len(), 2 + expect.len(), "{:?}", paths(&out).iter().map(|p| show(p)).collect::<Vec<_>>());
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    // A dir-only rule does not match a symlink to a directory (git treats the link as a file).
    write(root, b".gitignore", b"to-dir/\nreal/\n");
    let out = scan(root);
    assert_eq!(kind_of(&out, b"to-dir"), Some(Kind::Symlink));
    assert_eq!(kind_of(&out, b"real"), None);
}

#[test]
fn fifos_sockets_and_devices_are_skipped_and_reported() {
    let dir = tempdir();
    let root = dir.path();
    write(root, b"plain", b"x");
    fs::create_dir(root.join("sub")).unwrap();
    let fifo = CString::new(root.join("sub/fifo").as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0, "mkfifo");
    let ignored_fifo = CString::new(root.join("ignored.fifo").as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(ignored_fifo.as_ptr(), 0o644) }, 0, "mkfifo");
    write(root, b".gitignore", b"*.fifo\n");
    let _listener = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    let dev = CString::new(root.join("null-dev").as_os_str().as_bytes()).unwrap();
    let have_dev = unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) } == 0;
    if !have_dev {
        eprintln!("note: mknod not permitted here; the device case is not covered");
    }
    let out = scan(root);
    assert_eq!(paths(&out), vec![b".gitignore".to_vec(), b"plain".to_vec(), b"sub".to_vec()]);
    let mut special: Vec<(Vec<u8>, String)> = out
        .warnings
        .iter()
        .filter(|w| w.kind == WarningKind::Special)
        .map(|w| (w.path.clone(), w.message.clone()))
        .collect();
    special.sort();
    let mut want: Vec<&[u8]> = vec![b"sock", b"sub/fifo"];
    if have_dev {
        want.insert(0, b"null-dev");
    }
    assert_eq!(special.iter().map(|(p, _)| p.as_slice()).collect::<Vec<_>>(), want, "{:?}", out.warnings);
    assert!(special.iter().any(|(_, m)| m.contains("socket")));
    assert!(special.iter().any(|(_, m)| m.contains("FIFO")));
    assert_eq!(out.warnings.len(), special.len(), "an ignored FIFO is not reported: {:?}", out.warnings);
}

// ---------------------------------------------------------------------------------------------------------------
// ignore files (the full comparison with git is test/ignore-vs-git.test.ts)

#[test]
fn an_ignore_file_that_is_a_symlink_is_not_read_like_git() {
    let dir = tempdir();
    let root = dir.path();
    write(root, b"shared-rules", b"a\n");
    write(root, b"sub/a", b"kept: the link is not followed");
    write(root, b"other/a", b"ignored by a real file");
    write(root, b"other/.gitignore", b"a\n");
    symlink(root, b"sub/.gitignore", b"../shared-rules");
    let out = scan(root);
    assert_eq!(kind_of(&out, b"sub/a"), Some(Kind::File));
    assert_eq!(kind_of(&out, b"sub/.gitignore"), Some(Kind::Symlink));
    assert_eq!(kind_of(&out, b"other/a"), None);
    let w: Vec<_> = out.warnings.iter().map(|w| (show(&w.path), w.kind.clone())).collect();
    assert_eq!(w, vec![("sub/.gitignore".to_string(), WarningKind::BadIgnoreFile)]);
}

#[test]
fn ignore_file_lines_git_cannot_match_are_dropped_with_a_warning() {
    let dir = tempdir();
    let root = dir.path();
    // `[abc` never matches in git (an unclosed class); `trail\` ends in a lone backslash; both warn, the rest apply.
    write(root, b".gitignore", b"[abc\ntrail\\\n*.log\n");
    for f in [&b"[abc"[..], b"a", b"trail\\", b"trail", b"x.log"] {
        write(root, f, b"");
    }
    let out = scan(root);
    let got: Vec<String> = paths(&out).iter().map(|p| show(p)).collect();
    assert_eq!(got, vec![".gitignore", "[abc", "a", "trail", "trail\\"]);
    assert!(
        out.warnings.iter().all(|w| w.kind == WarningKind::BadIgnoreFile && w.path.is_empty()),
        "{:?}",
        out.warnings
    );
    assert!(!out.warnings.is_empty());
}

// ---------------------------------------------------------------------------------------------------------------
// the root

#[test]
fn a_missing_root_or_a_file_root_is_a_scan_error() {
    let dir = tempdir();
    let root = dir.path();
    assert!(matches!(scan_tree(&root.join("nope")), Err(ScanError::RootMissing(_))));
    write(root, b"file", b"x");
    let err = scan_tree(&root.join("file")).err().expect("a file is not a root");
    assert!(matches!(err, ScanError::RootNotDirectory(_)));
    assert!(err.to_string().contains("not a directory"), "{err}");
    symlink(root, b"dangling", b"nope");
    assert!(matches!(scan_tree(&root.join("dangling")), Err(ScanError::RootMissing(_))));
    symlink(root, b"file-link", b"file");
    assert!(matches!(scan_tree(&root.join("file-link")), Err(ScanError::RootNotDirectory(_))));
    // A symlink to a directory is a fine root (followed once), and its contents are listed.
    write(root, b"real/a", b"x");
    symlink(root, b"dir-link", b"real");
    assert_eq!(paths(&scan(&root.join("dir-link"))), vec![b"a".to_vec()]);
    // An empty directory is an empty tree, not an error.
    fs::create_dir(root.join("empty")).unwrap();
    assert!(scan(&root.join("empty")).entries.is_empty());
}

/// Rules are matched relative to the directory that holds them, whatever path the root was given as.
#[test]
fn a_relative_root_matches_rules_like_an_absolute_one() {
    let dir = tempdir();
    let base = dir.path();
    // The root is given as `proj`; inside it live `proj/secret` and `proj/proj/secret`.
    write(base, b"proj/.gitignore", b"/secret\n/sub/x\n");
    write(base, b"proj/secret", b"root-level, ignored");
    write(base, b"proj/proj/secret", b"nested, kept: /secret is anchored at the root");
    write(base, b"proj/sub/.gitignore", b"/y\n");
    write(base, b"proj/sub/x", b"ignored");
    write(base, b"proj/sub/y", b"ignored");
    write(base, b"proj/sub/proj/sub/y", b"kept: /y is anchored at proj/sub");
    let abs = paths(&scan(&base.join("proj")));
    assert!(abs.contains(&b"proj/secret".to_vec()), "{:?}", abs.iter().map(|p| show(p)).collect::<Vec<_>>());
    assert!(abs.contains(&b"sub/proj/sub/y".to_vec()));
    assert!(!abs.contains(&b"secret".to_vec()));
    assert!(!abs.contains(&b"sub/y".to_vec()));
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_relative_root", "--include-ignored", "--nocapture", "--test-threads=1"])
        .current_dir(base)
        .env("SKYSYNC_TEST_CHILD", "relative-root")
        .env("SKYSYNC_EXPECT", abs.iter().map(|p| show(p)).collect::<Vec<_>>().join("\n"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scan of the relative root `proj` differs from the absolute one:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "child process of a_relative_root_matches_rules_like_an_absolute_one"]
fn child_relative_root() {
    if std::env::var("SKYSYNC_TEST_CHILD").as_deref() != Ok("relative-root") {
        return;
    }
    let got: Vec<String> = paths(&scan(Path::new("proj"))).iter().map(|p| show(p)).collect();
    let want: Vec<String> = std::env::var("SKYSYNC_EXPECT").unwrap().split('\n').map(String::from).collect();
    assert_eq!(got, want);
}

// ---------------------------------------------------------------------------------------------------------------
// diff

#[test]
fn diff_reports_every_status_and_carries_recipes() {
    let dir = tempdir();
    let root = dir.path();
    for (rel, data) in [
        (&b"same"[..], &b"unchanged content"[..]),
        (b"edit", b"before"),
        (b"gone", b"bye"),
        (b"file-to-dir", b"f"),
        (b"dir-to-link/inner", b"i"),
        (b"link-to-file-target", b"t"),
        (b"chmod", b"c"),
        (b"deep/a/b", b"b"),
    ] {
        write(root, rel, data);
        age(root, rel);
    }
    symlink(root, b"link-to-file", b"link-to-file-target");
    symlink(root, b"retarget", b"same");
    let prev = synced(root);
    let same_recipe = prev.recipe_of(prev.find(b"same").unwrap()).expect("chunked");

    // Nothing changed: nothing reported, every recipe carried.
    let (again, none) = changes(&prev, scan(root));
    assert!(none.is_empty(), "{none:?}");
    assert_eq!(again.recipe_of(again.find(b"same").unwrap()).as_ref(), Some(&same_recipe));

    write(root, b"edit", b"after, longer");
    fs::remove_file(root.join("gone")).unwrap();
    write(root, b"new/file", b"n");
    fs::remove_file(root.join("file-to-dir")).unwrap();
    write(root, b"file-to-dir/child", b"c");
    fs::remove_dir_all(root.join("dir-to-link")).unwrap();
    symlink(root, b"dir-to-link", b"same");
    fs::remove_file(root.join("link-to-file")).unwrap();
    write(root, b"link-to-file", b"now a file");
    fs::set_permissions(root.join("chmod"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(root.join("retarget")).unwrap();
    symlink(root, b"retarget", b"edit");
    fs::remove_dir_all(root.join("deep")).unwrap();

    let (next, got) = changes(&prev, scan(root));
    let want: BTreeMap<Vec<u8>, ChangeKind> = [
        (&b"edit"[..], ChangeKind::Modified),
        (b"gone", ChangeKind::Deleted),
        (b"new", ChangeKind::Added),
        (b"new/file", ChangeKind::Added),
        (b"file-to-dir", ChangeKind::TypeChanged),
        (b"file-to-dir/child", ChangeKind::Added),
        (b"dir-to-link", ChangeKind::TypeChanged),
        (b"dir-to-link/inner", ChangeKind::Deleted),
        (b"link-to-file", ChangeKind::TypeChanged),
        (b"chmod", ChangeKind::Modified),
        (b"retarget", ChangeKind::Modified),
        (b"deep", ChangeKind::Deleted),
        (b"deep/a", ChangeKind::Deleted),
        (b"deep/a/b", ChangeKind::Deleted),
    ]
    .into_iter()
    .map(|(p, k)| (p.to_vec(), k))
    .collect();
    assert_eq!(got, want);
    // The unchanged file kept its recipe; changed files have none until they are chunked again.
    assert_eq!(next.recipe_of(next.find(b"same").unwrap()).as_ref(), Some(&same_recipe));
    assert!(next.recipe_of(next.find(b"link-to-file-target").unwrap()).is_some());
    assert!(next.recipe_of(next.find(b"edit").unwrap()).is_none());
    assert!(next.recipe_of(next.find(b"link-to-file").unwrap()).is_none());
    assert_eq!(next.entry(next.find(b"dir-to-link").unwrap()).target(), Some(&b"same"[..]));
    // Kinds as they are now.
    assert_eq!(next.entry(next.find(b"file-to-dir").unwrap()).meta.kind, Kind::Dir);
    assert_eq!(next.entry(next.find(b"dir-to-link").unwrap()).meta.kind, Kind::Symlink);
    assert_eq!(next.entry(next.find(b"link-to-file").unwrap()).meta.kind, Kind::File);
    // The new tree is in path order.
    let ps: Vec<&[u8]> = next.entries().iter().map(|e| e.path()).collect();
    assert!(ps.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn a_file_without_a_recipe_or_with_other_params_is_reported_again() {
    let dir = tempdir();
    let root = dir.path();
    write(root, b"a", b"aaa");
    write(root, b"b", b"bbb");
    age(root, b"a");
    age(root, b"b");
    let mut prev = synced(root);
    prev.forget(prev.find(b"b").unwrap());
    let (_, got) = changes(&prev, scan(root));
    assert_eq!(got.into_iter().collect::<Vec<_>>(), vec![(b"b".to_vec(), ChangeKind::Modified)]);
    // Recipes cut with other parameters are worthless: every file is reported.
    let other = ChunkParams { min_size: 1024, avg_size: 4096, max_size: 16384 };
    let (next, list) = prev.diff(scan(root), other);
    assert_eq!(list.len(), 2);
    assert_eq!(next.params, other);
    assert!(next.recipe_of(next.find(b"a").unwrap()).is_none());
}

#[test]
fn set_recipe_refuses_a_size_mismatch_and_non_files() {
    let dir = tempdir();
    let root = dir.path();
    write(root, b"f", b"12345");
    fs::create_dir(root.join("d")).unwrap();
    let mut snap = Tree::from_scan(scan(root), DEFAULT_PARAMS);
    let other = skysync_core::chunk_bytes(b"123456", DEFAULT_PARAMS);
    assert!(!snap.set_recipe(snap.find(b"f").unwrap(), &other.chunks));
    assert!(!snap.set_recipe(snap.find(b"d").unwrap(), &other.chunks));
    let right = skysync_core::chunk_bytes(b"12345", DEFAULT_PARAMS);
    assert!(snap.set_recipe(snap.find(b"f").unwrap(), &right.chunks));
    assert_eq!(snap.recipe_of(snap.find(b"f").unwrap()).unwrap(), right);
}

/// A file whose mtime is not older than the start of the scan that recorded it may have changed again within the
/// same clock tick, after it was read: it is reported modified until a later scan starts after its mtime.
#[test]
fn racy_timestamps_are_reported_modified_again() {
    let dir = tempdir();
    let root = dir.path();
    write(root, b"future", b"f");
    write(root, b"old", b"o");
    write(root, b"tick", b"t");
    age(root, b"old");
    // An mtime in the future is newer than any scan's start.
    let f = fs::File::options().write(true).open(root.join("future")).unwrap();
    f.set_modified(SystemTime::now() + Duration::from_secs(3600)).unwrap();
    drop(f);
    let prev = synced(root);
    assert!(prev.started_ns > 0);
    let (mut next, got) = changes(&prev, scan(root));
    assert_eq!(got.get(&b"future"[..]), Some(&ChangeKind::Modified), "{got:?}");
    assert_eq!(got.get(&b"old"[..]), None);
    // Still racy on the next round: the previous scan also started before the mtime.
    record_recipes(root, &mut next);
    let (_, got) = changes(&next, scan(root));
    assert_eq!(got.get(&b"future"[..]), Some(&ChangeKind::Modified));

    // The boundary, exactly: an mtime equal to the previous start is racy; one nanosecond older is not.
    let mut snap = synced(root);
    let tick_mtime = snap.entry(snap.find(b"tick").unwrap()).meta.mtime_ns;
    snap.started_ns = tick_mtime;
    let (_, got) = changes(&snap, scan(root));
    assert_eq!(got.get(&b"tick"[..]), Some(&ChangeKind::Modified), "mtime == previous start is racy");
    snap.started_ns = tick_mtime + 1;
    let (_, got) = changes(&snap, scan(root));
    assert_eq!(got.get(&b"tick"[..]), None, "mtime older than the previous start is not racy");
    // Only files are racy: directories and symlinks are compared on their own terms.
    assert!(got.keys().all(|k| k.as_slice() == b"future"), "{got:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// tree files

fn sample_snapshot() -> (tempfile::TempDir, Tree) {
    let dir = tempdir();
    let root = dir.path().join("tree");
    write(&root, b"a/b/c.txt", &vec![7u8; 20_000]);
    write(&root, b"a/b/d.txt", b"small");
    write(&root, b"a/\xe9\xff", b"not utf-8");
    write(&root, b"empty", b"");
    write(&root, b"big", &(0..200_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect::<Vec<_>>());
    symlink(&root, b"l", b"a/b/c.txt");
    symlink(&root, b"l2", b"\xfftarget");
    fs::create_dir_all(root.join("emptydir")).unwrap();
    let snap = synced(&root);
    (dir, snap)
}

#[test]
fn snapshot_save_load_round_trip() {
    let (dir, snap) = sample_snapshot();
    assert!(snap.recipe_of(snap.find(b"big").unwrap()).unwrap().chunks.len() > 1);
    let file = dir.path().join("state/snap.bin");
    snap.save(&file).unwrap();
    let back = Tree::load(&file).unwrap();
    assert_eq!(back.entries(), snap.entries());
    assert_eq!(back.params, snap.params);
    assert_eq!(back.started_ns, snap.started_ns);
    assert_eq!(back.ignore_mode, Some(IgnoreMode::GitIgnore));
    for i in 0..snap.len() {
        assert_eq!(back.recipe_of(i), snap.recipe_of(i), "{}", show(snap.entry(i).path()));
    }
    assert_eq!(back.encode(), snap.encode());
    // No temporary files left behind.
    let names: Vec<_> = fs::read_dir(dir.path().join("state")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("snap.bin")]);
    // An empty tree round-trips too.
    let empty = Tree::empty(DEFAULT_PARAMS);
    let back = Tree::decode(&empty.encode()).unwrap();
    assert!(back.is_empty());
    assert_eq!(back.ignore_mode, None);
    // A loaded tree works as the previous tree of a diff.
    let (_, list) = back.diff(scan(&dir.path().join("tree")), DEFAULT_PARAMS);
    assert_eq!(list.len(), snap.len());
}

fn corrupt(data: &[u8]) -> String {
    match Tree::decode(data) {
        Ok(_) => panic!("a damaged snapshot decoded"),
        Err(LoadError::Corrupt(why)) => {
            let msg = LoadError::Corrupt(why.clone()).to_string();
            assert!(msg.starts_with("corrupted snapshot"), "{msg}");
            why
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
    }
}

/// Re-seals a body with a valid checksum, so the damage reaches the parser instead of stopping at the checksum.
fn seal(body: &[u8]) -> Vec<u8> {
    let mut v = body.to_vec();
    v.extend_from_slice(blake3::hash(body).as_bytes());
    v
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut w = Vec::new();
    while v >= 0x80 {
        w.push((v as u8) | 0x80);
        v >>= 7;
    }
    w.push(v as u8);
    w
}

/// The fixed header: magic, version, params, started_ns, ignore mode.
fn header() -> Vec<u8> {
    let mut h = b"SKYSNAP\0".to_vec();
    h.extend_from_slice(&1u32.to_le_bytes());
    for v in [DEFAULT_PARAMS.min_size, DEFAULT_PARAMS.avg_size, DEFAULT_PARAMS.max_size] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(&5i64.to_le_bytes());
    h.push(1);
    h
}

/// One file entry with a fresh path and `chunk_count_field` as written.
fn file_entry(name: &[u8], size: u64, chunk_count_field: u64) -> Vec<u8> {
    let mut e = varint(0);
    e.extend(varint(name.len() as u64));
    e.extend_from_slice(name);
    e.push(1);
    e.extend(varint(0o644));
    e.extend(varint(size));
    e.extend_from_slice(&0i64.to_le_bytes());
    e.extend_from_slice(&0i64.to_le_bytes());
    e.extend(varint(1));
    e.extend(varint(chunk_count_field));
    e
}

#[test]
fn a_corrupted_snapshot_is_an_error_never_a_panic() {
    let (dir, snap) = sample_snapshot();
    let good = snap.encode();
    assert!(Tree::decode(&good).is_ok());

    // Every single-bit flip and every truncation is caught.
    for i in 0..good.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = good.clone();
            bad[i] ^= bit;
            corrupt(&bad);
        }
    }
    for len in 0..good.len() {
        corrupt(&good[..len]);
    }
    let mut longer = good.clone();
    longer.push(0);
    corrupt(&longer);

    // Garbage, empty, and a wrong magic.
    corrupt(b"");
    corrupt(&[0u8; 4096]);
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for len in [1usize, 60, 61, 100, 5000] {
        let garbage: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        corrupt(&garbage);
        let mut with_magic = b"SKYSNAP\0".to_vec();
        with_magic.extend_from_slice(&garbage);
        corrupt(&with_magic);
        corrupt(&seal(&with_magic));
    }
    let mut wrong_magic = good[..good.len() - 32].to_vec();
    wrong_magic[..8].copy_from_slice(b"SKYSNAQ\0");
    assert!(corrupt(&seal(&wrong_magic)).contains("not a snapshot"));

    // Damage behind a valid checksum must be caught by the parser.
    let mut v2 = header();
    v2[8..12].copy_from_slice(&2u32.to_le_bytes());
    v2.extend(varint(0));
    assert!(corrupt(&seal(&v2)).contains("version"));
    let mut bad_mode = header();
    *bad_mode.last_mut().unwrap() = 9;
    bad_mode.extend(varint(0));
    corrupt(&seal(&bad_mode));
    for count in [1u64, 1000, u32::MAX as u64, u64::MAX >> 1, u64::MAX] {
        let mut huge = header();
        huge.extend(varint(count));
        huge.extend_from_slice(&[0u8; 64]);
        corrupt(&seal(&huge));
    }
    let mut long_varint = header();
    long_varint.extend_from_slice(&[0xff; 11]);
    corrupt(&seal(&long_varint));
    // A huge chunk count, a huge suffix length, a huge prefix, a bad kind, out-of-order and duplicate paths.
    for chunks in [2u64, 1 << 20, u32::MAX as u64 + 2, u64::MAX] {
        let mut b = header();
        b.extend(varint(1));
        b.extend(file_entry(b"f", 10, chunks));
        corrupt(&seal(&b));
    }
    let mut b = header();
    b.extend(varint(1));
    let mut e = file_entry(b"f", 0, 0);
    e[1] = 0x7f; // suffix length 127, far more than what follows
    b.extend(e);
    corrupt(&seal(&b));
    let mut b = header();
    b.extend(varint(1));
    let mut e = file_entry(b"f", 0, 0);
    e[0] = 5; // shares 5 bytes with a previous path that does not exist
    b.extend(e);
    corrupt(&seal(&b));
    let mut b = header();
    b.extend(varint(1));
    let mut e = file_entry(b"f", 0, 0);
    e[3] = 9; // kind
    b.extend(e);
    corrupt(&seal(&b));
    for (first, second) in [(&b"b"[..], &b"a"[..]), (b"a", b"a")] {
        let mut b = header();
        b.extend(varint(2));
        b.extend(file_entry(first, 0, 0));
        b.extend(file_entry(second, 0, 0));
        corrupt(&seal(&b));
    }
    let mut b = header();
    b.extend(varint(1));
    b.extend(file_entry(b"", 0, 0));
    corrupt(&seal(&b));
    let mut b = header();
    b.extend(varint(1));
    b.extend(file_entry(b"a\0b", 0, 0));
    corrupt(&seal(&b));
    // A recipe that does not add up to the file size.
    let mut b = header();
    b.extend(varint(1));
    b.extend(file_entry(b"f", 10, 2));
    b.extend_from_slice(&[0u8; 32]);
    b.extend(varint(9));
    corrupt(&seal(&b));
    // The hand-built entries are well-formed when not damaged.
    let mut b = header();
    b.extend(varint(2));
    b.extend(file_entry(b"a", 0, 0));
    b.extend(file_entry(b"b", 10, 2));
    b.extend_from_slice(&[0u8; 32]);
    b.extend(varint(10));
    let ok = Tree::decode(&seal(&b)).expect("hand-built snapshot");
    assert_eq!(ok.recipe_of(1).unwrap().size, 10);

    // Random damage behind a valid checksum: an error or a well-formed snapshot, never a panic.
    let body = &good[..good.len() - 32];
    for round in 0..20_000 {
        let mut bad = body.to_vec();
        let edits = 1 + (next() % 4) as usize;
        for _ in 0..edits {
            let at = 8 + (next() as usize % (bad.len() - 8));
            match next() % 4 {
                0 => bad[at] = next() as u8,
                1 => bad[at] ^= 1 << (next() % 8),
                2 => bad.truncate(at.max(9)),
                _ => bad.insert(at, next() as u8),
            }
        }
        let result = std::panic::catch_unwind(|| Tree::decode(&seal(&bad)).map(|s| s.encode()));
        match result {
            Err(_) => panic!("decode panicked on round {round}: {:?}", bad),
            Ok(Ok(re)) => assert!(Tree::decode(&re).is_ok(), "a decoded snapshot re-encodes"),
            Ok(Err(LoadError::Corrupt(_))) => {}
            Ok(Err(e)) => panic!("unexpected error {e}"),
        }
    }

    // Through the file API: a damaged file is a Corrupt error, a missing one is an Io error.
    let file = dir.path().join("snap.bin");
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0x10;
    fs::write(&file, &bad).unwrap();
    assert!(matches!(Tree::load(&file), Err(LoadError::Corrupt(_))));
    assert!(matches!(Tree::load(&dir.path().join("missing")), Err(LoadError::Io(_))));
}

// ---------------------------------------------------------------------------------------------------------------
// unreadable entries, checked as an unprivileged user

const NOBODY: &str = "65534";

/// Runs `test` of this binary as uid/gid 65534 with `env`; None (with the reason printed) when that is impossible.
fn run_unprivileged(test: &str, scratch: &Path, env: &[(&str, &OsStr)]) -> Option<std::process::Output> {
    if unsafe { libc::geteuid() } != 0 {
        // Already unprivileged: run in-process semantics by re-executing without setpriv.
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", test, "--include-ignored", "--nocapture", "--test-threads=1"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        return Some(cmd.output().unwrap());
    }
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].into_iter().find(|p| Path::new(p).exists());
    let Some(setpriv) = setpriv else {
        eprintln!("SKIPPED: running as root and setpriv is not installed; permissions cannot be tested");
        return None;
    };
    // The test binary may live where the unprivileged user cannot reach it: run a copy from the scratch dir.
    let exe = scratch.join("scan-test-bin");
    fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = Command::new(setpriv);
    cmd.args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"])
        .arg(&exe)
        .args(["--exact", test, "--include-ignored", "--nocapture", "--test-threads=1"])
        .env("HOME", scratch);
    for (k, v) in env {
        cmd.env(k, v);
    }
    match cmd.output() {
        Ok(out) if out.status.code() == Some(126) || out.status.code() == Some(127) => {
            eprintln!("SKIPPED: setpriv could not run the test binary: {}", String::from_utf8_lossy(&out.stderr));
            None
        }
        Ok(out) => {
            if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("setpriv:") {
                eprintln!("SKIPPED: setpriv failed: {}", String::from_utf8_lossy(&out.stderr));
                return None;
            }
            Some(out)
        }
        Err(e) => {
            eprintln!("SKIPPED: cannot run setpriv: {e}");
            None
        }
    }
}

#[test]
fn unreadable_entries_are_reported_and_carried_not_deleted() {
    let scratch = tempfile::Builder::new().prefix("skysync-perm-").tempdir_in("/tmp").unwrap();
    fs::set_permissions(scratch.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let root = scratch.path().join("tree");
    for (rel, data) in [
        (&b"open/a"[..], &b"a"[..]),
        (b"locked/x", b"x"),
        (b"locked/sub/y", b"y"),
        (b"noexec/z", b"z"),
        (b"noexec/zdir/w", b"w"),
        (b"secret-file", b"s"),
        (b"later", b"l"),
    ] {
        write(&root, rel, data);
        age(&root, rel);
    }
    // Everything readable by the unprivileged user to start with (tempfile makes 0700 dirs).
    for d in ["", "open", "locked", "locked/sub", "noexec", "noexec/zdir"] {
        fs::set_permissions(root.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let snap = synced(&root);
    let snap_file = scratch.path().join("prev.snap");
    snap.save(&snap_file).unwrap();
    fs::set_permissions(&snap_file, fs::Permissions::from_mode(0o644)).unwrap();
    // Now: `locked` cannot be listed, `noexec` can be listed but its entries cannot be stat'ed, `secret-file`
    // cannot be read, and `later` is really deleted.
    fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(root.join("noexec"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(root.join("secret-file"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::remove_file(root.join("later")).unwrap();
    let out = run_unprivileged(
        "child_unreadable",
        scratch.path(),
        &[
            ("SKYSYNC_TEST_CHILD", OsStr::new("unreadable")),
            ("SKYSYNC_ROOT", root.as_os_str()),
            ("SKYSYNC_SNAP", snap_file.as_os_str()),
        ],
    );
    for d in ["locked", "noexec"] {
        fs::set_permissions(root.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let Some(out) = out else { return };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the unprivileged check failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("child_unreadable ... ok"), "the child test did not run:\n{stdout}\n{stderr}");
}

#[test]
#[ignore = "child process of unreadable_entries_are_reported_and_carried_not_deleted"]
fn child_unreadable() {
    if std::env::var("SKYSYNC_TEST_CHILD").as_deref() != Ok("unreadable") {
        return;
    }
    assert_ne!(unsafe { libc::geteuid() }, 0, "the child must not run as root");
    let root = PathBuf::from(std::env::var_os("SKYSYNC_ROOT").unwrap());
    let prev = Tree::load(Path::new(&std::env::var_os("SKYSYNC_SNAP").unwrap())).unwrap();
    let out = scan(&root);
    let warned: Vec<(Vec<u8>, WarningKind)> = out.warnings.iter().map(|w| (w.path.clone(), w.kind.clone())).collect();
    eprintln!("warnings: {:?}", out.warnings);
    assert!(warned.contains(&(b"locked".to_vec(), WarningKind::Unreadable)), "{warned:?}");
    assert!(warned.iter().any(|(p, k)| p.starts_with(b"noexec/") && *k == WarningKind::Unreadable), "{warned:?}");
    assert!(out.unreadable_dirs.contains(&b"locked".to_vec()), "{:?}", out.unreadable_dirs);
    // The directory itself is listed; what is under it is unknown, not gone.
    assert_eq!(kind_of(&out, b"locked"), Some(Kind::Dir));
    let (next, got) = changes(&prev, out);
    // Mode changes are changes; the only deletion reported is the real one.
    let want: Vec<(Vec<u8>, ChangeKind)> = vec![
        (b"later".to_vec(), ChangeKind::Deleted),
        (b"locked".to_vec(), ChangeKind::Modified),
        (b"noexec".to_vec(), ChangeKind::Modified),
        (b"secret-file".to_vec(), ChangeKind::Modified),
    ];
    assert_eq!(got.into_iter().collect::<Vec<_>>(), want);
    for rel in [&b"locked/x"[..], b"locked/sub", b"locked/sub/y", b"noexec/z", b"noexec/zdir", b"noexec/zdir/w"] {
        let i = next.find(rel).unwrap_or_else(|| panic!("{} not carried over", show(rel)));
        let j = prev.find(rel).unwrap();
        assert_eq!(next.entry(i), prev.entry(j));
        assert_eq!(next.recipe_of(i), prev.recipe_of(j), "{} lost its recipe", show(rel));
    }
    // A file that cannot be read is listed by the scan and fails when chunked, with the cause.
    let i = next.find(b"secret-file").expect("an unreadable file is still listed");
    assert_eq!(next.entry(i).meta.mode, 0o000);
    let err = chunk_file(&root.join("secret-file"), DEFAULT_PARAMS).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
}

/// What the remote did not take is forgotten, whatever its kind, and the next compare reports it again: a symlink
/// or a directory has no recipe to drop, and a forgotten one that still compared unchanged was never sent again
/// (push-property seed 579985614: a symlink blocked by a job's directory stayed missing once the way was clear).
/// The mark survives a save and a load, as the client forgets in its saved tree.
#[test]
fn forgotten_entries_of_every_kind_are_reported_again() {
    let dir = tempdir();
    let root = dir.path();
    write(root, b"f", b"file");
    write(root, b"d/inner", b"inner");
    symlink(root, b"link", b"../x");
    write(root, b"kept", b"kept");
    for rel in [&b"f"[..], b"d/inner", b"kept"] {
        age(root, rel);
    }
    let forgotten: [&[u8]; 3] = [b"d", b"f", b"link"];
    let snap = Tree::decode(&forget_each(synced(root), &forgotten).encode()).unwrap();
    let (mut next, got) = changes(&snap, scan(root));
    assert_eq!(got, all_modified(&forgotten));
    // Recorded again from this scan (the file chunked again), they compare unchanged from then on.
    record_recipes(root, &mut next);
    let (_, again) = changes(&next, scan(root));
    assert!(again.is_empty(), "{again:?}");
}

/// A partial scan (the watch service saw nothing change) still compares what the previous tree forgot: it lists
/// their parents again rather than carry them over as recorded.
#[test]
fn a_partial_scan_lists_the_parents_of_forgotten_entries() {
    let dir = tempdir();
    let root = dir.path();
    write(root, b"sub/f", b"file");
    symlink(root, b"sub/link", b"../x");
    write(root, b"sub/d/inner", b"inner");
    write(root, b"top", b"top");
    age(root, b"sub/f");
    age(root, b"sub/d/inner");
    age(root, b"top");
    let forgotten: [&[u8]; 2] = [b"sub/d", b"sub/link"];
    let snap = forget_each(synced(root), &forgotten);
    let out = skysync_core::scan::scan_tree_partial(root, &snap, &[], &[]).unwrap();
    let (_, got) = changes(&snap, out);
    assert_eq!(got, all_modified(&forgotten));
}

fn forget_each(mut snap: Tree, rels: &[&[u8]]) -> Tree {
    for rel in rels {
        let i = snap.find(rel).unwrap();
        snap.forget(i);
    }
    snap
}

fn all_modified(rels: &[&[u8]]) -> BTreeMap<Vec<u8>, ChangeKind> {
    rels.iter().map(|p| (p.to_vec(), ChangeKind::Modified)).collect()
}
