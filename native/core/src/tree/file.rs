//! The tree's file: a compact binary encoding with a checksum, so a damaged file is detected and rebuilt.
//! The magic and the error text keep "snapshot", the tree's old name: the format is unchanged and tests match the text.
//!
//! File format (little endian), version 1:
//!   "SKYSNAP\0" | u32 version | u32 min | u32 avg | u32 max | i64 started_ns | u8 ignore_mode | varint entries
//!   per entry: varint shared_prefix | varint suffix_len | suffix | u8 kind | varint mode | varint size |
//!              i64 mtime_ns | i64 ctime_ns | varint ino |
//!              symlink: varint target_len | target;  file: varint (chunks + 1, 0 = not chunked) | chunks
//!   per chunk: 32-byte id | varint len
//!   trailer: 32-byte BLAKE3 of everything before it.

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use super::{ChunkStore, Span, Tree, NO_RECIPE};
use crate::chunk::{ChunkParams, ChunkRef};
use crate::entry::{EntryList, Kind, Meta};
use crate::ignore_rules::IgnoreMode;

const MAGIC: &[u8; 8] = b"SKYSNAP\0";
const VERSION: u32 = 1;

#[derive(Debug)]
pub enum LoadError {
    Io(io::Error),
    Corrupt(String),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Io(e) => write!(f, "{e}"),
            LoadError::Corrupt(why) => write!(f, "corrupted snapshot ({why})"),
        }
    }
}

impl Tree {
    pub fn encode(&self) -> Vec<u8> {
        let chunk_count = self.chunks.base.len() + self.chunks.own.len();
        let mut w = Vec::with_capacity(64 + self.entries.len() * 48 + chunk_count * 34);
        w.extend_from_slice(MAGIC);
        w.extend_from_slice(&VERSION.to_le_bytes());
        w.extend_from_slice(&self.params.min_size.to_le_bytes());
        w.extend_from_slice(&self.params.avg_size.to_le_bytes());
        w.extend_from_slice(&self.params.max_size.to_le_bytes());
        w.extend_from_slice(&self.started_ns.to_le_bytes());
        w.push(match self.ignore_mode {
            None => 0,
            Some(IgnoreMode::GitIgnore) => 1,
            Some(IgnoreMode::SkyIgnore) => 2,
        });
        put_varint(&mut w, self.entries.len() as u64);
        let mut prev: &[u8] = &[];
        for (i, e) in self.entries.iter().enumerate() {
            let p = e.path();
            let shared = p.iter().zip(prev.iter()).take_while(|(a, b)| a == b).count();
            put_varint(&mut w, shared as u64);
            put_varint(&mut w, (p.len() - shared) as u64);
            w.extend_from_slice(&p[shared..]);
            w.push(e.meta.kind as u8);
            put_varint(&mut w, e.meta.mode as u64);
            put_varint(&mut w, e.meta.size);
            w.extend_from_slice(&e.meta.mtime_ns.to_le_bytes());
            w.extend_from_slice(&e.meta.ctime_ns.to_le_bytes());
            put_varint(&mut w, e.meta.ino);
            match e.meta.kind {
                Kind::Symlink => {
                    let t = e.target().unwrap_or(&[]);
                    put_varint(&mut w, t.len() as u64);
                    w.extend_from_slice(t);
                }
                Kind::File => match self.chunks_of(i) {
                    None => put_varint(&mut w, 0),
                    Some(cs) => {
                        put_varint(&mut w, cs.len() as u64 + 1);
                        for c in cs {
                            w.extend_from_slice(&c.id);
                            put_varint(&mut w, c.len as u64);
                        }
                    }
                },
                Kind::Dir => {}
            }
            prev = p;
        }
        let sum = blake3::hash(&w);
        w.extend_from_slice(sum.as_bytes());
        w
    }

