//! The tree's updates, drift checks and encoding, and how recipes carry over, on small trees built by hand.

mod update_tests {
    use crate::entry::Meta;
    use crate::tree::*;

    fn file(p: &str, size: u64) -> Entry {
        Entry::new(p.as_bytes(), Meta { size, mtime_ns: 1, ctime_ns: 2, ino: 3, mode: 0o644, kind: Kind::File }, None)
    }

    fn chunk(n: u8, len: u32) -> ChunkRef {
        ChunkRef { id: [n; 32], len }
    }

    #[test]
    fn update_inserts_replaces_and_removes_in_order() {
        let mut s = Tree::empty(crate::DEFAULT_PARAMS);
        s.update(vec![(file("b", 1), Some(vec![chunk(1, 1)])), (file("a", 2), Some(vec![chunk(2, 2)]))], vec![]);
        s.update(
            vec![(file("c", 3), Some(vec![chunk(3, 3)])), (file("a", 4), Some(vec![chunk(4, 4)]))],
            vec![b"b".to_vec(), b"zzz".to_vec()],
        );
        let paths: Vec<&[u8]> = s.entries().iter().map(|e| e.path()).collect();
        assert_eq!(paths, vec![b"a".as_slice(), b"c".as_slice()]);
        assert_eq!(s.chunks_of(0).unwrap(), &[chunk(4, 4)]);
        assert_eq!(s.chunks_of(1).unwrap(), &[chunk(3, 3)]);
        let again = Tree::decode(&s.encode()).unwrap();
        assert_eq!(again.chunks_of(0).unwrap(), &[chunk(4, 4)]);
        assert_eq!(again.len(), 2);
    }

