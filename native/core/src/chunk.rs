//! Content-defined chunking (FastCDC v2020) and BLAKE3 ids.
//!
//! A file's recipe is its ordered list of chunks. The whole-file digest is a BLAKE3 hash over the recipe
//! (a fixed prefix, then each chunk id followed by its length as u32 little endian), not a second pass over the bytes: the chunk ids already commit to
//! every byte, and a second full hash would halve throughput. The agent checks a rebuilt file against it.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use fastcdc::v2020::{FastCDC, Normalization};
use rayon::prelude::*;

pub mod parallel;

pub type ChunkId = [u8; 32];

/// Chunking parameters. They are part of the protocol: both sides must cut at the same places, so they are
/// recorded in every tree file and manifest and checked in the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

/// Chosen on the bench (bench/core.mjs): 16 KiB average keeps a 1-byte insert under ~50 KiB of literal data
/// while BLAKE3 still runs at full SIMD width per chunk. See docs/ARCHITECTURE.md.
pub const DEFAULT_PARAMS: ChunkParams = ChunkParams { min_size: 4 * 1024, avg_size: 16 * 1024, max_size: 64 * 1024 };

impl ChunkParams {
    pub fn validate(&self) -> Result<(), String> {
        let ok = self.min_size as usize >= fastcdc::v2020::MINIMUM_MIN
            && self.min_size as usize <= fastcdc::v2020::MINIMUM_MAX
            && self.avg_size as usize >= fastcdc::v2020::AVERAGE_MIN
            && self.avg_size as usize <= fastcdc::v2020::AVERAGE_MAX
            && self.max_size as usize >= fastcdc::v2020::MAXIMUM_MIN
            && self.max_size as usize <= fastcdc::v2020::MAXIMUM_MAX
            && self.min_size <= self.avg_size
            && self.avg_size <= self.max_size
            // FastCDC starts looking at min/2*2 and picks its mask from the average rounded to a power of two:
            // anything else would record parameters the chunker does not actually use.
            && self.min_size.is_multiple_of(2)
            && self.avg_size.is_power_of_two();
        if ok {
            Ok(())
        } else {
            Err(format!(
                "invalid chunk parameters min={} avg={} max={}: need an even min in 64..=1MiB, a power-of-two avg in 256..=4MiB, max in 1KiB..=16MiB, and min<=avg<=max",
                self.min_size, self.avg_size, self.max_size
            ))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u32,
}

/// A chunk ref packed as it crosses into JavaScript and onto the wire: the id, then the length as u32 LE. The
/// TypeScript side's copy is `CHUNK_REF` in packages/chunking/src/layouts.ts, checked against this by a test.
pub mod chunk_ref {
    pub const SIZE: usize = 36;
    pub const ID: usize = 0;
    pub const ID_SIZE: usize = 32;
    pub const LEN: usize = 32;
}

impl ChunkRef {
    /// The ref in `packed[..chunk_ref::SIZE]`; the caller passes at least that many bytes.
    pub fn unpack(packed: &[u8]) -> ChunkRef {
        use chunk_ref::{ID, ID_SIZE, LEN};
        let mut id = [0u8; ID_SIZE];
        id.copy_from_slice(&packed[ID..ID + ID_SIZE]);
        ChunkRef { id, len: u32::from_le_bytes([packed[LEN], packed[LEN + 1], packed[LEN + 2], packed[LEN + 3]]) }
    }
}

/// Packs refs one after another, `chunk_ref::SIZE` bytes each.
pub fn pack_refs(chunks: &[ChunkRef]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.len() * chunk_ref::SIZE);
    for c in chunks {
        out.extend_from_slice(&c.id);
        out.extend_from_slice(&c.len.to_le_bytes());
    }
    out
}

/// The refs of a packed list, or None when its length is not a whole number of refs.
pub fn unpack_refs(packed: &[u8]) -> Option<Vec<ChunkRef>> {
    if !packed.len().is_multiple_of(chunk_ref::SIZE) {
        return None;
    }
    Some(packed.chunks_exact(chunk_ref::SIZE).map(ChunkRef::unpack).collect())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipe {
    pub size: u64,
    pub digest: ChunkId,
    pub chunks: Vec<ChunkRef>,
}

/// Domain separation: a file digest can never equal a chunk id of the same bytes.
const DIGEST_PREFIX: &[u8] = b"skysync file digest v1\0";

pub fn chunk_id(data: &[u8]) -> ChunkId {
    *blake3::hash(data).as_bytes()
}

/// The whole-file digest over a recipe.
pub fn recipe_digest(chunks: &[ChunkRef]) -> ChunkId {
    let mut h = blake3::Hasher::new();
    h.update(DIGEST_PREFIX);
    for c in chunks {
        h.update(&c.id);
        h.update(&c.len.to_le_bytes());
    }
    *h.finalize().as_bytes()
}

/// Cut points of a whole in-memory buffer, as chunk lengths.
pub fn cut_points(data: &[u8], params: ChunkParams) -> Vec<usize> {
    let cdc = FastCDC::with_level(
        data,
        params.min_size as usize,
        params.avg_size as usize,
        params.max_size as usize,
        Normalization::Level1,
    );
    cdc.map(|c| c.length).collect()
}

pub fn chunk_bytes(data: &[u8], params: ChunkParams) -> Recipe {
    let mut chunks = Vec::new();
    let mut offset = 0;
    for len in cut_points(data, params) {
        chunks.push(ChunkRef { id: chunk_id(&data[offset..offset + len]), len: len as u32 });
        offset += len;
    }
    Recipe { size: data.len() as u64, digest: recipe_digest(&chunks), chunks }
}

/// Checks consecutive chunks of `data` against packed refs (32-byte id, u32 LE length each). Returns the index
/// of the first chunk that does not match (or does not fit), or None when all match.
pub fn verify_chunks(data: &[u8], refs: &[u8]) -> Option<usize> {
    if !refs.len().is_multiple_of(chunk_ref::SIZE) {
        return Some(0);
    }
    let mut spans = Vec::with_capacity(refs.len() / chunk_ref::SIZE);
    let mut offset = 0usize;
    for r in refs.chunks_exact(chunk_ref::SIZE) {
        let len = ChunkRef::unpack(r).len as usize;
        spans.push((offset, len, &r[chunk_ref::ID..chunk_ref::ID + chunk_ref::ID_SIZE]));
        offset += len;
    }
    if offset != data.len() {
        return Some(spans.iter().position(|&(o, l, _)| o + l > data.len()).unwrap_or(spans.len().saturating_sub(1)));
    }
    let bad = |&(o, l, id): &(usize, usize, &[u8])| chunk_id(&data[o..o + l])[..] != *id;
    if spans.len() > 4 {
        spans.par_iter().position_first(bad)
    } else {
        spans.iter().position(bad)
    }
}

/// Buffer for streaming: large enough that rayon can hash many chunks of one window in parallel, small enough
/// that memory stays bounded per file in flight.
pub(crate) const WINDOW: usize = 8 * 1024 * 1024;

/// One window's worth of work: the buffer, how much of it is data, and the chunks found in it.
struct Window {
    buf: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

/// Streams a reader through the chunker with a bounded window. Cut points are identical to chunking the whole
/// input at once because FastCDC never looks further than `max_size` past the chunk start, and the window always
/// holds at least `max_size` bytes ahead unless the input has ended.
///
/// Reading and cutting (sequential by nature) run on their own thread, one window ahead of the hashing (parallel
/// across the chunks of a window): a large file is cut and hashed at the same time. Two windows of memory.
pub fn chunk_reader<R: Read + Send>(mut reader: R, params: ChunkParams) -> io::Result<Recipe> {
    let max = params.max_size as usize;
    let window = WINDOW.max(4 * max);
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Window>(1);
    let (free_tx, free_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
    let mut chunks: Vec<ChunkRef> = Vec::new();
    let mut size = 0u64;
    let produced = std::thread::scope(|scope| -> io::Result<()> {
        let producer = scope.spawn(move || -> io::Result<()> {
            let mut carry: Vec<u8> = Vec::new();
            let mut eof = false;
            loop {
                let mut buf = free_rx.try_recv().unwrap_or_else(|_| vec![0u8; window]);
                buf[..carry.len()].copy_from_slice(&carry);
                let mut filled = carry.len();
                while !eof && filled < window {
                    match reader.read(&mut buf[filled..]) {
                        Ok(0) => eof = true,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                // Every cut that is final given what is buffered.
                let mut spans = Vec::new();
                let cdc = FastCDC::with_level(
                    &buf[..filled],
                    params.min_size as usize,
                    params.avg_size as usize,
                    max,
                    Normalization::Level1,
                );
                let mut start = 0usize;
                while start < filled {
                    let remaining = filled - start;
                    if !eof && remaining < max {
                        break;
                    }
                    let (_, end) = cdc.cut(start, remaining);
                    spans.push((start, end - start));
                    start = end;
                }
                carry.clear();
                carry.extend_from_slice(&buf[start..filled]);
                let done = eof && carry.is_empty();
                if full_tx.send(Window { buf, spans }).is_err() || done {
                    return Ok(());
                }
            }
        });
        for w in full_rx.iter() {
            let hashed: Vec<ChunkRef> = if w.spans.len() > 4 {
                w.spans.par_iter().map(|&(s, l)| ChunkRef { id: chunk_id(&w.buf[s..s + l]), len: l as u32 }).collect()
            } else {
                w.spans.iter().map(|&(s, l)| ChunkRef { id: chunk_id(&w.buf[s..s + l]), len: l as u32 }).collect()
            };
            size += w.spans.iter().map(|&(_, l)| l as u64).sum::<u64>();
            chunks.extend(hashed);
            let _ = free_tx.try_send(w.buf);
        }
        producer.join().unwrap_or_else(|_| Err(io::Error::other("chunking thread panicked")))
    });
    produced?;
    Ok(Recipe { size, digest: recipe_digest(&chunks), chunks })
}

pub fn chunk_file(path: &Path, params: ChunkParams) -> io::Result<Recipe> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    chunk_open_file(file, len, params)
}

/// `len` only picks the strategy: the file is read to its end whatever its size turns out to be.
pub(crate) fn chunk_open_file(mut file: File, len: u64, params: ChunkParams) -> io::Result<Recipe> {
    // Most files are small: read them whole instead of zeroing a streaming window for each one.
    if len <= (WINDOW / 2) as u64 {
        let mut data = Vec::with_capacity(len as usize + 1);
        file.read_to_end(&mut data)?;
        return Ok(chunk_bytes(&data, params));
    }
    parallel::chunk_file_parallel(&file, len, params)
}

/// Chunks many files in parallel. Results keep the input order.
pub fn chunk_files(paths: &[std::path::PathBuf], params: ChunkParams) -> Vec<io::Result<Recipe>> {
    paths.par_iter().map(|p| chunk_file(p, params)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            out.extend_from_slice(&seed.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// A reader that hands out a few bytes at a time, to push the window logic through short reads.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(out.len()).min(self.0.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn streaming_matches_whole_buffer() {
        for (len, seed) in [(0usize, 1u64), (1, 2), (4095, 3), (70_000, 4), (20 * 1024 * 1024 + 17, 5)] {
            let data = pseudo_random(len, seed);
            let whole = chunk_bytes(&data, DEFAULT_PARAMS);
            let streamed = chunk_reader(&data[..], DEFAULT_PARAMS).unwrap();
            assert_eq!(whole, streamed, "len {len}");
            let trickled = chunk_reader(Trickle(&data, 1000 + len % 777), DEFAULT_PARAMS).unwrap();
            assert_eq!(whole, trickled, "trickled len {len}");
            assert_eq!(whole.chunks.iter().map(|c| c.len as u64).sum::<u64>(), len as u64);
        }
    }

    #[test]
    fn chunk_sizes_respect_bounds() {
        let data = pseudo_random(8 * 1024 * 1024, 9);
        let r = chunk_bytes(&data, DEFAULT_PARAMS);
        let n = r.chunks.len();
        for (i, c) in r.chunks.iter().enumerate() {
            assert!(c.len <= DEFAULT_PARAMS.max_size);
            if i + 1 < n {
                assert!(c.len >= DEFAULT_PARAMS.min_size);
            }
        }
        let avg = data.len() / n;
        assert!(avg > 8 * 1024 && avg < 32 * 1024, "average {avg}");
    }

    #[test]
    fn insert_moves_only_nearby_chunks() {
        let data = pseudo_random(4 * 1024 * 1024, 11);
        let mut edited = data.clone();
        edited.insert(2 * 1024 * 1024, 0x42);
        let a = chunk_bytes(&data, DEFAULT_PARAMS);
        let b = chunk_bytes(&edited, DEFAULT_PARAMS);
        let old: std::collections::HashSet<_> = a.chunks.iter().map(|c| c.id).collect();
        let new_bytes: u64 = b.chunks.iter().filter(|c| !old.contains(&c.id)).map(|c| c.len as u64).sum();
        assert!(new_bytes <= 3 * DEFAULT_PARAMS.max_size as u64, "{new_bytes} new bytes");
        assert_ne!(a.digest, b.digest);
    }

    #[test]
    fn digest_depends_on_order() {
        let a = ChunkRef { id: [1; 32], len: 5 };
        let b = ChunkRef { id: [2; 32], len: 5 };
        assert_ne!(recipe_digest(&[a, b]), recipe_digest(&[b, a]));
    }

    #[test]
    fn verify_finds_the_first_bad_chunk() {
        let data = pseudo_random(300_000, 7);
        let recipe = chunk_bytes(&data, DEFAULT_PARAMS);
        let mut refs = Vec::new();
        for c in &recipe.chunks {
            refs.extend_from_slice(&c.id);
            refs.extend_from_slice(&c.len.to_le_bytes());
        }
        assert_eq!(verify_chunks(&data, &refs), None);
        let mut bad = data.clone();
        let second = recipe.chunks[0].len as usize + 5;
        bad[second] ^= 1;
        assert_eq!(verify_chunks(&bad, &refs), Some(1));
        assert_eq!(verify_chunks(&data[..data.len() - 1], &refs), Some(recipe.chunks.len() - 1));
    }

    #[test]
    fn params_are_validated() {
        assert!(DEFAULT_PARAMS.validate().is_ok());
        assert!(ChunkParams { min_size: 10, avg_size: 16, max_size: 32 }.validate().is_err());
        assert!(ChunkParams { min_size: 8192, avg_size: 4096, max_size: 65536 }.validate().is_err());
        assert!(ChunkParams { min_size: 65, avg_size: 256, max_size: 1024 }.validate().is_err());
        assert!(ChunkParams { min_size: 1000, avg_size: 3000, max_size: 9000 }.validate().is_err());
    }
}