    pub fn decode(data: &[u8]) -> Result<Tree, LoadError> {
        let corrupt = |why: &str| LoadError::Corrupt(why.to_string());
        if data.len() < 8 + 4 * 4 + 8 + 1 + 32 || &data[..8] != MAGIC {
            return Err(corrupt("not a snapshot file"));
        }
        let (body, sum) = data.split_at(data.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err(corrupt("checksum mismatch"));
        }
        let mut r = Reader { data: body, pos: 8 };
        let version = r.u32()?;
        if version != VERSION {
            return Err(LoadError::Corrupt(format!("unknown version {version}")));
        }
        let params = ChunkParams { min_size: r.u32()?, avg_size: r.u32()?, max_size: r.u32()? };
        let started_ns = r.i64()?;
        let ignore_mode = match r.u8()? {
            0 => None,
            1 => Some(IgnoreMode::GitIgnore),
            2 => Some(IgnoreMode::SkyIgnore),
            _ => return Err(corrupt("bad ignore mode")),
        };
        let n = r.varint()? as usize;
        // Every entry takes at least 20 bytes: refuse counts the file cannot hold before allocating for them.
        if n > body.len() / 20 {
            return Err(corrupt("entry count larger than the file"));
        }
        // The file's size as a first guess for the names (trimmed at the end): shared prefixes are stored once in
        // the file and in full in memory, chunk ids only in the file.
        let mut entries = EntryList::with_capacity(n, body.len());
        let mut spans = Vec::with_capacity(n);
        let mut chunks: Vec<ChunkRef> = Vec::new();
        let mut path: Vec<u8> = Vec::new();
        for _ in 0..n {
            let shared = r.varint()? as usize;
            let suffix = r.varint()? as usize;
            if shared > path.len() {
                return Err(corrupt("bad path prefix"));
            }
            path.truncate(shared);
            path.extend_from_slice(r.bytes(suffix)?);
            if path.is_empty() || path.contains(&0) {
                return Err(corrupt("bad path"));
            }
            if let Some(last) = entries.last_path() {
                if last >= path.as_slice() {
                    return Err(corrupt("entries out of order"));
                }
            }
            let kind = Kind::from_u8(r.u8()?).ok_or_else(|| corrupt("bad kind"))?;
            let mode = r.varint()? as u16;
            let size = r.varint()?;
            let mtime_ns = r.i64()?;
            let ctime_ns = r.i64()?;
            let ino = r.varint()?;
            let meta = Meta { size, mtime_ns, ctime_ns, ino, mode, kind };
            let mut span = NO_RECIPE;
            let mut target = None;
            match kind {
                Kind::Symlink => {
                    let len = r.varint()? as usize;
                    target = Some(r.bytes(len)?);
                }
                Kind::File => span = read_recipe(&mut r, size, &mut chunks)?,
                Kind::Dir => {}
            }
            entries.push(&path, meta, target);
            spans.push(span);
        }
        if r.remaining() != 0 {
            return Err(corrupt("trailing bytes"));
        }
        entries.shrink_to_fit();
        chunks.shrink_to_fit();
        Ok(Tree {
            params,
            started_ns,
            ignore_mode,
            entries,
            spans,
            chunks: ChunkStore { base: Arc::new(chunks), own: Vec::new() },
        })
    }

    pub fn load(path: &Path) -> Result<Tree, LoadError> {
        let data = fs::read(path).map_err(LoadError::Io)?;
        Tree::decode(&data)
    }

    /// Writes atomically: a crashed process leaves the old tree file or the new one, never half of one. No fsync:
    /// on ext4 it would flush every dirty file of the sync just done (seconds for a large file), and a tree file
    /// lost to a power cut only costs the next push a full comparison; the checksum catches a torn one.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let data = self.encode();
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&data)?;
        }
        fs::rename(&tmp, path)
    }
}

/// A file's recipe, appended to `chunks`: its span there, or `NO_RECIPE` for a file not chunked.
fn read_recipe(r: &mut Reader, size: u64, chunks: &mut Vec<ChunkRef>) -> Result<Span, LoadError> {
    let corrupt = |why: &str| LoadError::Corrupt(why.to_string());
    let count = r.varint()?;
    if count == 0 {
        return Ok(NO_RECIPE);
    }
    let count = (count - 1) as usize;
    if count > r.remaining() / 33 {
        return Err(corrupt("chunk count larger than the file"));
    }
    let start = chunks.len() as u32;
    let mut total = 0u64;
    for _ in 0..count {
        let mut id = [0u8; 32];
        id.copy_from_slice(r.bytes(32)?);
        let len = r.varint()? as u32;
        total += len as u64;
        chunks.push(ChunkRef { id, len });
    }
    if total != size {
        return Err(corrupt("recipe does not add up to the file size"));
    }
    Ok(Span { start, count: count as u32 })
}

fn put_varint(w: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        w.push((v as u8) | 0x80);
        v >>= 7;
    }
    w.push(v as u8);
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], LoadError> {
        if n > self.remaining() {
            return Err(LoadError::Corrupt("truncated".into()));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, LoadError> {
        Ok(self.bytes(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, LoadError> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().unwrap()))
    }
    fn i64(&mut self) -> Result<i64, LoadError> {
        Ok(i64::from_le_bytes(self.bytes(8)?.try_into().unwrap()))
    }
    fn varint(&mut self) -> Result<u64, LoadError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(LoadError::Corrupt("varint too long".into()))
    }
}
