//! Rebuilding a file from runs of chunks held in an old copy: the result is exactly the new bytes, whatever the
//! edits, and a held chunk that changed on disk is caught wherever it lands.

mod common;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use common::Rng;
use skysync_core::chunk::{chunk_bytes, ChunkRef, DEFAULT_PARAMS};
use skysync_core::rebuild::{copy_verified, CopyError, CopyMode};

/// Random edits of `old`: inserts, deletes, overwrites, moved blocks.
fn edit(rng: &mut Rng, old: &[u8]) -> Vec<u8> {
    let mut new = old.to_vec();
    for _ in 0..1 + rng.below(6) {
        let at = rng.below(new.len() + 1);
        match rng.below(4) {
            0 => {
                let n = 1 + rng.below(40_000);
                let bytes = rng.bytes(n);
                new.splice(at..at, bytes);
            }
            1 => {
                let end = (at + 1 + rng.below(100_000)).min(new.len());
                new.drain(at..end);
            }
            2 => {
                let end = (at + 1 + rng.below(50_000)).min(new.len());
                let bytes = rng.bytes(end - at);
                new[at..end].copy_from_slice(&bytes);
            }
            _ => {
                let end = (at + 1 + rng.below(300_000)).min(new.len());
                let moved: Vec<u8> = new.drain(at..end).collect();
                let to = rng.below(new.len() + 1);
                new.splice(to..to, moved);
            }
        }
    }
    new
}

/// What a receiver does: runs of new chunks found back to back in the old file are copied and verified there,
/// the others written as received. Returns the first bad chunk (run start + index) of a copy, if any.
fn rebuild(old: &File, temp: &File, old_bytes: &[u8], new_bytes: &[u8], mode: CopyMode) -> Result<(), CopyError> {
    let mut held: HashMap<[u8; 32], u64> = HashMap::new();
    let mut at = 0u64;
    for c in chunk_bytes(old_bytes, DEFAULT_PARAMS).chunks {
        held.entry(c.id).or_insert(at);
        at += u64::from(c.len);
    }
    let chunks = chunk_bytes(new_bytes, DEFAULT_PARAMS).chunks;
    let mut dst = 0u64;
    let mut i = 0;
    while i < chunks.len() {
        let Some(&src) = held.get(&chunks[i].id) else {
            let len = chunks[i].len as usize;
            temp.write_all_at(&new_bytes[dst as usize..dst as usize + len], dst).unwrap();
            dst += len as u64;
            i += 1;
            continue;
        };
        let mut run: Vec<ChunkRef> = vec![chunks[i]];
        let mut len = u64::from(chunks[i].len);
        while i + run.len() < chunks.len() && held.get(&chunks[i + run.len()].id) == Some(&(src + len)) {
            len += u64::from(chunks[i + run.len()].len);
            run.push(chunks[i + run.len()]);
        }
        copy_verified(old.as_raw_fd(), temp.as_raw_fd(), src, dst, &run, mode)?;
        dst += len;
        i += run.len();
    }
    Ok(())
}

fn temp_file(dir: &std::path::Path, name: &str) -> File {
    OpenOptions::new().read(true).write(true).create_new(true).open(dir.join(name)).unwrap()
}

#[test]
fn random_edits_rebuild_exactly_the_new_bytes() {
    let seed = std::env::var("SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_2026_u64);
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    for case in 0..24 {
        let mode = if case % 3 == 2 { CopyMode::Read } else { CopyMode::Kernel };
        // Past a segment (8 MiB) now and then, so runs are split across threads.
        let size = if case % 4 == 0 { 9 << 20 } else { 1 + rng.below(2 << 20) };
        let old_bytes = rng.bytes(size);
        let new_bytes = edit(&mut rng, &old_bytes);
        let old_path = dir.path().join(format!("old-{case}"));
        fs::write(&old_path, &old_bytes).unwrap();
        let old = File::open(&old_path).unwrap();
        let temp = temp_file(dir.path(), &format!("new-{case}"));
        rebuild(&old, &temp, &old_bytes, &new_bytes, mode).unwrap_or_else(|e| panic!("seed {seed} case {case}: {e:?}"));
        assert!(
            fs::read(dir.path().join(format!("new-{case}"))).unwrap() == new_bytes,
            "seed {seed} case {case} ({mode:?})"
        );
    }
}

#[test]
fn a_byte_flipped_in_the_old_file_is_caught_in_either_mode() {
    let mut rng = Rng::new(7);
    let dir = tempfile::tempdir().unwrap();
    let old_bytes = rng.bytes(12 << 20);
    let chunks = chunk_bytes(&old_bytes, DEFAULT_PARAMS).chunks;
    for (k, mode) in [CopyMode::Kernel, CopyMode::Read].into_iter().enumerate() {
        let old_path = dir.path().join(format!("old-{k}"));
        fs::write(&old_path, &old_bytes).unwrap();
        // Flip a byte inside the chunk that ends up in the second segment, after the recipe was made.
        let victim = chunks.len() * 3 / 4;
        let at: u64 = chunks[..victim].iter().map(|c| u64::from(c.len)).sum::<u64>() + 5;
        let f = OpenOptions::new().write(true).open(&old_path).unwrap();
        f.write_all_at(&[old_bytes[at as usize] ^ 0x40], at).unwrap();
        let old = File::open(&old_path).unwrap();
        let temp = temp_file(dir.path(), &format!("new-{k}"));
        match copy_verified(old.as_raw_fd(), temp.as_raw_fd(), 0, 0, &chunks, mode) {
            Err(CopyError::BadChunk(i)) => assert_eq!(i, victim, "{mode:?}"),
            other => panic!("{mode:?}: expected a bad chunk, got {other:?}"),
        }
    }
}

#[test]
fn a_source_shorter_than_its_run_is_short() {
    let mut rng = Rng::new(11);
    let dir = tempfile::tempdir().unwrap();
    let bytes = rng.bytes(300_000);
    let chunks = chunk_bytes(&bytes, DEFAULT_PARAMS).chunks;
    fs::write(dir.path().join("old"), &bytes[..200_000]).unwrap();
    let old = File::open(dir.path().join("old")).unwrap();
    for (k, mode) in [CopyMode::Kernel, CopyMode::Read].into_iter().enumerate() {
        let temp = temp_file(dir.path(), &format!("new-{k}"));
        let r = copy_verified(old.as_raw_fd(), temp.as_raw_fd(), 0, 0, &chunks, mode);
        assert!(matches!(r, Err(CopyError::Short)), "{mode:?}: {r:?}");
    }
}
