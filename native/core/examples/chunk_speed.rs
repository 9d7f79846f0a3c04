//! Wall time of one large file's chunk + hash, single pass against segmented, and the parts that bound it.
//!
//!     cargo run --release -p skysync-core --example chunk_speed -- FILE [RUNS]
//!
//! FILE should be in the page cache (it is read once before the runs). Each row prints the median and best of
//! RUNS, and the share of CPU time the whole machine spent idle during them (from /proc/stat), since a busy
//! machine shows up as a slow row. GB per CPU second is what one core would do alone, whatever the load.

use std::fs::File;
use std::io::Read;
use std::time::Instant;

use rayon::prelude::*;
use skysync_core::chunk::parallel::{chunk_file_parallel, ReadAt, BLOCK};
use skysync_core::chunk::{chunk_id, cut_points};
use skysync_core::{chunk_reader, DEFAULT_PARAMS};

/// (idle, total) jiffies of all CPUs.
fn cpu_times() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (idle, fields.iter().sum())
}

/// CPU seconds this process has used, user and system.
fn own_cpu() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

fn row(name: &str, bytes: u64, runs: usize, mut f: impl FnMut()) {
    let (idle0, total0) = cpu_times();
    let cpu0 = own_cpu();
    let mut secs: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    let (idle1, total1) = cpu_times();
    let cpu = (own_cpu() - cpu0) / runs as f64;
    secs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let gbs = |s: f64| bytes as f64 / s / 1e9;
    let idle = 100.0 * (idle1 - idle0) as f64 / (total1 - total0).max(1) as f64;
    println!(
        "| {name} | {:.3} s | {:.2} | {:.2} | {:.2} | {idle:.0}% |",
        secs[runs / 2],
        gbs(secs[runs / 2]),
        gbs(secs[0]),
        gbs(cpu)
    );
}

/// `f` over `parts` equal slices of `data` at once, one per rayon task.
fn split(data: &[u8], parts: usize, f: impl Fn(&[u8]) + Sync + Send) {
    let size = data.len().div_ceil(parts);
    data.par_chunks(size).for_each(f);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).expect("usage: chunk_speed FILE [RUNS]");
    let runs: usize = args.get(2).map_or(5, |r| r.parse().expect("RUNS"));
    let mut data = Vec::new();
    File::open(path).unwrap().read_to_end(&mut data).unwrap();
    let len = data.len() as u64;
    let threads = rayon::current_num_threads();
    let spans: Vec<(usize, usize)> = {
        let mut off = 0;
        cut_points(&data, DEFAULT_PARAMS)
            .into_iter()
            .map(|l| {
                off += l;
                (off - l, l)
            })
            .collect()
    };
    println!("{} bytes, {} chunks, {threads} rayon threads, {runs} runs\n", len, spans.len());
    println!(
        "| what | median | GB/s median | GB/s best | GB per CPU second | machine idle |\n|---|---|---|---|---|---|"
    );
    row("single pass (chunk_reader: cut on one thread, hash on the pool)", len, runs, || {
        chunk_reader(File::open(path).unwrap(), DEFAULT_PARAMS).unwrap();
    });
    row("segmented (chunk_file_parallel)", len, runs, || {
        chunk_file_parallel(&File::open(path).unwrap(), len, DEFAULT_PARAMS).unwrap();
    });
    let read_all = |parts: usize| {
        let file = File::open(path).unwrap();
        let size = len.div_ceil(parts as u64);
        (0..parts).into_par_iter().for_each(|i| {
            let mut buf = vec![0u8; BLOCK];
            let mut at = i as u64 * size;
            let end = (at + size).min(len);
            while at < end {
                at += file.read_at(&mut buf, at).unwrap().max(1) as u64;
            }
        });
    };
    row("read alone (pread 2 MiB blocks), 1 thread", len, runs, || read_all(1));
    row(&format!("read alone, {threads} threads"), len, runs, || read_all(threads));
    row("cut alone (in memory), 1 thread", len, runs, || split(&data, 1, |d| drop(cut_points(d, DEFAULT_PARAMS))));
    row(&format!("cut alone, {threads} threads"), len, runs, || {
        split(&data, threads, |d| drop(cut_points(d, DEFAULT_PARAMS)))
    });
    row("hash alone (BLAKE3 per chunk, in memory), 1 thread", len, runs, || {
        spans.iter().for_each(|&(s, l)| {
            std::hint::black_box(chunk_id(&data[s..s + l]));
        })
    });
    row(&format!("hash alone, {threads} threads"), len, runs, || {
        spans.par_iter().for_each(|&(s, l)| {
            std::hint::black_box(chunk_id(&data[s..s + l]));
        })
    });
    row("cut + hash fused (in memory), 1 thread", len, runs, || {
        split(&data, 1, |d| {
            let mut off = 0;
            for l in cut_points(d, DEFAULT_PARAMS) {
                chunk_id(&d[off..off + l]);
                off += l;
            }
        })
    });
}
