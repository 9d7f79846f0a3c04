//! `chunk_files_hinted` against `chunk_files` on files on disk: same outcomes, path by path, whatever the hint.
//! The edit-by-edit property tests of the algorithm itself are unit tests in src/rechunk.rs.

use std::fs;
use std::path::PathBuf;

use skysync_core::rechunk::HINT_MIN_SIZE;
use skysync_core::{chunk_files, chunk_files_hinted, ChunkParams, ChunkRef, DEFAULT_PARAMS};

mod common;
use common::{seed, Rng};

fn edited(rng: &mut Rng, old: &[u8]) -> Vec<u8> {
    let mut v = old.to_vec();
    match rng.below(6) {
        0 => {
            let at = rng.below(v.len() + 1);
            v.insert(at, 0x42);
        }
        1 => {
            let at = rng.below(v.len() + 1);
            let end = (at + rng.below(100_000)).min(v.len());
            v.drain(at..end);
        }
        2 => {
            let n = rng.below(200_000);
            v.extend(rng.bytes(n));
        }
        3 => {
            let n = 1 + rng.below(200_000);
            let mut p = rng.bytes(n);
            p.extend_from_slice(&v);
            v = p;
        }
        4 => {
            let at = rng.below(v.len() + 1);
            v.truncate(at);
        }
        _ => {}
    }
    v
}

#[test]
fn hinted_outcomes_equal_plain_outcomes_on_disk() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    for params in [ChunkParams { min_size: 256, avg_size: 1024, max_size: 4096 }, DEFAULT_PARAMS] {
        let mut paths: Vec<PathBuf> = Vec::new();
        let mut hints: Vec<Option<Vec<ChunkRef>>> = Vec::new();
        for i in 0..8 {
            let len = match i {
                0 => 1000,
                1 => HINT_MIN_SIZE as usize,
                _ => HINT_MIN_SIZE as usize + rng.below(6 << 20),
            };
            let old = rng.bytes(len);
            let p = dir.path().join(format!("f{i}"));
            fs::write(&p, &old).unwrap();
            let hint = chunk_files(std::slice::from_ref(&p), params).pop().unwrap().unwrap().chunks;
            fs::write(&p, edited(&mut rng, &old)).unwrap();
            paths.push(p);
            hints.push(match i {
                7 => None,
                6 => Some(Vec::new()),
                _ => Some(hint),
            });
        }
        // A path that cannot be read, and one more path than there are hints.
        paths.push(dir.path().join("missing"));
        hints.push(Some(vec![ChunkRef { id: [7; 32], len: 5000 }]));
        paths.push(paths[2].clone());

        let plain = chunk_files(&paths, params);
        let hinted = chunk_files_hinted(&paths, &hints, params);
        assert_eq!(plain.len(), hinted.len());
        for (i, (a, b)) in plain.iter().zip(&hinted).enumerate() {
            match (a, b) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "path {i} with {params:?}; rerun with SKYSYNC_SEED={seed}"),
                (Err(a), Err(b)) => assert_eq!((a.kind(), a.to_string()), (b.kind(), b.to_string()), "path {i}"),
                _ => panic!("path {i}: {a:?} vs {b:?}; rerun with SKYSYNC_SEED={seed}"),
            }
        }
        assert!(hinted[paths.len() - 2].is_err());
    }
}
