//! The sending side's batch reader of small files.

use std::path::PathBuf;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use skysync_core as core;

use crate::layouts::{le_u32, le_u64, read_range};
use crate::paths::{split_nul, BytePath};

pub struct ReadRangesTask {
    root: PathBuf,
    paths: Vec<Vec<u8>>,
    ranges: Buffer,
}

impl Task for ReadRangesTask {
    type Output = Vec<u8>;
    type JsValue = Buffer;

    fn compute(&mut self) -> Result<Self::Output> {
        let ranges: Vec<core::read::ReadRange> = self
            .paths
            .iter()
            .zip(self.ranges.chunks_exact(read_range::SIZE))
            .map(|(p, r)| core::read::ReadRange {
                path: p,
                offset: le_u64(r, read_range::OFFSET),
                len: le_u32(r, read_range::LEN),
            })
            .collect();
        core::read::read_ranges(&self.root, &ranges).map_err(|f| {
            let path = String::from_utf8_lossy(&self.paths[f.index]).into_owned();
            Error::new(Status::GenericFailure, format!("{path}: {}", f.error))
        })
    }

    fn resolve(&mut self, _env: Env, out: Self::Output) -> Result<Self::JsValue> {
        Ok(out.into())
    }
}

/// Reads byte ranges of many files under `root` in parallel, off the JavaScript thread, and resolves with their
/// bytes one after another. `paths` are relative to `root`, joined with NUL bytes; `ranges` holds 12 bytes per
/// path (offset u64 LE, length u32 LE). The last component is never followed if it is a symlink; a file shorter
/// than its range rejects ("path: changed while it was read").
#[napi(ts_return_type = "Promise<Buffer>")]
pub fn read_ranges(
    root: String,
    #[napi(ts_arg_type = "string")] paths: BytePath,
    ranges: Buffer,
) -> Result<AsyncTask<ReadRangesTask>> {
    let paths = split_nul(&paths.0);
    if ranges.len() != paths.len() * read_range::SIZE {
        return Err(Error::new(Status::InvalidArg, "readRanges: ranges do not match paths".to_string()));
    }
    Ok(AsyncTask::new(ReadRangesTask { root: PathBuf::from(root), paths, ranges }))
}
