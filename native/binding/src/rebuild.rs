//! Rebuilding a changed large file: runs of held chunks copied into the temp file by the kernel, verified there.

use napi::bindgen_prelude::*;
use napi_derive::napi;
use skysync_core as core;
use skysync_core::rebuild::{CopyError, CopyMode};

pub struct CopyHeldTask {
    src_fd: i32,
    dst_fd: i32,
    src_offset: u64,
    dst_offset: u64,
    refs: Vec<core::ChunkRef>,
    mode: CopyMode,
}

impl Task for CopyHeldTask {
    type Output = i64;
    type JsValue = i64;

    fn compute(&mut self) -> Result<i64> {
        let copied = core::rebuild::copy_verified(
            self.src_fd,
            self.dst_fd,
            self.src_offset,
            self.dst_offset,
            &self.refs,
            self.mode,
        );
        match copied {
            Ok(()) => Ok(-1),
            Err(CopyError::BadChunk(i)) => Ok(i as i64),
            Err(CopyError::Short) => {
                Err(Error::new(Status::GenericFailure, "source is shorter than recorded".to_string()))
            }
            Err(CopyError::Io(e)) => Err(crate::io_err(e)),
        }
    }

    fn resolve(&mut self, _env: Env, output: i64) -> Result<i64> {
        Ok(output)
    }
}

fn offset(v: f64, what: &str) -> Result<u64> {
    if v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_991.0 {
        Ok(v as u64)
    } else {
        Err(Error::new(Status::InvalidArg, format!("copyHeldChunks: bad {what}")))
    }
}

/// Copies a run of chunks held at `srcOffset` in the file open as `srcFd` to `dstOffset` in the temp file open
/// (read and write) as `dstFd`, off the JavaScript thread: a reflink or `copy_file_range` where the filesystem
/// offers one (`viaMemory` forces read + write), then every chunk is checked against its id (packed refs, 36
/// bytes each) as it lies in the temp file. Resolves with the index of the first bad chunk, or -1; rejects when
/// the source is shorter than the run or the OS fails. Both descriptors must stay open until it settles.
#[napi(ts_return_type = "Promise<number>")]
pub fn copy_held_chunks(
    src_fd: i32,
    dst_fd: i32,
    src_offset: f64,
    dst_offset: f64,
    refs: Buffer,
    via_memory: Option<bool>,
) -> Result<AsyncTask<CopyHeldTask>> {
    let refs = core::chunk::unpack_refs(&refs)
        .ok_or_else(|| Error::new(Status::InvalidArg, "copyHeldChunks: refs are not whole chunk refs".to_string()))?;
    Ok(AsyncTask::new(CopyHeldTask {
        src_fd,
        dst_fd,
        src_offset: offset(src_offset, "source offset")?,
        dst_offset: offset(dst_offset, "destination offset")?,
        refs,
        mode: if via_memory == Some(true) { CopyMode::Read } else { CopyMode::Kernel },
    }))
}
