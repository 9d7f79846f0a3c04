//! Paths cross napi as latin1 strings (one char per byte), so names that are not UTF-8 survive byte for byte.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use napi::bindgen_prelude::*;
use napi::sys;

/// A path as raw bytes, carried to and from JavaScript as a latin1 string.
pub struct BytePath(pub Vec<u8>);

impl TypeName for BytePath {
    fn type_name() -> &'static str {
        "string"
    }
    fn value_type() -> ValueType {
        ValueType::String
    }
}

impl ValidateNapiValue for BytePath {}

impl ToNapiValue for BytePath {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        let mut out = std::ptr::null_mut();
        check_status!(unsafe {
            sys::napi_create_string_latin1(env, val.0.as_ptr().cast(), val.0.len() as isize, &mut out)
        })?;
        Ok(out)
    }
}

impl FromNapiValue for BytePath {
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> Result<Self> {
        let mut len = 0usize;
        check_status!(unsafe { sys::napi_get_value_string_latin1(env, value, std::ptr::null_mut(), 0, &mut len) })?;
        let mut buf = vec![0u8; len + 1];
        let mut written = 0usize;
        check_status!(unsafe {
            sys::napi_get_value_string_latin1(env, value, buf.as_mut_ptr().cast(), len + 1, &mut written)
        })?;
        buf.truncate(written);
        Ok(BytePath(buf))
    }
}

pub(crate) fn join(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(std::ffi::OsStr::from_bytes(rel))
}

/// Paths joined with NUL bytes (which no path holds), one by one; none for an empty string.
pub(crate) fn split_nul(joined: &[u8]) -> Vec<Vec<u8>> {
    if joined.is_empty() {
        return Vec::new();
    }
    joined.split(|&b| b == 0).map(|p| p.to_vec()).collect()
}

/// Directories whose direct entries are covered, and subtrees covered whole: what a watch saw change.
pub(crate) type DirScope = (Vec<Vec<u8>>, Vec<Vec<u8>>);

pub(crate) fn dir_scope(dirs: Vec<BytePath>, subtrees: Vec<BytePath>) -> DirScope {
    (dirs.into_iter().map(|d| d.0).collect(), subtrees.into_iter().map(|d| d.0).collect())
}
