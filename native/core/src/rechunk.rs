//! Re-chunking a changed file with the recipe it had before as a hint: the same recipe as `chunk_file`, byte
//! for byte, at roughly BLAKE3 speed instead of FastCDC speed where the file did not change.
//!
//! Why it is exact: FastCDC v2020 decides where a chunk ends from the bytes after the chunk's start only (the
//! gear hash restarts at every chunk start, and min/avg/max and the normalization masks count from there). So
//! when the new file, from one of its chunk boundaries on, still holds the bytes of an old chunk, the cutter
//! would cut there again, and one BLAKE3 over those bytes proves it. Two details keep this exact:
//! - The cut at length L is taken on a gear hash that already includes the byte at L (the next chunk's first
//!   byte), and the cutter only reaches that position when the input goes on a little past it. An old chunk is
//!   therefore taken only once the old chunk after it matches too, which pins that byte and that length.
//! - The old recipe's last chunk was cut by the end of the old file, not by its content: it is taken only when
//!   it ends the new file as well.
//!
//! On top of that, the cut at the end of every chunk taken is checked against the new bytes themselves (one gear
//! hash over at most 64 bytes), so a hint made of real chunks for these parameters but reordered, or taken from
//! other files, cannot mislead it either. Everything else is cut afresh from a chunk boundary, exactly as a full
//! pass would. Which old chunk the cursor is expected to be at is only a guess that decides what is tried: it
//! never changes the result, only the speed.
//!
//! Precondition: the hint must come from the same chunk parameters. A hint made with other parameters, or hashes
//! of slices that FastCDC did not cut, can yield a different recipe (still one whose ids and lengths describe
//! the file): only the end of a chunk is checked, not the absence of a cut inside it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use fastcdc::v2020::{FastCDC, Normalization};
use rayon::prelude::*;

use crate::chunk::{chunk_id, chunk_open_file, recipe_digest, ChunkId, ChunkParams, ChunkRef, Recipe, WINDOW};

/// Below this, cutting afresh costs about a millisecond: not worth a hash map of the old recipe.
pub const HINT_MIN_SIZE: u64 = 1024 * 1024;

/// After every miss, speculation restarts with a small batch (a hint that stopped matching wastes little
/// hashing) and doubles while the old chunks keep matching, up to an eighth of the window.
const SPEC_START: usize = 64 * 1024;
/// Fresh cutting grows the same way while none of the chunks it cuts is in the old recipe.
const RUN_STEP: usize = 64 * 1024;

/// Chunks `path` using `hint`, the packed recipe the caller had for it. Same result as
/// [`crate::chunk::chunk_file`]; no hint, an empty one or a small file take the plain path.
pub fn chunk_file_hinted(path: &Path, params: ChunkParams, hint: Option<&[ChunkRef]>) -> io::Result<Recipe> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    match hint {
        Some(hint) if !hint.is_empty() && len >= HINT_MIN_SIZE => rechunk(file, params, hint, 2 * WINDOW),
        _ => chunk_open_file(file, len, params),
    }
}

/// [`crate::chunk::chunk_files`] with an optional previous recipe per path (a missing entry is no hint).
pub fn chunk_files_hinted(
    paths: &[PathBuf],
    hints: &[Option<Vec<ChunkRef>>],
    params: ChunkParams,
) -> Vec<io::Result<Recipe>> {
    paths
        .par_iter()
        .enumerate()
        .map(|(i, p)| chunk_file_hinted(p, params, hints.get(i).and_then(|h| h.as_deref())))
        .collect()
}

/// Streams `reader` through the hinted chunker with a bounded buffer (`window`, or four maximum chunks if that
/// is more). Exposed for tests that need small windows; the result does not depend on the window.
pub fn chunk_reader_hinted<R: Read + Send>(
    reader: R,
    params: ChunkParams,
    hint: &[ChunkRef],
    window: usize,
) -> io::Result<Recipe> {
    rechunk(reader, params, hint, window)
}

fn rechunk<R: Read + Send>(reader: R, params: ChunkParams, hint: &[ChunkRef], window: usize) -> io::Result<Recipe> {
    rechunk_counted(reader, params, hint, window).map(|(r, _)| r)
}

/// Bytes taken from the hint and bytes cut afresh: the result does not show whether the hint helped.
#[derive(Debug, Default)]
struct Counts {
    confirmed: u64,
    cut: u64,
}

