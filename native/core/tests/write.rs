//! The batch writer: every item succeeds or fails on its own, and a failed item leaves nothing behind.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use skysync_core::chunk::{chunk_bytes, DEFAULT_PARAMS};
use skysync_core::write::{rename_files, write_files, WriteError, WriteItem};

fn packed(data: &[u8]) -> (Vec<u8>, [u8; 32]) {
    let r = chunk_bytes(data, DEFAULT_PARAMS);
    let mut out = Vec::new();
    for c in &r.chunks {
        out.extend_from_slice(&c.id);
        out.extend_from_slice(&c.len.to_le_bytes());
    }
    (out, r.digest)
}

fn item<'a>(path: &'a str, data: &'a [u8], refs: &'a [u8], digest: Option<&'a [u8; 32]>) -> WriteItem<'a> {
    WriteItem {
        path: path.as_bytes(),
        data,
        refs,
        digest,
        mode: 0o640,
        mtime_sec: 1_500_000_000,
        mtime_nsec: 123_456_789,
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn writes_files_with_mode_mtime_and_stat() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("a/b")).unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let small = b"hello\n".to_vec();
    let (rb, db) = packed(&big);
    let (rs, ds) = packed(&small);
    let items = vec![
        item("a/b/one.tmp", &big, &rb, Some(&db)),
        item("top.tmp", &small, &rs, Some(&ds)),
        item("a/empty.tmp", b"", b"", None),
    ];
    let out = write_files(root.path(), &items, false);
    assert_eq!(out.len(), 3);
    for (it, r) in items.iter().zip(&out) {
        let w = r.as_ref().unwrap();
        let path = root.path().join(std::str::from_utf8(it.path).unwrap());
        let md = fs::symlink_metadata(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), it.data);
        assert_eq!(md.permissions().mode() & 0o7777, 0o640);
        assert_eq!((md.mtime(), md.mtime_nsec()), (1_500_000_000, 123_456_789));
        assert_eq!((w.ino, w.size), (md.ino(), it.data.len() as u64));
        assert_eq!(w.mtime_ns, 1_500_000_000_123_456_789);
    }
}

#[test]
fn each_failure_is_its_own_and_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("d")).unwrap();
    fs::write(root.path().join("d/taken.tmp"), b"old").unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
    fs::create_dir(outside.path().join("x")).unwrap();
    let data = b"some bytes for a file".to_vec();
    let (refs, digest) = packed(&data);
    let mut wrong_id = refs.clone();
    wrong_id[0] ^= 1;
    let wrong_digest = [7u8; 32];
    let items = vec![
        item("d/taken.tmp", &data, &refs, Some(&digest)),
        item("link/new.tmp", &data, &refs, Some(&digest)),
        item("link/x/new.tmp", &data, &refs, Some(&digest)),
        item("d/badchunk.tmp", &data, &wrong_id, None),
        item("d/baddigest.tmp", &data, &refs, Some(&wrong_digest)),
        item("d/short.tmp", &data[..5], &refs, None),
        item("d/../escape.tmp", &data, &refs, None),
        item("/abs.tmp", &data, &refs, None),
        item("d/good.tmp", &data, &refs, Some(&digest)),
        item("d/taken.tmp/under-a-file.tmp", &data, &refs, Some(&digest)),
        item("link/made/new.tmp", &data, &refs, Some(&digest)),
    ];
    // Missing directories are made, but never through a symlink or a file.
    let out = write_files(root.path(), &items, true);
    assert!(matches!(&out[0], Err(WriteError::Io(_, e)) if e.raw_os_error() == Some(libc::EEXIST)), "{:?}", out[0]);
    assert!(matches!(&out[1], Err(WriteError::Parent(_))), "{:?}", out[1]);
    assert!(matches!(&out[2], Err(WriteError::Parent(_))), "{:?}", out[2]);
    assert!(matches!(&out[3], Err(WriteError::BadChunk(0))), "{:?}", out[3]);
    assert!(matches!(&out[4], Err(WriteError::BadDigest)), "{:?}", out[4]);
    assert!(matches!(&out[5], Err(WriteError::BadChunk(_))), "{:?}", out[5]);
    assert!(matches!(&out[6], Err(WriteError::BadPath)), "{:?}", out[6]);
    assert!(matches!(&out[7], Err(WriteError::BadPath)), "{:?}", out[7]);
    assert!(out[8].is_ok());
    assert!(matches!(&out[9], Err(WriteError::Parent(e)) if e.raw_os_error() == Some(libc::ENOTDIR)), "{:?}", out[9]);
    assert!(matches!(&out[10], Err(WriteError::Parent(_))), "{:?}", out[10]);
    assert_eq!(out[10].as_ref().unwrap_err().kind(), "parent");
    assert_eq!(out[3].as_ref().unwrap_err().to_string(), "received chunk does not match its id");
    assert_eq!(out[4].as_ref().unwrap_err().to_string(), "recipe does not match its digest");
    // The existing file is untouched, the failed ones are gone, nothing went through the symlink.
    assert_eq!(fs::read(root.path().join("d/taken.tmp")).unwrap(), b"old");
    assert_eq!(names(&root.path().join("d")), ["good.tmp", "taken.tmp"]);
    assert_eq!(names(outside.path()), ["x"]);
    assert!(names(&outside.path().join("x")).is_empty());
}

