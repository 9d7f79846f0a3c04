//! Putting a finished temp file in place of an older file.
//!
//! A plain rename over an existing file is slow on ext4 for large files: with `auto_da_alloc` (the default) the
//! kernel starts writing the new file back before the rename returns, and dropping the old inode frees its
//! blocks (with discards) inside the same call. Exchanging the two names (`renameat2` with `RENAME_EXCHANGE`)
//! is just as atomic for a reader of the destination and returns at once; the old file is then unlinked while a
//! descriptor keeps it alive, and freeing it happens when that descriptor is closed, off the caller's path.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::FromRawFd;
use std::path::Path;

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn exchange(a: &CString, b: &CString) -> io::Result<()> {
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Moves `temp` to `dest`, replacing what is there. Returns the old file, already unlinked, when it was a regular
/// file that is cheaper to free later: dropping the returned `File` frees it.
///
/// Anything but a regular file at `dest` (nothing, a directory, a symlink) gets a plain `rename`, with its usual
/// errors, so callers keep their handling of those cases.
pub fn replace_file(temp: &Path, dest: &Path) -> io::Result<Option<File>> {
    let is_file = std::fs::symlink_metadata(dest).map(|m| m.file_type().is_file()).unwrap_or(false);
    if !is_file {
        std::fs::rename(temp, dest)?;
        return Ok(None);
    }
    let (t, d) = (cstr(temp)?, cstr(dest)?);
    if let Err(e) = exchange(&t, &d) {
        return match e.raw_os_error() {
            // Filesystems without RENAME_EXCHANGE, old kernels.
            Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
                std::fs::rename(temp, dest).map(|_| None)
            }
            _ => Err(e),
        };
    }
    // `temp` now names what was at `dest`. Something else may have taken that place since the check above: only
    // a regular file is kept for later; a directory is put back where it was and the caller sees the error a
    // rename would give.
    let fd = unsafe { libc::open(t.as_ptr(), libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        // A symlink (ELOOP), or a file we may not read: remove the name now.
        std::fs::remove_file(temp)?;
        return Ok(None);
    }
    let old = unsafe { File::from_raw_fd(fd) };
    let ft = old.metadata()?.file_type();
    if ft.is_dir() {
        exchange(&t, &d)?;
        return Err(io::Error::from_raw_os_error(libc::EISDIR));
    }
    std::fs::remove_file(temp)?;
    Ok(if ft.is_file() { Some(old) } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn replaces_a_file_and_hands_back_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let (t, d) = (dir.path().join("t"), dir.path().join("d"));
        fs::write(&t, b"new").unwrap();
        fs::write(&d, b"old").unwrap();
        let old = replace_file(&t, &d).unwrap();
        assert_eq!(fs::read(&d).unwrap(), b"new");
        assert!(!t.exists());
        let mut s = String::new();
        io::Read::read_to_string(&mut old.unwrap(), &mut s).unwrap();
        assert_eq!(s, "old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn renames_where_nothing_or_a_symlink_stands() {
        let dir = tempfile::tempdir().unwrap();
        let (t, d) = (dir.path().join("t"), dir.path().join("d"));
        fs::write(&t, b"a").unwrap();
        assert!(replace_file(&t, &d).unwrap().is_none());
        assert_eq!(fs::read(&d).unwrap(), b"a");
        let outside = dir.path().join("outside");
        fs::write(&outside, b"keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        fs::write(&t, b"b").unwrap();
        assert!(replace_file(&t, &link).unwrap().is_none());
        assert_eq!(fs::read(&link).unwrap(), b"b");
        assert!(!fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&outside).unwrap(), b"keep");
    }

    #[test]
    fn a_directory_in_the_way_is_an_error_and_stays() {
        let dir = tempfile::tempdir().unwrap();
        let (t, d) = (dir.path().join("t"), dir.path().join("d"));
        fs::write(&t, b"a").unwrap();
        fs::create_dir(&d).unwrap();
        fs::write(d.join("inside"), b"x").unwrap();
        assert!(replace_file(&t, &d).is_err());
        assert_eq!(fs::read(d.join("inside")).unwrap(), b"x");
        assert_eq!(fs::read(&t).unwrap(), b"a");
    }
}