fn rechunk_counted<R: Read + Send>(
    reader: R,
    params: ChunkParams,
    hint: &[ChunkRef],
    window: usize,
) -> io::Result<(Recipe, Counts)> {
    let max = params.max_size as usize;
    let cap = window.max(4 * max);
    // Every request to the window stays under half of it (a step, plus two maximum chunks for a batch's
    // minimum of two), and read-ahead takes another eighth, so a request always fits after compaction.
    let step_max = (cap / 8).max(1);
    let mut w = Window::new(reader, cap, step_max);
    let index = OldIndex::new(hint);
    let rule = CutRule::new(params);
    let mut out: Vec<ChunkRef> = Vec::with_capacity(hint.len() + 16);
    let mut size = 0u64;
    // The old chunk expected at the cursor.
    let mut k = 0usize;
    let mut spec = SPEC_START.min(step_max);
    // Where an old chunk is already known not to match (offset in the new file, old index): the chunk before
    // it matched but could not be confirmed, and will most likely come out of the cutter unchanged.
    let mut known_miss: Option<(u64, usize)> = None;
    let mut counts = Counts::default();
    loop {
        if k < hint.len() && known_miss != Some((size, k)) {
            let s = speculate(&mut w, &rule, hint, k, spec)?;
            out.extend_from_slice(&hint[k..k + s.accepted]);
            size += s.accepted_bytes as u64;
            counts.confirmed += s.accepted_bytes as u64;
            w.consume(s.accepted_bytes);
            if let Some(miss_at) = s.miss_at {
                known_miss = Some((size - s.accepted_bytes as u64 + miss_at as u64, k + s.matched));
            }
            k += s.accepted;
            if s.accepted > 0 && s.matched == s.tried {
                spec = (spec * 2).min(step_max);
                continue;
            }
            spec = SPEC_START.min(step_max);
        }

        // Cut afresh from the cursor until a chunk turns up in the old recipe. One piece of chunks is hashed
        // while the next is cut, as the plain streaming chunker overlaps the two; the first piece is a single
        // chunk, since right after a miss the next chunk is often an old one again.
        let mut pending: Vec<(usize, usize)> = Vec::new();
        let mut piece = 0usize;
        let resync = loop {
            let cut_to = pending.last().map_or(0, |&(s, l)| s + l);
            let data = w.fill(cut_to + piece + max)?;
            if data.is_empty() {
                break None;
            }
            let at_eof = w.eof;
            // The cut is the longer, sequential half: it stays on this thread, and the hashing and the read-ahead
            // are what another thread picks up.
            let (next, fresh) = w.overlapped(|data| {
                rayon::join(|| cut_from(data, params, cut_to, piece, at_eof), || hash_spans(data, &pending))
            })?;
            let mut taken = 0usize;
            let mut hit = None;
            for c in fresh {
                out.push(c);
                taken += c.len as usize;
                if let Some(j) = index.find(&c.id, k) {
                    hit = Some(j);
                    break;
                }
            }
            size += taken as u64;
            counts.cut += taken as u64;
            w.consume(taken);
            if hit.is_some() {
                break hit;
            }
            if next.is_empty() && pending.is_empty() {
                // Nothing was pending and nothing more could be cut: the input has ended.
                break None;
            }
            pending = next.into_iter().map(|(s, l)| (s - taken, l)).collect();
            piece = (piece * 2).max(RUN_STEP).min(step_max);
        };
        match resync {
            Some(j) => k = j + 1,
            None if w.data().is_empty() && w.eof => break,
            None => {}
        }
    }
    Ok((Recipe { size, digest: recipe_digest(&out), chunks: out }, counts))
}

/// Cuts the chunks that start from `from` up to `piece` bytes further (at least one), as a full pass would.
fn cut_from(data: &[u8], params: ChunkParams, from: usize, piece: usize, at_eof: bool) -> Vec<(usize, usize)> {
    let max = params.max_size as usize;
    let cdc = FastCDC::with_level(data, params.min_size as usize, params.avg_size as usize, max, Normalization::Level1);
    let mut spans = Vec::new();
    let mut start = from;
    while start < data.len() && (start == from || start - from <= piece) {
        let remaining = data.len() - start;
        // Short of the end of the input, the cutter must see at least `max` bytes to cut as a full pass does.
        if !at_eof && remaining < max {
            break;
        }
        let (_, end) = cdc.cut(start, remaining);
        spans.push((start, end - start));
        start = end;
    }
    spans
}

fn hash_spans(data: &[u8], spans: &[(usize, usize)]) -> Vec<ChunkRef> {
    let one = |&(s, l): &(usize, usize)| ChunkRef { id: chunk_id(&data[s..s + l]), len: l as u32 };
    if spans.len() > 2 {
        spans.par_iter().map(one).collect()
    } else {
        spans.iter().map(one).collect()
    }
}