    #[test]
    fn drift_sees_changed_and_missing_files() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("same"), b"x").unwrap();
        std::fs::write(dir.path().join("edited"), b"y").unwrap();
        let rec = |name: &str| {
            let md = std::fs::symlink_metadata(dir.path().join(name)).unwrap();
            let m = Meta {
                size: md.size(),
                mtime_ns: 0,
                ctime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
                ino: md.ino(),
                mode: 0o644,
                kind: Kind::File,
            };
            (Entry::new(name.as_bytes(), m, None), None)
        };
        let mut s = Tree::empty(crate::DEFAULT_PARAMS);
        let gone = (file("gone", 1), None);
        s.update(vec![rec("same"), rec("edited"), gone], vec![]);
        std::fs::write(dir.path().join("edited"), b"yy").unwrap();
        let drifted: Vec<&[u8]> = s.drift(dir.path()).into_iter().map(|i| s.entries().path(i)).collect();
        assert_eq!(drifted, vec![b"edited".as_slice(), b"gone".as_slice()]);
    }

    #[test]
    fn scoped_drift_checks_only_the_directories_it_is_given() {
        use crate::drift::DriftScope;
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        for d in ["a", "a/deep", "b"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let names = ["top", "a/one", "a/deep/two", "b/three"];
        for n in names {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let rec = |name: &str| {
            let md = std::fs::symlink_metadata(dir.path().join(name)).unwrap();
            let m = Meta {
                size: md.size(),
                mtime_ns: 0,
                ctime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
                ino: md.ino(),
                mode: 0o644,
                kind: Kind::File,
            };
            (Entry::new(name.as_bytes(), m, None), None)
        };
        let mut s = Tree::empty(crate::DEFAULT_PARAMS);
        s.update(names.iter().map(|n| rec(n)).collect(), vec![]);
        // Every file changes; each scope reports exactly the ones it covers.
        for n in names {
            std::fs::write(dir.path().join(n), b"changed").unwrap();
        }
        let paths = |v: Vec<usize>| -> Vec<String> {
            v.into_iter().map(|i| String::from_utf8_lossy(s.entries().path(i)).into_owned()).collect()
        };
        let none: Vec<Vec<u8>> = vec![];
        let only = |dirs: &[&str], subtrees: &[&str]| {
            let d: Vec<Vec<u8>> = dirs.iter().map(|x| x.as_bytes().to_vec()).collect();
            let t: Vec<Vec<u8>> = subtrees.iter().map(|x| x.as_bytes().to_vec()).collect();
            paths(s.drift_in(dir.path(), &DriftScope { dirs: &d, subtrees: &t }))
        };
        assert_eq!(only(&[""], &[]), vec!["top"]);
        assert_eq!(only(&["a"], &[]), vec!["a/one"]);
        assert_eq!(only(&["a/deep", "b"], &[]), vec!["a/deep/two", "b/three"]);
        assert_eq!(only(&[], &["a"]), vec!["a/deep/two", "a/one"]);
        assert_eq!(only(&[], &[""]), paths(s.drift(dir.path())));
        assert!(paths(s.drift_in(dir.path(), &DriftScope { dirs: &none, subtrees: &none })).is_empty());
        // A directory that is gone: what was recorded in it drifted.
        std::fs::remove_dir_all(dir.path().join("b")).unwrap();
        assert_eq!(only(&["b"], &[]), vec!["b/three"]);
    }
}

mod carry_tests {
    use crate::entry::Meta;
    use crate::tree::*;

    fn meta(size: u64) -> Meta {
        Meta { size, mtime_ns: 1, ctime_ns: 2, ino: 3, mode: 0o644, kind: Kind::File }
    }

    fn chunk(n: u8, len: u32) -> ChunkRef {
        ChunkRef { id: [n; 32], len }
    }

    /// A saved and loaded tree of files named after their chunk: what a re-scan starts from.
    fn loaded(files: &[(&str, &[ChunkRef])]) -> Tree {
        let mut s = Tree::empty(crate::DEFAULT_PARAMS);
        let ups = files
            .iter()
            .map(|(p, cs)| {
                (Entry::new(p.as_bytes(), meta(cs.iter().map(|c| c.len as u64).sum()), None), Some(cs.to_vec()))
            })
            .collect();
        s.update(ups, vec![]);
        s.started_ns = 100;
        Tree::decode(&s.encode()).unwrap()
    }

    fn scan_of(prev: &Tree, keep: &[&str]) -> ScanOutput {
        let mut entries = EntryList::new();
        for e in prev.entries().iter().filter(|e| keep.contains(&std::str::from_utf8(e.path()).unwrap())) {
            entries.push_ref(e);
        }
        ScanOutput {
            entries,
            warnings: vec![],
            unreadable_dirs: vec![],
            ignore_mode: IgnoreMode::GitIgnore,
            started_ns: 200,
            ignored: 0,
            dirs_listed: 0,
            partial: false,
        }
    }

    fn recipe(s: &Tree, p: &str) -> Option<Vec<ChunkRef>> {
        s.chunks_of(s.find(p.as_bytes()).unwrap()).map(|c| c.to_vec())
    }

    #[test]
    fn an_unchanged_rescan_shares_the_loaded_recipes_and_both_trees_stay_independent() {
        let (a, b) = ([chunk(1, 5), chunk(2, 6)], [chunk(3, 7)]);
        let mut prev = loaded(&[("a", &a), ("b", &b), ("empty", &[])]);
        let (mut next, changes) = prev.diff(scan_of(&prev, &["a", "b", "empty"]), prev.params);
        assert!(changes.is_empty());
        assert!(Arc::ptr_eq(&next.chunks.base, &prev.chunks.base), "recipes copied, not shared");
        assert_eq!(recipe(&next, "a").unwrap(), a);
        assert_eq!(recipe(&next, "empty").unwrap(), []);
        // Recording on one tree leaves the other as it was.
        assert!(next.set_recipe(next.find(b"a").unwrap(), &[chunk(9, 11)]));
        assert!(prev.set_recipe(prev.find(b"b").unwrap(), &[chunk(8, 7)]));
        assert_eq!(recipe(&next, "a").unwrap(), [chunk(9, 11)]);
        assert_eq!(recipe(&next, "b").unwrap(), b);
        assert_eq!(recipe(&prev, "a").unwrap(), a);
        assert_eq!(recipe(&prev, "b").unwrap(), [chunk(8, 7)]);
        let back = Tree::decode(&next.encode()).unwrap();
        assert_eq!(recipe(&back, "a").unwrap(), [chunk(9, 11)]);
        assert_eq!(recipe(&back, "b").unwrap(), b);
        // A tree with recipes of its own, used as the previous one, passes every recipe on (copied).
        let (third, changes) = next.diff(scan_of(&next, &["a", "b", "empty"]), next.params);
        assert!(changes.is_empty());
        assert!(!Arc::ptr_eq(&third.chunks.base, &next.chunks.base));
        assert_eq!(recipe(&third, "a").unwrap(), [chunk(9, 11)]);
        assert_eq!(recipe(&third, "b").unwrap(), b);
        assert_eq!(recipe(&third, "empty").unwrap(), []);
    }

    #[test]
    fn recipes_are_copied_when_most_of_the_previous_ones_are_gone() {
        let big: Vec<ChunkRef> = (0..10).map(|i| chunk(i, 1)).collect();
        let prev = loaded(&[("big", &big), ("empty", &[]), ("small", &[chunk(20, 3)])]);
        let (next, changes) = prev.diff(scan_of(&prev, &["empty", "small"]), prev.params);
        assert_eq!(changes.len(), 1);
        assert!(!Arc::ptr_eq(&next.chunks.base, &prev.chunks.base));
        assert_eq!(next.chunks.base.len(), 1, "only the live recipe is kept");
        assert_eq!(recipe(&next, "small").unwrap(), [chunk(20, 3)]);
        assert_eq!(recipe(&next, "empty").unwrap(), []);
    }

    #[test]
    fn entries_under_an_unreadable_directory_are_carried_in_order_with_their_recipes() {
        let prev =
            loaded(&[("a", &[chunk(1, 1)]), ("d/x", &[chunk(2, 2)]), ("d/y", &[chunk(3, 3)]), ("z", &[chunk(4, 4)])]);
        let mut scan = scan_of(&prev, &["a", "z"]);
        let mut entries = EntryList::new();
        entries.push_ref(scan.entries.get(0));
        entries.push(b"c", meta(9), None);
        entries.push_ref(scan.entries.get(1));
        scan.entries = entries;
        scan.unreadable_dirs = vec![b"d".to_vec()];
        let (next, changes) = prev.diff(scan, prev.params);
        let paths: Vec<&[u8]> = next.entries().iter().map(|e| e.path()).collect();
        assert_eq!(paths, vec![&b"a"[..], b"c", b"d/x", b"d/y", b"z"]);
        assert_eq!(changes.len(), 1);
        assert_eq!((changes[0].kind, changes[0].index), (ChangeKind::Added, Some(1)));
        assert_eq!(recipe(&next, "d/y").unwrap(), [chunk(3, 3)]);
        assert_eq!(recipe(&next, "z").unwrap(), [chunk(4, 4)]);
        assert_eq!(recipe(&next, "c"), None);
        assert_eq!(next.entry(3), prev.entry(2));
    }

    #[test]
    fn other_chunk_params_carry_no_recipe() {
        let prev = loaded(&[("a", &[chunk(1, 5)])]);
        let params = ChunkParams { min_size: prev.params.min_size * 2, ..prev.params };
        let (next, changes) = prev.diff(scan_of(&prev, &["a"]), params);
        assert_eq!(changes.len(), 1);
        assert_eq!(recipe(&next, "a"), None);
        assert!(next.chunks.base.is_empty());
    }
}
