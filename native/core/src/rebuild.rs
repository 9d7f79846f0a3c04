//! Rebuilding a changed large file from the old copy held on this side.
//!
//! A small edit to a large file leaves long runs of chunks that the receiver already holds, in the same order.
//! Such a run is moved into the new temp file by the kernel (`FICLONERANGE` where the filesystem shares blocks,
//! else `copy_file_range`), never through JavaScript buffers, and what landed in the temp file is then read
//! back and hashed against the chunk ids: the old file may have changed since it was placed, and only the
//! bytes that are in the new file count. The run is cut into segments handled in parallel on the write pool, so
//! one thread's kernel copy overlaps another's hashing.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::chunk::{chunk_id, ChunkRef};
use crate::write::in_pool;

/// Bytes a segment holds at least (whole chunks): large enough that a kernel copy is worth its syscall, small
/// enough that both threads get work from a run of a few tens of MiB.
const SEGMENT: u64 = 8 << 20;

/// How a run of held chunks is moved into the temp file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyMode {
    /// Reflink, else `copy_file_range`, else read + write: whichever the filesystem offers.
    Kernel,
    /// Read into memory, verify, write: for filesystems (or tests) where the kernel copy is not wanted.
    Read,
}

/// Why a run could not be copied.
#[derive(Debug)]
pub enum CopyError {
    /// The chunk at this index of the run does not match its id.
    BadChunk(usize),
    /// The source ends before the run does.
    Short,
    Io(io::Error),
}

impl From<io::Error> for CopyError {
    fn from(e: io::Error) -> Self {
        CopyError::Io(e)
    }
}

/// One segment: the run's chunks `first..end`, at `offset` bytes into the run, `len` bytes long.
struct Segment {
    first: usize,
    end: usize,
    offset: u64,
    len: u64,
}

fn segments(refs: &[ChunkRef]) -> Vec<Segment> {
    let mut out = Vec::new();
    let (mut first, mut offset, mut len) = (0, 0u64, 0u64);
    for (i, r) in refs.iter().enumerate() {
        len += u64::from(r.len);
        if len >= SEGMENT || i + 1 == refs.len() {
            out.push(Segment { first, end: i + 1, offset, len });
            offset += len;
            (first, len) = (i + 1, 0);
        }
    }
    out
}

/// Copies the run of chunks `refs`, found at `src_offset` in `src`, to `dst_offset` in `dst` (which must be open
/// for reading too), verifying every chunk as it is in `dst`. On an error `dst` may hold part of the run.
pub fn copy_verified(
    src: RawFd,
    dst: RawFd,
    src_offset: u64,
    dst_offset: u64,
    refs: &[ChunkRef],
    mode: CopyMode,
) -> Result<(), CopyError> {
    let segs = segments(refs);
    for s in segs.iter().take(READ_AHEAD) {
        will_need(src, src_offset + s.offset, s.len);
    }
    let results: Vec<Result<(), CopyError>> = in_pool(|| {
        segs.par_iter()
            .enumerate()
            .with_max_len(1)
            .map(|(k, s)| {
                // The old file is often cold (the page cache lets go of it within minutes): ask for the segments
                // ahead, so the disk reads them while this one is copied and hashed.
                if let Some(ahead) = segs.get(k + READ_AHEAD) {
                    will_need(src, src_offset + ahead.offset, ahead.len);
                }
                let chunks = &refs[s.first..s.end];
                copy_segment(src, dst, src_offset + s.offset, dst_offset + s.offset, s.len, chunks, mode).map_err(|e| {
                    match e {
                        CopyError::BadChunk(i) => CopyError::BadChunk(s.first + i),
                        e => e,
                    }
                })
            })
            .collect()
    });
    // The first failure in file order, so the caller names the same chunk whatever the threads did.
    results.into_iter().collect()
}

/// Segments asked of the disk ahead of the one being copied.
const READ_AHEAD: usize = 4;

fn will_need(fd: RawFd, at: u64, len: u64) {
    // SAFETY: advice only; any error (a pipe, an old kernel) just means no read ahead.
    unsafe { libc::posix_fadvise(fd, at as libc::off_t, len as libc::off_t, libc::POSIX_FADV_WILLNEED) };
}

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn copy_segment(
    src: RawFd,
    dst: RawFd,
    from: u64,
    to: u64,
    len: u64,
    chunks: &[ChunkRef],
    mode: CopyMode,
) -> Result<(), CopyError> {
    BUFFER.with(|b| {
        let mut buf = b.borrow_mut();
        buf.resize(len as usize, 0);
        let buf = &mut buf[..len as usize];
        if mode == CopyMode::Kernel && kernel_copy(src, dst, from, to, len)? {
            // Verify what the kernel put in the temp file, not what the source holds now: hashed where it lies in
            // the page cache (mapped, not copied out).
            if let Some(view) = Mapped::new(dst, to, len) {
                return verify(view.bytes(), chunks);
            }
            if read_exact_at(dst, buf, to)? < buf.len() {
                return Err(CopyError::Io(io::Error::other("temp file shorter than what was copied into it")));
            }
            return verify(buf, chunks);
        }
        if read_exact_at(src, buf, from)? < buf.len() {
            return Err(CopyError::Short);
        }
        verify(buf, chunks)?;
        write_all_at(dst, buf, to)?;
        Ok(())
    })
}

