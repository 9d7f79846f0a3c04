//! Segmented chunking (src/chunk/parallel.rs) against the single pass: the same cut points and ids for random
//! data, random segment boundaries and read sizes, and data built to resist resynchronisation (runs of zeros
//! longer than a segment, sizes around the maximum chunk).

use std::fs;

use skysync_core::chunk::parallel::{chunk_segmented, segment_starts};
use skysync_core::{chunk_bytes, chunk_file, ChunkParams, Recipe, DEFAULT_PARAMS};

mod common;
use common::{seed, Rng};

const SMALL: ChunkParams = ChunkParams { min_size: 256, avg_size: 1024, max_size: 4096 };

/// Random bytes, zero runs, low-entropy stretches and repeats, mixed.
fn data(rng: &mut Rng, len: usize, max: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        let room = len - v.len();
        let n = match rng.below(4) {
            0 => 1 + rng.below(8 * max),
            1 => max - 2 + rng.below(5),
            _ => 1 + rng.below(room),
        }
        .min(room);
        match rng.below(5) {
            0 => v.resize(v.len() + n, 0),
            1 => v.extend(rng.bytes(n).iter().map(|b| b & 1)),
            2 if v.len() >= n => {
                let at = rng.below(v.len() - n + 1);
                v.extend_from_within(at..at + n)
            }
            _ => v.extend(rng.bytes(n)),
        }
    }
    v
}

fn starts(rng: &mut Rng, len: usize) -> Vec<u64> {
    let mut s: Vec<u64> = (0..rng.below(12)).map(|_| rng.below(len + 1) as u64).collect();
    s.push(0);
    s.sort_unstable();
    s
}

fn assert_same(single: &Recipe, got: &Recipe, what: &str) {
    let lens = |r: &Recipe| r.chunks.iter().map(|c| c.len).collect::<Vec<_>>();
    assert_eq!(lens(single), lens(got), "cut points differ: {what}");
    assert_eq!(single, got, "ids or digest differ: {what}");
}

#[test]
fn segmented_equals_single_pass_in_memory() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    for round in 0..300 {
        let params = if round % 3 == 0 { DEFAULT_PARAMS } else { SMALL };
        let max = params.max_size as usize;
        let len = match rng.below(4) {
            0 => rng.below(3 * max),
            1 => max * (1 + rng.below(4)) + rng.below(5) - 2,
            _ => rng.below(if params == SMALL { 400_000 } else { 3_000_000 }),
        };
        let bytes = data(&mut rng, len, max);
        let starts = starts(&mut rng, len);
        let any = 1 + rng.below(300_000);
        let block = *rng.pick(&[1, 100, max - 1, max, any, 2 << 20]);
        let single = chunk_bytes(&bytes, params);
        let got = chunk_segmented(&bytes[..], params, &starts, len as u64, block).unwrap();
        assert_same(&single, &got, &format!("seed {seed} round {round} len {len} starts {starts:?} block {block}"));
    }
}

#[test]
fn zero_runs_longer_than_segments_still_give_the_single_pass() {
    let mut rng = Rng::new(seed());
    for params in [SMALL, DEFAULT_PARAMS] {
        let max = params.max_size as usize;
        let mut bytes = rng.bytes(3 * max + 17);
        bytes.resize(bytes.len() + 40 * max + 5, 0);
        bytes.extend(rng.bytes(5 * max));
        bytes.resize(bytes.len() + 7 * max, 0);
        let len = bytes.len();
        let starts: Vec<u64> = (0..16).map(|i| (i * len / 16) as u64).collect();
        let single = chunk_bytes(&bytes, params);
        assert_same(&single, &chunk_segmented(&bytes[..], params, &starts, len as u64, 3 * max).unwrap(), "zeros");
        let zeros = vec![0u8; len];
        let single = chunk_bytes(&zeros, params);
        assert_same(&single, &chunk_segmented(&zeros[..], params, &starts, len as u64, 3 * max).unwrap(), "all zeros");
    }
}

#[test]
fn a_length_that_does_not_match_is_chunked_in_one_pass() {
    let mut rng = Rng::new(seed());
    let bytes = rng.bytes(500_000);
    let single = chunk_bytes(&bytes, SMALL);
    for len in [0u64, 100_000, 499_999, 500_001, 10_000_000] {
        let got = chunk_segmented(&bytes[..], SMALL, &[0, 100_000, 300_000], len, 50_000).unwrap();
        assert_same(&single, &got, &format!("announced {len}"));
    }
}

#[test]
fn large_files_on_disk_equal_the_single_pass() {
    let mut rng = Rng::new(seed());
    let dir = tempfile::tempdir().unwrap();
    for (i, len) in [5usize << 20, 40 << 20, (64 << 20) + 3].into_iter().enumerate() {
        let bytes = data(&mut rng, len, DEFAULT_PARAMS.max_size as usize);
        assert!(segment_starts(len as u64, 2).len() > 1 || len < 8 << 20);
        let path = dir.path().join(format!("f{i}"));
        fs::write(&path, &bytes).unwrap();
        assert_same(
            &chunk_bytes(&bytes, DEFAULT_PARAMS),
            &chunk_file(&path, DEFAULT_PARAMS).unwrap(),
            &format!("file {len}"),
        );
    }
}
