//! One large file chunked and hashed on all cores, with exactly the recipe of a single pass.
//!
//! The file is split into segments, and each is cut from its own start by a worker of its own, which hashes
//! every chunk as soon as it is cut (the bytes are still in cache). Only the first segment starts at a true chunk
//! boundary; the others start at an arbitrary offset. They still converge: FastCDC decides where a chunk ends
//! from the bytes after its start only (and whether the file ends within `max_size`), so two cut sequences that
//! share one boundary share every boundary after it, and content-defined cuts soon meet again after any start.
//!
//! The segments are then stitched in order. The true sequence arrives at a segment at some position at or
//! past the segment's start. When that position is one of the segment's boundaries, the segment's chunks from
//! there on are the single pass's chunks. Otherwise the stitcher cuts one true chunk at a time from that
//! position until it lands on one of the segment's boundaries, or past the segment's end and into the next
//! one. Data without cut points (a long run of zeros, cut every `max_size` bytes from wherever the run began)
//! may never meet a segment's sequence: then the stitcher cuts through it alone, which is slower but still
//! the single pass's result.
//!
//! Bytes are read with positioned reads into one block buffer per worker, not mapped: a file truncated while it
//! is read must give an error or a short read, never a SIGBUS.

use std::fs::File;
use std::io;

use fastcdc::v2020::{FastCDC, Normalization};
use rayon::prelude::*;

use super::{chunk_id, recipe_digest, ChunkParams, ChunkRef, Recipe};

/// Bytes read at a time by one worker, on top of the `max_size` that a cut may look past.
pub const BLOCK: usize = 2 * 1024 * 1024;

/// Smallest segment: what a segment spends before it meets the true sequence (one or two chunks on real data)
/// stays around a percent of its work.
const MIN_SEGMENT: u64 = 4 * 1024 * 1024;

/// Segments per worker thread: more than one, so that a thread slowed down by other work on the machine leaves
/// segments to the others instead of holding up the end.
const SEGMENTS_PER_THREAD: u64 = 4;

/// Where the bytes come from: a file (positioned reads, so workers share it) or, for tests, memory.
pub trait ReadAt: Sync {
    /// Reads at `offset` into `buf`; fewer bytes than asked only at the end of the data, 0 past it.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match std::os::unix::fs::FileExt::read_at(self, &mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = (offset.min(self.len() as u64)) as usize;
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// Segment starts for a file of `len` bytes: the first is 0, and every segment but the last is at least
/// `MIN_SEGMENT` long.
pub fn segment_starts(len: u64, threads: usize) -> Vec<u64> {
    let wanted = (threads.max(1) as u64 * SEGMENTS_PER_THREAD).min(len / MIN_SEGMENT).max(1);
    let size = len / wanted;
    (0..wanted).map(|i| i * size).collect()
}

/// Chunks a whole file on the rayon pool. `len` is its size when opened: it only places the segments, and a
/// file found shorter or longer while reading is chunked again from its start in a single pass.
pub fn chunk_file_parallel(file: &File, len: u64, params: ChunkParams) -> io::Result<Recipe> {
    chunk_segmented(file, params, &segment_starts(len, rayon::current_num_threads()), len, BLOCK)
}

/// Chunks `src` (expected to be `len` bytes long) split at `starts` (sorted, the first 0), reading `block`
/// bytes at a time. The result does not depend on `starts` or `block`: both are parameters for the tests.
pub fn chunk_segmented<S: ReadAt + ?Sized>(
    src: &S,
    params: ChunkParams,
    starts: &[u64],
    len: u64,
    block: usize,
) -> io::Result<Recipe> {
    assert!(starts.first() == Some(&0) && starts.windows(2).all(|w| w[0] <= w[1]), "segments must start at 0, sorted");
    let ends: Vec<Option<u64>> = starts.iter().skip(1).map(|&s| Some(s)).chain([None]).collect();
    let segments = (0..starts.len())
        .into_par_iter()
        .map(|i| {
            let mut walker = Walker::new(src, params, block);
            walker.walk(starts[i], |pos| ends[i].is_some_and(|end| pos >= end))
        })
        .collect::<io::Result<Vec<Walk>>>()?;
    let changed = segments.iter().zip(&ends).any(|(w, end)| w.eof && end.is_some_and(|e| w.end < e))
        || segments.last().is_some_and(|w| w.end != len);
    let chunks = if changed {
        // The file changed under us: one pass over it, as it is now, is the only recipe worth giving.
        Walker::new(src, params, block).walk(0, |_| false)?.chunks
    } else {
        stitch(src, params, block, segments)?
    };
    Ok(Recipe { size: chunks.iter().map(|c| c.len as u64).sum(), digest: recipe_digest(&chunks), chunks })
}

/// The single pass's chunks from the segments' own, cutting afresh where the true sequence has not yet met a
/// segment's boundaries. Chunks cut afresh are hashed afterwards, in parallel: where a segment never met the
/// true sequence (a long run of zeros), this leaves only the cutting sequential.
fn stitch<S: ReadAt + ?Sized>(
    src: &S,
    params: ChunkParams,
    block: usize,
    segments: Vec<Walk>,
) -> io::Result<Vec<ChunkRef>> {
    let mut out: Vec<ChunkRef> = Vec::with_capacity(segments.iter().map(|w| w.chunks.len()).sum());
    let mut pos = 0u64;
    let mut walker: Option<Walker<S>> = None;
    // Chunks cut by the stitcher, not hashed yet: index in `out`, and offset.
    let mut unhashed: Vec<(usize, u64)> = Vec::new();
    for seg in segments {
        while pos < seg.end {
            if let Ok(i) = seg.starts.binary_search(&pos) {
                out.extend_from_slice(&seg.chunks[i..]);
                pos = seg.end;
                break;
            }
            let w = walker.get_or_insert_with(|| Walker { hash: false, ..Walker::new(src, params, block) });
            let fresh = w.walk(pos, |p| p >= seg.end || seg.starts.binary_search(&p).is_ok())?;
            unhashed.extend(fresh.starts.iter().enumerate().map(|(i, &at)| (out.len() + i, at)));
            out.extend_from_slice(&fresh.chunks);
            pos = fresh.end;
            if fresh.eof {
                break;
            }
        }
    }
    let ids = unhashed
        .par_iter()
        .map_init(
            || vec![0u8; params.max_size as usize],
            |buf, &(i, at)| {
                let len = out[i].len as usize;
                match src.read_at(&mut buf[..len], at)? {
                    n if n == len => Ok(chunk_id(&buf[..len])),
                    _ => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while it was chunked")),
                }
            },
        )
        .collect::<io::Result<Vec<_>>>()?;
    for (&(i, _), id) in unhashed.iter().zip(ids) {
        out[i].id = id;
    }
    Ok(out)
}

/// The chunks one walk cut, where each starts, and where the last ends.
struct Walk {
    chunks: Vec<ChunkRef>,
    starts: Vec<u64>,
    end: u64,
    /// The walk stopped because the data ended.
    eof: bool,
}

/// Cuts and hashes from any position through a block buffer.
struct Walker<'a, S: ?Sized> {
    src: &'a S,
    params: ChunkParams,
    buf: Vec<u8>,
    /// Hash each chunk as it is cut; otherwise its id is left zero for the caller to fill in.
    hash: bool,
}

