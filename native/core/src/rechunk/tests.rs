//! Hinted rechunking against full chunking: random edits, hints that do not belong, edge cases, and the cut rule.

use super::*;
use crate::chunk::{chunk_bytes, DEFAULT_PARAMS};

/// splitmix64: every case derives from one printed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

fn seed() -> u64 {
    match std::env::var("SKYSYNC_SEED") {
        Ok(s) => s.parse().expect("SKYSYNC_SEED must be a u64"),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
    }
}

const SMALL: ChunkParams = ChunkParams { min_size: 64, avg_size: 256, max_size: 1024 };
const MEDIUM: ChunkParams = ChunkParams { min_size: 512, avg_size: 2048, max_size: 8192 };

/// Random bytes, or low-entropy bytes, or blocks that repeat (including zero runs), so that ids repeat too.
fn content(rng: &mut Rng, len: usize) -> Vec<u8> {
    match rng.below(4) {
        0 | 1 => rng.bytes(len),
        2 => rng.bytes(len).into_iter().map(|b| b & 0x03).collect(),
        _ => {
            let n = 1 + rng.below(20_000);
            let block = rng.bytes(n);
            let mut v = Vec::with_capacity(len);
            while v.len() < len {
                match rng.below(3) {
                    0 => v.extend_from_slice(&block),
                    1 => v.resize(v.len() + rng.below(50_000), 0),
                    _ => {
                        let n = rng.below(30_000);
                        v.extend(rng.bytes(n))
                    }
                }
            }
            v.truncate(len);
            v
        }
    }
}

/// Half the time anywhere, otherwise at or next to a cut of the old file: an edit at the first byte after a
/// cut is what a chunk taken without its successor's confirmation would get wrong.
fn place(rng: &mut Rng, len: usize, cuts: &[usize]) -> usize {
    if cuts.is_empty() || rng.below(2) == 0 {
        return rng.below(len + 1);
    }
    let c = cuts[rng.below(cuts.len())] as i64 + rng.below(5) as i64 - 2;
    c.clamp(0, len as i64) as usize
}

fn cuts_of(data: &[u8], params: ChunkParams) -> Vec<usize> {
    chunk_bytes(data, params)
        .chunks
        .iter()
        .scan(0usize, |end, c| {
            *end += c.len as usize;
            Some(*end)
        })
        .collect()
}

fn edit(rng: &mut Rng, old: &[u8], cuts: &[usize]) -> (Vec<u8>, String) {
    let mut v = old.to_vec();
    let what = rng.below(12);
    let name = match what {
        0 => {
            for _ in 0..1 + rng.below(5) {
                let at = place(rng, v.len(), cuts);
                let n = 1 + rng.below(3000);
                let ins = rng.bytes(n);
                v.splice(at..at, ins);
            }
            "insert"
        }
        1 => {
            for _ in 0..1 + rng.below(5) {
                let at = place(rng, v.len(), cuts);
                let end = (at + 1 + rng.below(5000)).min(v.len());
                v.drain(at..end);
            }
            "delete"
        }
        2 => {
            for _ in 0..1 + rng.below(8) {
                if v.is_empty() {
                    break;
                }
                let at = place(rng, v.len() - 1, cuts);
                let n = (1 + rng.below(100)).min(v.len() - at);
                for b in &mut v[at..at + n] {
                    *b ^= 1 + rng.below(255) as u8;
                }
            }
            "overwrite"
        }
        3 => {
            v.truncate(place(rng, v.len(), cuts));
            "truncate"
        }
        4 => {
            let n = 1 + rng.below(100_000);
            v.extend(rng.bytes(n));
            "append"
        }
        5 => {
            let n = 1 + rng.below(100_000);
            let mut p = rng.bytes(n);
            p.extend_from_slice(&v);
            v = p;
            "prepend"
        }
        6 => {
            if v.len() > 2 {
                let a = rng.below(v.len() / 2);
                let b = v.len() / 2 + rng.below(v.len() / 2);
                let n = (1 + rng.below(200_000)).min(v.len() / 2 - a).min(v.len() - b);
                let first = v[a..a + n].to_vec();
                let second = v[b..b + n].to_vec();
                v[a..a + n].copy_from_slice(&second);
                v[b..b + n].copy_from_slice(&first);
            }
            "swap blocks"
        }
        7 => {
            v.clear();
            "empty"
        }
        8 => "unchanged",
        9 => {
            // The last byte only: the old last chunk must not be taken as cut by content.
            if let Some(b) = v.last_mut() {
                *b ^= 0x5a;
            }
            v.push(7);
            "last byte"
        }
        10 => {
            let n = 1 + rng.below(3);
            v.truncate(v.len().saturating_sub(n));
            "drop tail"
        }
        _ => {
            let at = place(rng, v.len(), cuts);
            v.insert(at, rng.next() as u8);
            "one byte"
        }
    };
    (v, name.to_string())
}

