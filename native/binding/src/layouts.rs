//! The packed records that cross the addon boundary, each laid out once here: sizes and field offsets, all little
//! endian. The TypeScript side's copy is packages/chunking/src/layouts.ts; `recordLayouts()` hands these to its
//! test, which fails when the two drift apart.

use std::collections::HashMap;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use skysync_core as core;

pub(crate) use core::chunk::chunk_ref;

/// One entry of `Tree.updatePacked`: what an agent placed and the stat it saw right after.
pub(crate) mod placed_record {
    pub const SIZE: usize = 48;
    /// u8: 0 file, 1 dir, 2 symlink (3 bytes unused after it).
    pub const KIND: usize = 0;
    pub const MODE: usize = 4;
    pub const FILE_SIZE: usize = 8;
    pub const MTIME_SEC: usize = 16;
    pub const MTIME_NSEC: usize = 24;
    pub const CHUNK_COUNT: usize = 28;
    pub const OBSERVED_MTIME_NS: usize = 32;
    pub const INO: usize = 40;
}

/// One file of `writeFiles`' layout buffer.
pub(crate) mod write_record {
    pub const SIZE: usize = 56;
    pub const FILE_SIZE: usize = 0;
    pub const CHUNK_COUNT: usize = 4;
    pub const MODE: usize = 8;
    pub const MTIME_NSEC: usize = 12;
    pub const MTIME_SEC: usize = 16;
    /// The recipe digest, 32 bytes.
    pub const DIGEST: usize = 24;
}

/// One file of `writeFiles`' result stats: as fstat saw the finished file.
pub(crate) mod write_stat {
    pub const SIZE: usize = 24;
    pub const INO: usize = 0;
    pub const FILE_SIZE: usize = 8;
    pub const MTIME_NS: usize = 16;
}

/// One range of `readRanges`.
pub(crate) mod read_range {
    pub const SIZE: usize = 12;
    pub const OFFSET: usize = 0;
    pub const LEN: usize = 8;
}

pub(crate) fn pack_chunks(chunks: &[core::ChunkRef]) -> Vec<u8> {
    core::chunk::pack_refs(chunks)
}

pub(crate) fn unpack_chunks(buf: &[u8]) -> Result<Vec<core::ChunkRef>> {
    core::chunk::unpack_refs(buf).ok_or_else(|| {
        Error::new(Status::InvalidArg, format!("packed chunks must be a multiple of {} bytes", chunk_ref::SIZE))
    })
}

pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
}

fn layout(fields: &[(&str, usize)]) -> HashMap<String, u32> {
    fields.iter().map(|&(name, at)| (name.to_string(), at as u32)).collect()
}

/// Every packed record's size (`size`) and field offsets, by record, as this addon lays them out.
#[napi(ts_return_type = "Record<string, Record<string, number>>")]
pub fn record_layouts() -> HashMap<String, HashMap<String, u32>> {
    let mut out = HashMap::new();
    out.insert(
        "chunkRef".to_string(),
        layout(&[
            ("size", chunk_ref::SIZE),
            ("id", chunk_ref::ID),
            ("idSize", chunk_ref::ID_SIZE),
            ("len", chunk_ref::LEN),
        ]),
    );
    {
        use placed_record::*;
        out.insert(
            "placedRecord".to_string(),
            layout(&[
                ("size", SIZE),
                ("kind", KIND),
                ("mode", MODE),
                ("fileSize", FILE_SIZE),
                ("mtimeSec", MTIME_SEC),
                ("mtimeNsec", MTIME_NSEC),
                ("chunkCount", CHUNK_COUNT),
                ("observedMtimeNs", OBSERVED_MTIME_NS),
                ("ino", INO),
            ]),
        );
    }
    {
        use write_record::*;
        out.insert(
            "writeRecord".to_string(),
            layout(&[
                ("size", SIZE),
                ("fileSize", FILE_SIZE),
                ("chunkCount", CHUNK_COUNT),
                ("mode", MODE),
                ("mtimeNsec", MTIME_NSEC),
                ("mtimeSec", MTIME_SEC),
                ("digest", DIGEST),
            ]),
        );
    }
    out.insert(
        "writeStat".to_string(),
        layout(&[
            ("size", write_stat::SIZE),
            ("ino", write_stat::INO),
            ("fileSize", write_stat::FILE_SIZE),
            ("mtimeNs", write_stat::MTIME_NS),
        ]),
    );
    out.insert(
        "readRange".to_string(),
        layout(&[("size", read_range::SIZE), ("offset", read_range::OFFSET), ("len", read_range::LEN)]),
    );
    out
}
