//! The sending side's batch reader: the literal bytes of many small files, read in parallel off the JavaScript
//! thread. One file at a time from JavaScript costs an open, a read and a close on the event loop per file
//! (seconds for tens of thousands of files, and a cold page cache makes the link wait on each one).

use std::fs::OpenOptions;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use rayon::prelude::*;

/// One range to read: a path relative to the root, an offset and a length.
pub struct ReadRange<'a> {
    pub path: &'a [u8],
    pub offset: u64,
    pub len: u32,
}

/// Why a range could not be read: its index and what happened.
#[derive(Debug)]
pub struct ReadFailure {
    pub index: usize,
    pub error: io::Error,
}

/// The bytes of every range, one after another. The last component of each path is not followed if it is a
/// symlink (a file replaced by a link since the scan is refused, not read through). A file shorter than its
/// range changed since it was chunked: that is an error too.
pub fn read_ranges(root: &Path, ranges: &[ReadRange]) -> Result<Vec<u8>, ReadFailure> {
    let parts: Vec<Result<Vec<u8>, ReadFailure>> = crate::write::in_pool(|| {
        ranges
            .par_iter()
            .enumerate()
            .map(|(index, r)| read_one(root, r).map_err(|error| ReadFailure { index, error }))
            .collect()
    });
    let total = ranges.iter().map(|r| r.len as usize).sum();
    let mut out = Vec::with_capacity(total);
    for p in parts {
        out.extend_from_slice(&p?);
    }
    Ok(out)
}

fn read_one(root: &Path, r: &ReadRange) -> io::Result<Vec<u8>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(root.join(std::ffi::OsStr::from_bytes(r.path)))?;
    let mut buf = vec![0u8; r.len as usize];
    file.read_exact_at(&mut buf, r.offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(io::ErrorKind::UnexpectedEof, "changed while it was read")
        } else {
            e
        }
    })?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ranges_in_order_and_refuses_short_files_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("a"), b"0123456789").unwrap();
        std::fs::write(dir.path().join("d/b"), b"abcdef").unwrap();
        let got = read_ranges(
            dir.path(),
            &[
                ReadRange { path: b"d/b", offset: 0, len: 6 },
                ReadRange { path: b"a", offset: 3, len: 4 },
                ReadRange { path: b"a", offset: 0, len: 0 },
            ],
        )
        .unwrap();
        assert_eq!(got, b"abcdef3456");
        let short = read_ranges(
            dir.path(),
            &[ReadRange { path: b"a", offset: 0, len: 2 }, ReadRange { path: b"a", offset: 8, len: 5 }],
        )
        .unwrap_err();
        assert_eq!(short.index, 1);
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("link")).unwrap();
        assert!(read_ranges(dir.path(), &[ReadRange { path: b"link", offset: 0, len: 1 }]).is_err());
        assert!(read_ranges(dir.path(), &[ReadRange { path: b"missing", offset: 0, len: 1 }]).is_err());
    }
}