fn garbage_hint(rng: &mut Rng, p: ChunkParams) -> Vec<ChunkRef> {
    (0..rng.below(2000))
        .map(|_| {
            let mut id = [0u8; 32];
            id.copy_from_slice(&rng.bytes(32));
            let len = match rng.below(4) {
                0 => rng.next() as u32,
                1 => 0,
                _ => p.min_size + rng.below((p.max_size - p.min_size) as usize + 1) as u32,
            };
            ChunkRef { id, len }
        })
        .collect()
}

fn check(data: &[u8], params: ChunkParams, hint: &[ChunkRef], window: usize, what: &str, seed: u64) {
    let full = chunk_bytes(data, params);
    let hinted = chunk_reader_hinted(data, params, hint, window).unwrap();
    if hinted != full {
        let first = full.chunks.iter().zip(&hinted.chunks).position(|(a, b)| a != b);
        panic!(
            "hinted != full for {what} ({} bytes, params {params:?}, window {window}), first differing chunk {first:?} of {}/{}; rerun with SKYSYNC_SEED={seed}",
            data.len(),
            full.chunks.len(),
            hinted.chunks.len()
        );
    }
}

#[test]
fn hinted_equals_full_on_random_edits() {
    let seed = seed();
    eprintln!("hinted_equals_full_on_random_edits: SKYSYNC_SEED={seed}");
    let mut rng = Rng(seed);
    for case in 0..36 {
        let params = [SMALL, MEDIUM, DEFAULT_PARAMS][case % 3];
        let len = match rng.below(5) {
            0 => rng.below(4096),
            _ => 256 * 1024 + rng.below(5 * 1024 * 1024),
        };
        let old = content(&mut rng, len);
        let hint = chunk_bytes(&old, params).chunks;
        let (new, what) = edit(&mut rng, &old, &cuts_of(&old, params));
        // Small windows push batches and fresh cuts across many refills; the real size covers the default.
        let window = [64 * 1024, 256 * 1024 + rng.below(100_000), 2 * WINDOW][rng.below(3)];
        check(&new, params, &hint, window, &format!("case {case}: {what}"), seed);
        if case % 4 == 0 {
            let (newer, what2) = edit(&mut rng, &new, &cuts_of(&new, params));
            check(&newer, params, &hint, window, &format!("case {case}: {what} then {what2}"), seed);
        }
    }
}

#[test]
fn hints_that_do_not_belong_never_change_the_result() {
    let seed = seed();
    eprintln!("hints_that_do_not_belong_never_change_the_result: SKYSYNC_SEED={seed}");
    let mut rng = Rng(seed);
    for case in 0..18 {
        let params = [SMALL, MEDIUM, DEFAULT_PARAMS][case % 3];
        let n = 128 * 1024 + rng.below(3 * 1024 * 1024);
        let data = content(&mut rng, n);
        let window = [64 * 1024, 2 * WINDOW][rng.below(2)];
        let n = rng.below(2 * 1024 * 1024);
        let unrelated = chunk_bytes(&content(&mut rng, n), params).chunks;
        check(&data, params, &unrelated, window, &format!("case {case}: unrelated file"), seed);
        check(&data, params, &garbage_hint(&mut rng, params), window, &format!("case {case}: garbage"), seed);

        let own = chunk_bytes(&data, params).chunks;
        check(&data, params, &own, window, &format!("case {case}: own recipe"), seed);
        let mut reversed = own.clone();
        reversed.reverse();
        check(&data, params, &reversed, window, &format!("case {case}: reversed"), seed);
        let mut damaged = own.clone();
        for _ in 0..1 + rng.below(10) {
            let i = rng.below(damaged.len());
            match rng.below(3) {
                0 => damaged[i].id[rng.below(32)] ^= 1,
                1 => damaged[i].len = damaged[i].len.wrapping_add(1 + rng.below(100) as u32),
                _ => {
                    damaged.remove(i);
                }
            }
            if damaged.is_empty() {
                break;
            }
        }
        check(&data, params, &damaged, window, &format!("case {case}: damaged own recipe"), seed);
        let mut shuffled = own.clone();
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, rng.below(i + 1));
        }
        check(&data, params, &shuffled, window, &format!("case {case}: shuffled"), seed);
    }
}