#[derive(Default)]
struct Speculation {
    /// Old chunks hashed, from `k` on.
    tried: usize,
    /// How many of them, in order from the first, hold the bytes at their place in the new file.
    matched: usize,
    /// How many are certainly the new file's next chunks.
    accepted: usize,
    accepted_bytes: usize,
    /// Offset from the cursor of the first old chunk that did not match, if one did not.
    miss_at: Option<usize>,
}

/// Hashes the new file's bytes where old chunks `k..` would lie, a batch of about `budget` bytes (at least two
/// chunks: the second confirms the first) in parallel.
fn speculate<R: Read + Send>(
    w: &mut Window<R>,
    rule: &CutRule,
    hint: &[ChunkRef],
    k: usize,
    budget: usize,
) -> io::Result<Speculation> {
    let max = rule.max;
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut bytes = 0usize;
    for c in &hint[k..] {
        let l = c.len as usize;
        // No chunk is empty or longer than the maximum: a hint that says so is not one of ours.
        if l == 0 || l > max || (spans.len() >= 2 && bytes + l > budget) {
            break;
        }
        spans.push((bytes, l));
        bytes += l;
    }
    if spans.is_empty() {
        return Ok(Speculation::default());
    }
    // One byte more than the batch tells whether its last chunk ends the file.
    let avail = w.fill(bytes + 1)?.len();
    let at_eof = w.eof;
    let matched = w.overlapped(|data| {
        let miss = |j: usize| {
            let (s, l) = spans[j];
            s + l > data.len() || chunk_id(&data[s..s + l]) != hint[k + j].id
        };
        if spans.len() > 2 {
            (0..spans.len()).into_par_iter().position_first(miss).unwrap_or(spans.len())
        } else {
            (0..spans.len()).position(miss).unwrap_or(spans.len())
        }
    })?;
    let mut accepted = matched.saturating_sub(1);
    if matched > 0 && k + matched == hint.len() && at_eof && spans[matched - 1].0 + spans[matched - 1].1 == avail {
        accepted = matched;
    }
    // For a hint that really is an earlier recipe made with these parameters, every chunk taken so far is right.
    // A hint that is not (its chunks reordered, or taken from other files) can still fool the rule above, since
    // a chunk's cut depends on the byte after it: checking the cut itself at the end of each chunk is cheap.
    let data = &w.data()[..avail];
    if let Some(j) = (0..accepted).find(|&j| !rule.ends_chunk(&data[spans[j].0..], spans[j].1, at_eof)) {
        accepted = j;
    }
    Ok(Speculation {
        tried: spans.len(),
        matched,
        accepted,
        accepted_bytes: spans[..accepted].iter().map(|s| s.1).sum(),
        miss_at: spans.get(matched).map(|s| s.0),
    })
}

/// FastCDC v2020's cut test at a single position, to check a chunk's end without scanning its bytes.
///
/// The cutter hashes two bytes a step, but its hash after byte `p` is the plain gear hash
/// `sum(gear[b_j] << (p - j))` over `j` from `min` to `p` (shifted left once after even bytes, against masks
/// shifted the same way), so one position costs at most 64 table lookups. It cuts the chunk at length `p`
/// when that hash has no bit of the mask for `p` set: the small-chunk mask below `avg`, the large one from there.
/// It only tests positions from `min` up to the largest even number within `min(remaining, max)`, and cuts at
/// `min(remaining, max)` when none passes (the whole remainder when that is `min` or less).
struct CutRule {
    gear: std::borrow::Cow<'static, [u64]>,
    mask_s: u64,
    mask_l: u64,
    min: usize,
    avg: usize,
    max: usize,
}

impl CutRule {
    fn new(p: ChunkParams) -> CutRule {
        // Normalization level 1 around the average's power of two, as chunk.rs asks of the crate.
        // Parameters that were never validated may have no mask: 0 makes every position look like a cut, so no
        // chunk past the minimum is taken on trust.
        let bits = p.avg_size.trailing_zeros() as usize;
        let mask = |i: Option<usize>| i.and_then(|i| fastcdc::v2020::MASKS.get(i)).copied().unwrap_or(0);
        CutRule {
            gear: fastcdc::v2020::get_gear_with_seed(0).0,
            mask_s: mask(bits.checked_add(1)),
            mask_l: mask(bits.checked_sub(1)),
            min: p.min_size as usize,
            avg: p.avg_size as usize,
            max: p.max_size as usize,
        }
    }

    /// Whether the cutter cuts at `p` (chunk-relative, `p >= min`), given the bytes from the chunk start.
    fn cuts_at(&self, d: &[u8], p: usize) -> bool {
        let g = d[self.min.max(p.saturating_sub(63))..=p]
            .iter()
            .fold(0u64, |g, &b| (g << 1).wrapping_add(self.gear[b as usize]));
        g & if p < self.avg { self.mask_s } else { self.mask_l } == 0
    }

