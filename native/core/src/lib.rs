//! skysync's hot path as a plain Rust crate: the napi binding in `../binding` is a thin layer over it.
//!
//! Data path: `scan` (walk + ignore rules) -> `tree` (compare with the tree of the last sync) -> `chunk` (FastCDC +
//! BLAKE3 over what changed) -> `compress` (zstd stream for the wire); on the receiving side `write` creates and
//! renames files in parallel batches.

pub mod chunk;
pub mod compress;
pub mod drift;
pub mod entry;
pub mod ignore_rules;
pub mod read;
pub mod rebuild;
pub mod rechunk;
pub mod replace;
pub mod scan;
pub mod tree;
pub mod watch;
pub mod write;

pub use chunk::{chunk_bytes, chunk_file, chunk_files, chunk_reader, ChunkParams, ChunkRef, Recipe, DEFAULT_PARAMS};
pub use entry::{Entry, EntryList, EntryRef, Kind, Meta};
pub use rechunk::{chunk_file_hinted, chunk_files_hinted};
pub use scan::{scan_tree, scan_tree_partial, scan_tree_sized, ScanError, ScanOutput, Warning, WarningKind};
pub use tree::{Change, ChangeKind, LoadError, Tree};