#[test]
fn edge_cases() {
    let mut rng = Rng(42);
    let data = rng.bytes(3 * 1024 * 1024);
    let own = chunk_bytes(&data, SMALL).chunks;
    for window in [1, 4096, 64 * 1024, 2 * WINDOW] {
        check(&data, SMALL, &own, window, "own", 42);
        check(&[], SMALL, &own, window, "empty file", 42);
        check(&data[..1], SMALL, &own, window, "one byte", 42);
        check(&data[..own[0].len as usize], SMALL, &own, window, "first chunk only", 42);
        check(&data[..own[0].len as usize + 1], SMALL, &own, window, "first chunk and a byte", 42);
        let two = (own[0].len + own[1].len) as usize;
        check(&data[..two], SMALL, &own, window, "two chunks", 42);
        check(&data[..two + 1], SMALL, &own, window, "two chunks and a byte", 42);
        check(&data[..data.len() - 1], SMALL, &own, window, "all but the last byte", 42);
        check(&data[own[0].len as usize..], SMALL, &own, window, "without the first chunk", 42);
        check(&data, SMALL, &own[..1], window, "only the first old chunk", 42);
        check(&data, SMALL, &[], window, "no hint", 42);
        // A one-byte old last chunk: what confirms the chunk before it is a single byte.
        let short = own[..own.len() - 1].iter().map(|c| c.len as usize).sum::<usize>();
        let mut one_tail = data[..short].to_vec();
        one_tail.push(9);
        let tail_hint = chunk_bytes(&one_tail, SMALL).chunks;
        for n in [short, short + 1, short + 2, short + 1000] {
            let mut d = data[..short].to_vec();
            d.extend(std::iter::repeat_n(9u8, n - short));
            check(&d, SMALL, &tail_hint, window, &format!("one-byte old tail, {n} bytes"), 42);
        }
    }
    let zeros = vec![0u8; 2 * 1024 * 1024];
    let zero_hint = chunk_bytes(&zeros, DEFAULT_PARAMS).chunks;
    let mut z2 = zeros.clone();
    z2.insert(1_000_000, 1);
    check(&z2, DEFAULT_PARAMS, &zero_hint, 2 * WINDOW, "zeros with a byte", 42);
    check(&zeros[..zeros.len() - 5], DEFAULT_PARAMS, &zero_hint, 2 * WINDOW, "zeros shorter", 42);
}
#[test]
fn a_small_edit_is_mostly_confirmed_not_cut() {
    let mut rng = Rng(7);
    for params in [SMALL, DEFAULT_PARAMS] {
        let old = rng.bytes(6 * 1024 * 1024);
        let hint = chunk_bytes(&old, params).chunks;
        let mut new = old.clone();
        new.insert(3 * 1024 * 1024, 1);
        new[100] ^= 1;
        new.truncate(new.len() - 1000);
        for window in [64 * 1024, 2 * WINDOW] {
            let (r, counts) = rechunk_counted(&new[..], params, &hint, window).unwrap();
            assert_eq!(r, chunk_bytes(&new, params));
            // Three edited places, a few chunks each (the last chunk before each edit is cut, not confirmed).
            assert!(counts.cut <= 12 * params.max_size as u64, "{params:?} window {window}: {counts:?}");
            assert_eq!(counts.cut + counts.confirmed, new.len() as u64);
        }
    }
}
#[test]
fn the_cut_rule_agrees_with_the_cutter() {
    let mut rng = Rng(3);
    for params in [SMALL, MEDIUM, DEFAULT_PARAMS, ChunkParams { min_size: 64, avg_size: 256, max_size: 1025 }] {
        let rule = CutRule::new(params);
        for data in
            [rng.bytes(2 * 1024 * 1024), rng.bytes(1024 * 1024).iter().map(|b| b & 1).collect(), vec![0u8; 300_000]]
        {
            let mut start = 0;
            let cuts = chunk_bytes(&data, params).chunks;
            for (i, c) in cuts.iter().enumerate() {
                let d = &data[start..];
                let l = c.len as usize;
                assert!(rule.ends_chunk(d, l, true), "{params:?} chunk {i} of length {l}");
                if i + 1 == cuts.len() {
                    break;
                }
                // Every shorter length the cutter tested was not a cut; with one byte less of input the chunk
                // cannot be told from a cut by the end of the input.
                for p in params.min_size as usize..l {
                    assert!(!rule.ends_chunk(d, p, true), "{params:?} chunk {i}: {p} instead of {l}");
                }
                start += l;
            }
        }
    }
}