fn verify(data: &[u8], chunks: &[ChunkRef]) -> Result<(), CopyError> {
    let mut off = 0usize;
    for (i, c) in chunks.iter().enumerate() {
        let end = off + c.len as usize;
        if chunk_id(&data[off..end]) != c.id {
            return Err(CopyError::BadChunk(i));
        }
        off = end;
    }
    Ok(())
}

/// Set once the filesystem refused a reflink or a kernel copy: later segments go straight to the next way.
static NO_CLONE: AtomicBool = AtomicBool::new(false);
static NO_COPY_RANGE: AtomicBool = AtomicBool::new(false);

/// Errors that mean "this filesystem (or kernel) cannot do that", not "this copy failed".
fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EXDEV | libc::EINVAL | libc::ENOTTY))
}

/// Moves `len` bytes in the kernel. Ok(false): the kernel cannot, the caller copies through memory. A source
/// that ends early is `Short`.
fn kernel_copy(src: RawFd, dst: RawFd, from: u64, to: u64, len: u64) -> Result<bool, CopyError> {
    let block = 4096u64;
    if !NO_CLONE.load(Ordering::Relaxed) && [from, to, len].iter().all(|v| v.is_multiple_of(block)) {
        let range = libc_file_clone_range { src_fd: src as i64, src_offset: from, src_length: len, dest_offset: to };
        // SAFETY: FICLONERANGE reads a properly laid out struct that outlives the call; both fds are open.
        let r = unsafe { libc::ioctl(dst, FICLONERANGE, &range) };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        if !unsupported(&e) {
            return Err(e.into());
        }
        NO_CLONE.store(true, Ordering::Relaxed);
    }
    if NO_COPY_RANGE.load(Ordering::Relaxed) {
        return Ok(false);
    }
    let (mut off_in, mut off_out) = (from as libc::loff_t, to as libc::loff_t);
    let mut left = len;
    while left > 0 {
        // SAFETY: the offsets are locals the kernel advances; both fds are open for the whole call.
        let n = unsafe { libc::copy_file_range(src, &mut off_in, dst, &mut off_out, left as usize, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if left == len && unsupported(&e) {
                NO_COPY_RANGE.store(true, Ordering::Relaxed);
                return Ok(false);
            }
            return Err(e.into());
        }
        if n == 0 {
            return Err(CopyError::Short);
        }
        left -= n as u64;
    }
    Ok(true)
}

/// `struct file_clone_range` of linux/fs.h.
#[repr(C)]
#[allow(non_camel_case_types)]
struct libc_file_clone_range {
    src_fd: i64,
    src_offset: u64,
    src_length: u64,
    dest_offset: u64,
}

/// `_IOW(0x94, 13, struct file_clone_range)`.
const FICLONERANGE: libc::c_ulong = 0x4020_940d;

/// A read-only shared mapping of part of a file, unmapped on drop.
struct Mapped {
    base: *mut libc::c_void,
    map_len: usize,
    skip: usize,
    len: usize,
}

impl Mapped {
    /// None when the range cannot be mapped (the caller reads it instead).
    fn new(fd: RawFd, at: u64, len: u64) -> Option<Mapped> {
        let page = 4096u64;
        let start = at - at % page;
        let (skip, len) = ((at - start) as usize, len as usize);
        if len == 0 {
            return None;
        }
        let map_len = skip + len;
        // SAFETY: a fresh read-only mapping of a file this process holds open; nothing else aliases it mutably.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                start as libc::off_t,
            )
        };
        (base != libc::MAP_FAILED).then_some(Mapped { base, map_len, skip, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping covers `skip + len` bytes, all inside the file (the kernel just wrote them), and
        // lives as long as `self`. Only this sync writes the temp file (created O_EXCL, mode 0600), and not this
        // range while it is hashed.
        unsafe { std::slice::from_raw_parts((self.base as *const u8).add(self.skip), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made.
        unsafe { libc::munmap(self.base, self.map_len) };
    }
}

/// Reads until `buf` is full or the file ends; returns how much was read.
fn read_exact_at(fd: RawFd, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe {
            libc::pread(fd, buf[done..].as_mut_ptr().cast(), buf.len() - done, (at + done as u64) as libc::off_t)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    Ok(done)
}

fn write_all_at(fd: RawFd, buf: &[u8], at: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer and length describe the unwritten tail of `buf`.
        let n = unsafe {
            libc::pwrite(fd, buf[done..].as_ptr().cast(), buf.len() - done, (at + done as u64) as libc::off_t)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}
