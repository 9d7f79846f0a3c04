//! What an agent placed, recorded into its tree: one object per entry (`update`) or packed records
//! (`updatePacked`, laid out as `layouts::placed_record`).

use napi::bindgen_prelude::*;
use napi_derive::napi;
use skysync_core as core;

use crate::layouts::{chunk_ref, le_u32, le_u64, placed_record, unpack_chunks};
use crate::paths::BytePath;
use crate::tree::Tree;

/// What an agent placed: recorded with the source's metadata and the stat it saw right after placing, so a
/// later `drift` can tell whether something else changed the file since.
#[napi(object)]
pub struct PlacedEntry {
    #[napi(ts_type = "string")]
    pub path: BytePath,
    #[napi(ts_type = "'file' | 'dir' | 'symlink'")]
    pub kind: String,
    pub mode: u32,
    pub size: f64,
    pub mtime_sec: f64,
    pub mtime_nsec: u32,
    /// lstat after placing: mtime in nanoseconds and inode, as decimal strings (they exceed 2^53).
    pub observed_mtime_ns: String,
    pub ino: String,
    #[napi(ts_type = "string | undefined")]
    pub target: Option<BytePath>,
    pub chunks: Option<Buffer>,
}

fn placed_to_core(p: PlacedEntry) -> Result<(core::Entry, Option<Vec<core::ChunkRef>>)> {
    let kind = match p.kind.as_str() {
        "file" => core::Kind::File,
        "dir" => core::Kind::Dir,
        "symlink" => core::Kind::Symlink,
        k => return Err(Error::new(Status::InvalidArg, format!("unknown kind {k}"))),
    };
    let bad = |what: &str| Error::new(Status::InvalidArg, format!("bad {what}"));
    let meta = core::Meta {
        size: p.size as u64,
        mtime_ns: p.mtime_sec as i64 * 1_000_000_000 + p.mtime_nsec as i64,
        ctime_ns: p.observed_mtime_ns.parse().map_err(|_| bad("observedMtimeNs"))?,
        ino: p.ino.parse().map_err(|_| bad("ino"))?,
        mode: (p.mode & 0o7777) as u16,
        kind,
    };
    if p.path.0.is_empty() || p.path.0.contains(&0) {
        return Err(bad("path"));
    }
    let chunks = match p.chunks {
        Some(c) => Some(unpack_chunks(&c)?),
        None => None,
    };
    let entry = core::Entry::new(&p.path.0, meta, p.target.as_ref().map(|t| t.0.as_slice()));
    Ok((entry, chunks))
}

/// The entries of `updatePacked`, checked as `placed_to_core` checks one object.
fn unpack_placed(
    paths: &[u8],
    records: &[u8],
    chunks: &[u8],
    targets: &[u8],
) -> Result<Vec<(core::Entry, Option<Vec<core::ChunkRef>>)>> {
    let bad = |what: &str| Error::new(Status::InvalidArg, format!("updatePacked: bad {what}"));
    if !records.len().is_multiple_of(placed_record::SIZE) {
        return Err(bad("records"));
    }
    let n = records.len() / placed_record::SIZE;
    let paths: Vec<&[u8]> = if n == 0 { Vec::new() } else { paths.split(|&b| b == 0).collect() };
    if paths.len() != n {
        return Err(bad("paths"));
    }
    let mut targets = targets.split(|&b| b == 0);
    let mut at = 0usize;
    let mut out = Vec::with_capacity(n);
    for (rec, path) in records.chunks_exact(placed_record::SIZE).zip(paths) {
        use placed_record::*;
        let (u32_at, u64_at) = (|at| le_u32(rec, at), |at| le_u64(rec, at));
        let kind = match rec[KIND] {
            0 => core::Kind::File,
            1 => core::Kind::Dir,
            2 => core::Kind::Symlink,
            _ => return Err(bad("kind")),
        };
        if path.is_empty() {
            return Err(bad("path"));
        }
        let meta = core::Meta {
            size: u64_at(FILE_SIZE),
            // Saturating: a hostile record must not overflow (a panic must never cross into JavaScript).
            mtime_ns: (u64_at(MTIME_SEC) as i64)
                .saturating_mul(1_000_000_000)
                .saturating_add(u32_at(MTIME_NSEC) as i64),
            ctime_ns: u64_at(OBSERVED_MTIME_NS) as i64,
            ino: u64_at(INO),
            mode: (u32_at(MODE) & 0o7777) as u16,
            kind,
        };
        let target =
            if kind == core::Kind::Symlink { Some(targets.next().ok_or_else(|| bad("targets"))?) } else { None };
        let recipe = if kind == core::Kind::File {
            let len = u32_at(CHUNK_COUNT) as usize * chunk_ref::SIZE;
            let packed = chunks.get(at..at + len).ok_or_else(|| bad("chunks"))?;
            at += len;
            Some(unpack_chunks(packed)?)
        } else {
            None
        };
        out.push((core::Entry::new(path, meta, target), recipe));
    }
    if at != chunks.len() {
        return Err(bad("chunks"));
    }
    Ok(out)
}

#[napi]
impl Tree {
    /// Inserts or replaces what an agent placed and forgets removed paths, keeping the tree sorted.
    #[napi]
    pub fn update(
        &self,
        placed: Vec<PlacedEntry>,
        #[napi(ts_arg_type = "string[]")] removed: Vec<BytePath>,
    ) -> Result<()> {
        let ups = placed.into_iter().map(placed_to_core).collect::<Result<Vec<_>>>()?;
        let mut s = self.inner.write().unwrap();
        *self.chunk_index.write().unwrap() = None;
        s.update(ups, removed.into_iter().map(|p| p.0).collect());
        Ok(())
    }

    /// `update` for many entries at once, packed: a conversion per entry field costs more than the update itself.
    /// `paths` and the symlinks' `targets` are joined with NUL bytes; `records` holds 48 bytes an entry (little
    /// endian, `layouts::placed_record`): kind u8 (0 file, 1 dir, 2 symlink), 3 unused, mode u32, size u64,
    /// mtime seconds i64, mtime nanoseconds u32, chunk count u32, observed mtime in nanoseconds i64, inode u64;
    /// each file's packed chunks follow the previous file's in `chunks`.
    #[napi]
    pub fn update_packed(
        &self,
        #[napi(ts_arg_type = "string")] paths: BytePath,
        records: Buffer,
        chunks: Buffer,
        #[napi(ts_arg_type = "string")] targets: BytePath,
        #[napi(ts_arg_type = "string[]")] removed: Vec<BytePath>,
    ) -> Result<()> {
        let ups = unpack_placed(&paths.0, &records, &chunks, &targets.0)?;
        let mut s = self.inner.write().unwrap();
        *self.chunk_index.write().unwrap() = None;
        s.update(ups, removed.into_iter().map(|p| p.0).collect());
        Ok(())
    }
}