#[test]
fn a_missing_root_fails_every_item() {
    let root = tempfile::tempdir().unwrap();
    let gone = root.path().join("nope");
    let out = write_files(&gone, &[item("f.tmp", b"", b"", None), item("g.tmp", b"", b"", None)], true);
    assert!(out.iter().all(|r| matches!(r, Err(WriteError::Parent(_)))));
}

#[test]
fn many_files_in_many_directories() {
    let root = tempfile::tempdir().unwrap();
    // More directories than one wave holds, in an order that is not sorted, with shared prefixes.
    let mut paths = Vec::new();
    for i in 0..700 {
        let dir = format!("d{}/e{}/f{}", i % 7, i % 50, i % 300);
        if i % 2 == 0 {
            fs::create_dir_all(root.path().join(&dir)).unwrap();
        }
        paths.push(format!("{dir}/file{i}.tmp"));
    }
    let datas: Vec<Vec<u8>> = (0..700).map(|i| format!("content {i}\n").repeat(i % 40).into_bytes()).collect();
    let refs: Vec<(Vec<u8>, [u8; 32])> = datas.iter().map(|d| packed(d)).collect();
    let items: Vec<WriteItem> = (0..700).map(|i| item(&paths[i], &datas[i], &refs[i].0, Some(&refs[i].1))).collect();
    // Without `make_dirs`, only the files whose directories exist.
    let out = write_files(root.path(), &items[..1], false);
    assert!(out[0].is_ok());
    fs::remove_file(root.path().join(&paths[0])).unwrap();
    let out = write_files(root.path(), &items[1..2], false);
    assert!(matches!(&out[0], Err(WriteError::Parent(e)) if e.raw_os_error() == Some(libc::ENOENT)), "{:?}", out[0]);
    let out = write_files(root.path(), &items, true);
    for (i, r) in out.iter().enumerate() {
        assert!(r.is_ok(), "{i}: {r:?}");
        assert_eq!(fs::read(root.path().join(&paths[i])).unwrap(), datas[i]);
    }
}

#[test]
fn renames_in_parallel_and_refuses_symlinked_parents() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("a/b")).unwrap();
    fs::create_dir(root.path().join("full")).unwrap();
    fs::write(root.path().join("full/inside"), b"").unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
    for n in ["t1", "t2", "t3", "t4", "a/b/t5"] {
        fs::write(root.path().join(n), n).unwrap();
    }
    let pairs: Vec<(&[u8], &[u8])> = vec![
        (b"t1", b"a/one"),
        (b"a/b/t5", b"a/b/five"),
        (b"t2", b"link/two"),
        (b"t3", b"full"),
        (b"missing", b"a/x"),
        (b"t4", b"../t4"),
    ];
    let out = rename_files(root.path(), &pairs);
    assert!(out[0].is_ok() && out[1].is_ok(), "{out:?}");
    assert!(matches!(&out[2], Err(WriteError::Parent(_))), "{:?}", out[2]);
    assert!(out[3].as_ref().is_err_and(|e| e.errno() == Some(libc::EISDIR)), "{:?}", out[3]);
    assert!(out[4].as_ref().is_err_and(|e| e.errno() == Some(libc::ENOENT)), "{:?}", out[4]);
    assert!(matches!(&out[5], Err(WriteError::BadPath)), "{:?}", out[5]);
    assert_eq!(fs::read(root.path().join("a/one")).unwrap(), b"t1");
    assert_eq!(fs::read(root.path().join("a/b/five")).unwrap(), b"a/b/t5");
    assert!(names(outside.path()).is_empty());
    assert_eq!(names(root.path()), ["a", "full", "link", "t2", "t3", "t4"]);
}
