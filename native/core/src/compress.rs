//! zstd as a stream in both directions. Chunks are compressed as one stream, not one by one: small chunks
//! compressed alone lose about a quarter of the ratio.

use std::io::{self, Write};

pub struct Compressor {
    encoder: zstd::stream::write::Encoder<'static, Vec<u8>>,
}

impl Compressor {
    pub fn new(level: i32) -> io::Result<Self> {
        Ok(Self { encoder: zstd::stream::write::Encoder::new(Vec::new(), level)? })
    }

    /// Feeds input; returns whatever compressed output is ready.
    pub fn write(&mut self, input: &[u8]) -> io::Result<Vec<u8>> {
        self.encoder.write_all(input)?;
        Ok(std::mem::take(self.encoder.get_mut()))
    }

    /// Flushes a block so the peer can decode everything written so far.
    pub fn flush(&mut self) -> io::Result<Vec<u8>> {
        self.encoder.flush()?;
        Ok(std::mem::take(self.encoder.get_mut()))
    }

    pub fn finish(self) -> io::Result<Vec<u8>> {
        self.encoder.finish()
    }
}

pub struct Decompressor {
    decoder: zstd::stream::write::Decoder<'static, Vec<u8>>,
    /// Refuse to grow the output past this per call: a malicious frame must not become an unbounded allocation.
    max_output: usize,
}

impl Decompressor {
    pub fn new(max_output: usize) -> io::Result<Self> {
        Ok(Self { decoder: zstd::stream::write::Decoder::new(Vec::new())?, max_output })
    }

    pub fn write(&mut self, input: &[u8]) -> io::Result<Vec<u8>> {
        // Feed in slices so the output buffer is checked as it grows.
        for piece in input.chunks(16 * 1024) {
            self.decoder.write_all(piece)?;
            if self.decoder.get_ref().len() > self.max_output {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "zstd stream expands past the allowed size"));
            }
        }
        self.decoder.flush()?;
        Ok(std::mem::take(self.decoder.get_mut()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_pieces() {
        let text: Vec<u8> = (0..200_000u32).flat_map(|i| format!("line {i} of text\n").into_bytes()).collect();
        let mut c = Compressor::new(3).unwrap();
        let mut wire = Vec::new();
        for piece in text.chunks(10_000) {
            wire.extend(c.write(piece).unwrap());
        }
        wire.extend(c.flush().unwrap());
        wire.extend(c.finish().unwrap());
        assert!(wire.len() < text.len() / 4);
        let mut d = Decompressor::new(64 << 20).unwrap();
        let mut out = Vec::new();
        for piece in wire.chunks(777) {
            out.extend(d.write(piece).unwrap());
        }
        assert_eq!(out, text);
    }

    #[test]
    fn flush_makes_prefix_decodable() {
        let mut c = Compressor::new(1).unwrap();
        let mut wire = c.write(b"hello ").unwrap();
        wire.extend(c.flush().unwrap());
        let mut d = Decompressor::new(1 << 20).unwrap();
        assert_eq!(d.write(&wire).unwrap(), b"hello ");
    }

    #[test]
    fn garbage_is_an_error() {
        let mut d = Decompressor::new(1 << 20).unwrap();
        assert!(d.write(&[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0]).is_err());
    }

    #[test]
    fn bomb_is_refused() {
        let zeros = vec![0u8; 8 << 20];
        let mut c = Compressor::new(3).unwrap();
        let mut wire = c.write(&zeros).unwrap();
        wire.extend(c.finish().unwrap());
        let mut d = Decompressor::new(1 << 20).unwrap();
        assert!(d.write(&wire).is_err());
    }
}
