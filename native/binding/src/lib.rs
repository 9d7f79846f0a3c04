//! The napi binding: a thin layer over `skysync-core`, one file per concern. Paths cross as latin1 strings (one
//! char per byte, `paths`), so names that are not UTF-8 survive byte for byte; JavaScript converts for display
//! only. Packed records are laid out in `layouts`.

#![deny(clippy::all)]

pub mod chunk;
pub mod compress;
pub mod drift;
pub mod layouts;
pub mod paths;
pub mod placed;
pub mod read;
pub mod rebuild;
pub mod scan;
pub mod tree;
pub mod watch;
pub mod write;

use napi::bindgen_prelude::{Error, Status};

pub(crate) fn io_err(e: std::io::Error) -> Error {
    Error::new(Status::GenericFailure, e.to_string())
}
