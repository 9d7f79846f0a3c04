//! What the integration tests share. Each file under tests/ is a crate of its own that takes this in with
//! `mod common;`, and uses only part of it.

#![allow(dead_code)]

/// xorshift64*: small and fast, and the same numbers from the same seed on every machine, so that a random test
/// can be replayed from the seed it printed.
pub struct Rng(u64);

impl Rng {
    /// The state must never be zero (xorshift would stay at zero).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n.div_ceil(8)).flat_map(|_| self.next().to_le_bytes()).take(n).collect()
    }
}

/// SKYSYNC_SEED, or one from the clock; printed, so that a failed run can be replayed.
pub fn seed() -> u64 {
    let s =
        std::env::var("SKYSYNC_SEED").map(|s| s.parse().expect("SKYSYNC_SEED must be a u64")).unwrap_or_else(|_| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
    eprintln!("SKYSYNC_SEED={s}");
    s
}
