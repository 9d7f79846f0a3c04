//! zstd as a stream in both directions. Chunks are compressed as one stream, not one by one: small chunks
//! compressed alone lose about a quarter of the ratio.

use std::io::{self, Write};

pub struct Compressor {
    encoder: zstd::stream::write::Encoder<'static, Vec<u8>>,
    level: i32,
}

impl Compressor {
    pub fn new(level: i32) -> io::Result<Self> {
        Ok(Self { encoder: zstd::stream::write::Encoder::new(Vec::new(), level)?, level })
    }

    pub fn level(&self) -> i32 {
        self.level
    }

    /// Compresses what comes next at `level`. A single-threaded zstd context takes a new level only at a frame
    /// boundary, so the current frame ends here (a few bytes, returned with the next output) and the stream
    /// goes on as a concatenation of frames, which any zstd stream decoder reads as one. The new frame starts
    /// without the old one's window: worth it only when the level stays for a while.
    pub fn set_level(&mut self, level: i32) -> io::Result<()> {
        if level == self.level {
            return Ok(());
        }
        let fresh = zstd::stream::write::Encoder::new(Vec::new(), level)?;
        let ended = std::mem::replace(&mut self.encoder, fresh).finish()?;
        *self.encoder.get_mut() = ended;
        self.level = level;
        Ok(())
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
    fn level_changes_keep_one_decodable_stream() {
        // Seeded so a failure can be replayed: text and noise in pieces, the level changing between them.
        let seed: u64 = 0x5eed_2026;
        let mut state = seed;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut c = Compressor::new(3).unwrap();
        let mut d = Decompressor::new(64 << 20).unwrap();
        let (mut sent, mut got) = (Vec::new(), Vec::new());
        for round in 0..40 {
            let level = [1, 3, 6, 9, 3, 1][(next() % 6) as usize];
            c.set_level(level).unwrap();
            assert_eq!(c.level(), level);
            let len = (next() % 200_000) as usize;
            let piece: Vec<u8> = if round % 3 == 0 {
                (0..len).map(|_| next() as u8).collect()
            } else {
                (0..len).map(|i| b"def frame(level): return level\n"[i % 31]).collect()
            };
            let mut wire = c.write(&piece).unwrap();
            wire.extend(c.flush().unwrap());
            sent.extend_from_slice(&piece);
            got.extend(d.write(&wire).unwrap());
            assert_eq!(got.len(), sent.len(), "seed {seed:#x}, round {round}: the block must decode whole at once");
        }
        assert!(got == sent, "seed {seed:#x}: stream differs");
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