impl<'a, S: ReadAt + ?Sized> Walker<'a, S> {
    fn new(src: &'a S, params: ChunkParams, block: usize) -> Self {
        Walker { src, params, buf: vec![0u8; block.max(1) + params.max_size as usize], hash: true }
    }

    /// Cuts from `from` (taken as a chunk boundary) until a cut lands where `stop` says, or the data ends.
    fn walk(&mut self, from: u64, mut stop: impl FnMut(u64) -> bool) -> io::Result<Walk> {
        let max = self.params.max_size as usize;
        let mut walk = Walk { chunks: Vec::new(), starts: Vec::new(), end: from, eof: false };
        // The buffer holds the data from `base`: `filled` bytes of it, all there is when `eof`.
        let mut base = from;
        let mut filled = 0usize;
        let mut at = 0usize;
        loop {
            if filled - at < max && !walk.eof {
                self.buf.copy_within(at..filled, 0);
                base += at as u64;
                filled -= at;
                at = 0;
                let n = self.src.read_at(&mut self.buf[filled..], base + filled as u64)?;
                walk.eof = filled + n < self.buf.len();
                filled += n;
            }
            if at == filled {
                walk.end = base + at as u64;
                return Ok(walk);
            }
            let data = &self.buf[..filled];
            let cdc = FastCDC::with_level(
                data,
                self.params.min_size as usize,
                self.params.avg_size as usize,
                max,
                Normalization::Level1,
            );
            // Every cut with `max` bytes ahead, or with the end of the data in the buffer, is final.
            while at < filled && (walk.eof || filled - at >= max) {
                let (_, end) = cdc.cut(at, filled - at);
                walk.starts.push(base + at as u64);
                let id = if self.hash { chunk_id(&data[at..end]) } else { [0u8; 32] };
                walk.chunks.push(ChunkRef { id, len: (end - at) as u32 });
                at = end;
                if stop(base + at as u64) {
                    walk.end = base + at as u64;
                    walk.eof = walk.eof && at == filled;
                    return Ok(walk);
                }
            }
        }
    }
}
