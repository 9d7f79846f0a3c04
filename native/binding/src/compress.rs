//! zstd streams for the wire.

use napi::bindgen_prelude::*;
use napi_derive::napi;
use skysync_core as core;

use crate::io_err;

#[napi]
pub struct ZstdEncoder {
    inner: Option<core::compress::Compressor>,
}

#[napi]
impl ZstdEncoder {
    #[napi(constructor)]
    pub fn new(level: i32) -> Result<Self> {
        Ok(ZstdEncoder { inner: Some(core::compress::Compressor::new(level).map_err(io_err)?) })
    }

    #[napi]
    pub fn write(&mut self, input: Buffer) -> Result<Buffer> {
        Ok(self.enc()?.write(&input).map_err(io_err)?.into())
    }

    #[napi]
    pub fn flush(&mut self) -> Result<Buffer> {
        Ok(self.enc()?.flush().map_err(io_err)?.into())
    }

    /// Compresses what comes next at `level` (ends the current zstd frame when it changes the level).
    #[napi]
    pub fn set_level(&mut self, level: i32) -> Result<()> {
        self.enc()?.set_level(level).map_err(io_err)
    }

    #[napi]
    pub fn finish(&mut self) -> Result<Buffer> {
        let enc =
            self.inner.take().ok_or_else(|| Error::new(Status::GenericFailure, "encoder finished".to_string()))?;
        Ok(enc.finish().map_err(io_err)?.into())
    }
}

impl ZstdEncoder {
    fn enc(&mut self) -> Result<&mut core::compress::Compressor> {
        self.inner.as_mut().ok_or_else(|| Error::new(Status::GenericFailure, "encoder finished".to_string()))
    }
}

#[napi]
pub struct ZstdDecoder {
    inner: core::compress::Decompressor,
}

#[napi]
impl ZstdDecoder {
    /// `max_output` bounds what one `write` may produce, so a hostile stream cannot exhaust memory.
    #[napi(constructor)]
    pub fn new(max_output: u32) -> Result<Self> {
        Ok(ZstdDecoder { inner: core::compress::Decompressor::new(max_output as usize).map_err(io_err)? })
    }

    #[napi]
    pub fn write(&mut self, input: Buffer) -> Result<Buffer> {
        Ok(self.inner.write(&input).map_err(io_err)?.into())
    }
}