    /// Whether a chunk of length `l` starting at `d[0]` is what the cutter cuts there, assuming nothing short of
    /// `l - 1` is a cut position (true of any chunk that FastCDC cut with these parameters, whatever the content
    /// around it). `d` holds the bytes known from the chunk start on, all of the rest of the input when `eof`.
    fn ends_chunk(&self, d: &[u8], l: usize, eof: bool) -> bool {
        let r = d.len();
        if l == 0 || l > r || l > self.max {
            return false;
        }
        // Positions below `stop` are tested; `stop` only grows with more input, so `r` gives a lower bound.
        let stop = 2 * (r.min(self.max) / 2);
        if eof && l == r {
            // Cut by the end of the input: nothing tested may cut (and `l - 1` is the only position in doubt).
            let last = l - 1;
            return last < self.min || last >= stop || !self.cuts_at(d, last);
        }
        if l < self.min || (l > self.min && self.cuts_at(d, l - 1)) {
            return false;
        }
        // Cut by the maximum (more input follows), or by content at a tested position.
        l == self.max || (l < stop && self.cuts_at(d, l))
    }
}

/// Where each chunk id occurs in the old recipe. Most ids occur once; repeated content (runs of zeros, copied
/// blocks) makes some occur many times, and then the occurrence nearest after the expected one is the best guess.
struct OldIndex(HashMap<ChunkId, Occurrences>);

enum Occurrences {
    One(usize),
    Many(Vec<usize>),
}

impl OldIndex {
    fn new(hint: &[ChunkRef]) -> OldIndex {
        let mut map: HashMap<ChunkId, Occurrences> = HashMap::with_capacity(hint.len());
        for (i, c) in hint.iter().enumerate() {
            map.entry(c.id)
                .and_modify(|o| match o {
                    Occurrences::One(first) => *o = Occurrences::Many(vec![*first, i]),
                    Occurrences::Many(v) => v.push(i),
                })
                .or_insert(Occurrences::One(i));
        }
        OldIndex(map)
    }

    fn find(&self, id: &ChunkId, expected: usize) -> Option<usize> {
        match self.0.get(id)? {
            Occurrences::One(i) => Some(*i),
            Occurrences::Many(v) => {
                let p = v.partition_point(|&i| i < expected);
                v.get(p).or(v.last()).copied()
            }
        }
    }
}

/// A bounded view of the input from the cursor on. Reading ahead overlaps the hashing of what is already
/// buffered; the unconsumed tail moves to the front only when a request would not fit behind it.
struct Window<R> {
    reader: R,
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
    eof: bool,
    read_ahead: usize,
}

impl<R: Read + Send> Window<R> {
    fn new(reader: R, cap: usize, read_ahead: usize) -> Self {
        Window { reader, buf: vec![0u8; cap], pos: 0, filled: 0, eof: false, read_ahead }
    }

    /// The unconsumed bytes: at least `want` of them unless the input ends first.
    fn fill(&mut self, want: usize) -> io::Result<&[u8]> {
        debug_assert!(want + self.read_ahead <= self.buf.len());
        if self.filled - self.pos < want && !self.eof {
            if self.pos + want + self.read_ahead > self.buf.len() {
                self.buf.copy_within(self.pos..self.filled, 0);
                self.filled -= self.pos;
                self.pos = 0;
            }
            while self.filled - self.pos < want && !self.eof {
                let end = (self.pos + want + self.read_ahead).min(self.buf.len());
                match read_some(&mut self.reader, &mut self.buf[self.filled..end])? {
                    0 => self.eof = true,
                    n => self.filled += n,
                }
            }
        }
        Ok(&self.buf[self.pos..self.filled])
    }

    /// Runs `f` over the unconsumed bytes while the next stretch of input is read behind them.
    fn overlapped<T: Send>(&mut self, f: impl FnOnce(&[u8]) -> T + Send) -> io::Result<T> {
        let (head, tail) = self.buf.split_at_mut(self.filled);
        let data = &head[self.pos..];
        let ahead = tail.len().min(self.read_ahead);
        if self.eof || ahead == 0 {
            return Ok(f(data));
        }
        let reader = &mut self.reader;
        let (out, read) = rayon::join(|| f(data), || read_some(reader, &mut tail[..ahead]));
        match read? {
            0 => self.eof = true,
            n => self.filled += n,
        }
        Ok(out)
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.pos..self.filled]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

fn read_some<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match reader.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests;
