//! Writes the golden vectors that pin the TypeScript fallback chunker (packages/chunking) to this crate.
//!
//!     cd native && cargo run --release -p skysync-core --example golden -- ../packages/chunking/test/golden.json
//!
//! Every input is described, not stored: a literal (hex), a run of one byte, a repeated text, or the output of
//! the xorshift64 generator below (optionally with each byte ANDed with a mask, for low-entropy data). The
//! TypeScript test rebuilds the inputs with the same generator and compares cut points, chunk ids and digests.

use std::fmt::Write as _;

use skysync_core::chunk::{chunk_bytes, cut_points, ChunkParams, DEFAULT_PARAMS};

/// xorshift64 (13, 7, 17); each state is emitted as 8 little-endian bytes, the last word truncated.
fn xorshift(len: usize, seed: u64, mask: u8) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    for b in &mut out {
        *b &= mask;
    }
    out
}

enum Source {
    Hex(&'static str),
    Fill { byte: u8, len: usize },
    Text { text: &'static str, repeat: usize },
    Xorshift { seed: u64, len: usize, mask: u8 },
}

struct Input {
    name: &'static str,
    source: Source,
}

impl Input {
    fn bytes(&self) -> Vec<u8> {
        match &self.source {
            Source::Hex(h) => (0..h.len() / 2).map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap()).collect(),
            Source::Fill { byte, len } => vec![*byte; *len],
            Source::Text { text, repeat } => text.as_bytes().repeat(*repeat),
            Source::Xorshift { seed, len, mask } => xorshift(*len, *seed, *mask),
        }
    }

    fn describe(&self) -> String {
        match &self.source {
            Source::Hex(h) => format!("{{\"kind\":\"hex\",\"hex\":\"{h}\"}}"),
            Source::Fill { byte, len } => format!("{{\"kind\":\"fill\",\"byte\":{byte},\"len\":{len}}}"),
            Source::Text { text, repeat } => {
                format!("{{\"kind\":\"text\",\"text\":{},\"repeat\":{repeat}}}", json_string(text))
            }
            Source::Xorshift { seed, len, mask } => {
                format!("{{\"kind\":\"xorshift\",\"seed\":\"{seed:#018x}\",\"len\":{len},\"mask\":{mask}}}")
            }
        }
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32).unwrap(),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        write!(s, "{b:02x}").unwrap();
        s
    })
}

fn main() {
    let out_path = std::env::args().nth(1).unwrap_or_else(|| "golden.json".to_string());

    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    let inputs = [
        Input { name: "empty", source: Source::Hex("") },
        Input { name: "one-byte", source: Source::Hex("5a") },
        Input { name: "zeros-300k", source: Source::Fill { byte: 0, len: 300 * KIB } },
        Input {
            name: "text",
            source: Source::Text { text: "skysync keeps two trees in step, one chunk at a time.\n", repeat: 3000 },
        },
        Input { name: "rand-63", source: Source::Xorshift { seed: 0x2545f4914f6cdd1d, len: 63, mask: 0xff } },
        Input { name: "rand-4095", source: Source::Xorshift { seed: 3, len: 4095, mask: 0xff } },
        Input { name: "rand-4097", source: Source::Xorshift { seed: 4, len: 4097, mask: 0xff } },
        Input { name: "rand-65537", source: Source::Xorshift { seed: 5, len: 64 * KIB + 1, mask: 0xff } },
        Input {
            name: "rand-200k",
            source: Source::Xorshift { seed: 0x9e3779b97f4a7c15, len: 200 * KIB + 3, mask: 0xff },
        },
        Input { name: "lowent-200k", source: Source::Xorshift { seed: 77, len: 200 * KIB, mask: 0x03 } },
        Input { name: "rand-1m", source: Source::Xorshift { seed: 1, len: MIB + 7, mask: 0xff } },
        Input { name: "lowent-1m", source: Source::Xorshift { seed: 12345, len: MIB, mask: 0x11 } },
        Input {
            name: "rand-3m",
            source: Source::Xorshift { seed: 0xdeadbeefcafef00d, len: 3 * MIB + 333, mask: 0xff },
        },
    ];

    // (name, params, largest input to chunk with them: small averages make many chunks, and the file stays small)
    let param_sets: [(&str, ChunkParams, usize); 4] = [
        ("default", DEFAULT_PARAMS, usize::MAX),
        ("8k-32k-128k", ChunkParams { min_size: 8 * 1024, avg_size: 32 * 1024, max_size: 128 * 1024 }, usize::MAX),
        ("64-256-1024", ChunkParams { min_size: 64, avg_size: 256, max_size: 1024 }, 310 * KIB),
        // Odd sizes and a non-power-of-two average: exercises the rounded log2 mask choice and the odd minimum.
        ("1000-4096-9001", ChunkParams { min_size: 1000, avg_size: 4096, max_size: 9001 }, 210 * KIB),
    ];

    let mut json = String::new();
    json.push_str("{\n\"about\":\"Golden vectors from native/core/examples/golden.rs (fastcdc v2020, Normalization::Level1, BLAKE3). Regenerate, do not edit.\",\n");
    json.push_str("\"generator\":\"xorshift64: s^=s<<13; s^=s>>7; s^=s<<17; emit s as 8 little-endian bytes; truncate to len; AND every byte with mask\",\n");
    json.push_str("\"params\":{");
    for (i, (name, p, _)) in param_sets.iter().enumerate() {
        p.validate().unwrap();
        if i > 0 {
            json.push(',');
        }
        write!(
            json,
            "\n\"{name}\":{{\"minSize\":{},\"avgSize\":{},\"maxSize\":{}}}",
            p.min_size, p.avg_size, p.max_size
        )
        .unwrap();
    }
    json.push_str("\n},\n\"inputs\":{");
    for (i, input) in inputs.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        write!(json, "\n\"{}\":{}", input.name, input.describe()).unwrap();
    }
    json.push_str("\n},\n\"cases\":[");
    let mut first = true;
    for input in &inputs {
        let data = input.bytes();
        for (pname, params, limit) in &param_sets {
            if data.len() > *limit {
                continue;
            }
            let recipe = chunk_bytes(&data, *params);
            let lengths: Vec<u32> = recipe.chunks.iter().map(|c| c.len).collect();
            assert_eq!(lengths, cut_points(&data, *params).iter().map(|&l| l as u32).collect::<Vec<_>>());
            if !first {
                json.push(',');
            }
            first = false;
            let lens = lengths.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(",");
            let ids = recipe.chunks.iter().map(|c| format!("\"{}\"", hex(&c.id))).collect::<Vec<_>>().join(",");
            write!(
                json,
                "\n{{\"input\":\"{}\",\"params\":\"{pname}\",\"size\":{},\"digest\":\"{}\",\"lengths\":[{lens}],\"ids\":[{ids}]}}",
                input.name,
                recipe.size,
                hex(&recipe.digest)
            )
            .unwrap();
        }
    }
    json.push_str("\n]\n}\n");
    std::fs::write(&out_path, &json).unwrap_or_else(|e| panic!("cannot write {out_path}: {e}"));
    eprintln!("wrote {out_path} ({} bytes)", json.len());
}
