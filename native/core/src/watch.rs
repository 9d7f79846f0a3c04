//! A filesystem watcher (Linux inotify) that lets a scan list only the directories that changed since an earlier
//! scan (`scan_tree_partial`). It watches every directory the scan would enter (same ignore rules), and keeps, per
//! directory, the sequence number of its last change, plus "subtree" marks for directories that appeared (what
//! happened inside before their watch was added is unknown, so they are walked whole).
//!
//! The contract: a caller asks `changes_since(None)` for a token before scanning, and stores it with the tree that
//! scan produces. Later, `changes_since(Some(token))` either names every directory in which something may have
//! changed after the token was given (an event is queued when the syscall completes, and a query drains the
//! queue first, so every change completed after the earlier answer is counted), or says `full`. It says `full`
//! whenever it cannot vouch for that: a token of another watcher (the instance id), an overflowed event queue, an
//! ignore file changed (the set of watched directories changes with it), a directory that cannot be watched
//! (permissions, the watch limit), a mount inside the tree on a filesystem whose changes may come from elsewhere
//! (NFS, FUSE...), a change of the mount table, or a file that got a second name (see `linked` below). Directory
//! renames are followed exactly: the source's parent is listed again (the old name is gone from it) and the
//! destination is a new subtree with fresh watches.
//!
//! Hard links: a write through one name of a file gives an event in that name's directory only. Files that have
//! several names when a directory is walked put it in `linked`: it is listed at every query, so writes through any
//! name are seen. A name made later in a watched directory (ignored names included) makes the watcher walk again
//! to find where the file's other names are, and answer full.
//!
//! Known blind spots of inotify, not covered: writes through a shared `mmap` (no event, and the mtime may move
//! later); and a second name for a file of the tree made outside the watched directories (outside the root, or in
//! an ignored directory) after the walk, then written through that name: the link gives no event at all.

use std::path::{Path, PathBuf};

/// Which watcher and which moment: what a caller stores with the tree of the scan that followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub instance: u64,
    pub seq: u64,
}

impl Token {
    pub fn encode(&self) -> String {
        format!("{:016x}:{}", self.instance, self.seq)
    }

    pub fn parse(s: &str) -> Option<Token> {
        let (i, q) = s.split_once(':')?;
        Some(Token { instance: u64::from_str_radix(i, 16).ok()?, seq: q.parse().ok()? })
    }
}

/// What changed since a token. `token` is the one to store with the tree of a scan that starts after this answer.
#[derive(Clone, Debug)]
pub struct Changes {
    pub token: Token,
    /// The watcher cannot vouch for the token given: scan everything.
    pub full: bool,
    pub reason: Option<String>,
    /// Directories to list again (their direct entries).
    pub dirs: Vec<Vec<u8>>,
    /// Directories to walk whole.
    pub subtrees: Vec<Vec<u8>>,
}

#[derive(Debug)]
pub enum WatchError {
    /// Not on this platform or filesystem; callers scan everything.
    Unsupported(String),
    /// The first walk is still adding watches.
    NotReady,
    /// A walk after lost events or changed rules holds the watcher longer than a caller should wait.
    Busy,
    /// The root went away or moved: this watcher can never answer again (start another).
    Dead(String),
    Io(std::io::Error),
}

impl std::fmt::Display for WatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchError::Unsupported(why) => write!(f, "watching is not supported: {why}"),
            WatchError::NotReady => write!(f, "the watcher is still starting"),
            WatchError::Busy => write!(f, "the watcher is walking the tree again"),
            WatchError::Dead(why) => write!(f, "the watcher stopped: {why}"),
            WatchError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for WatchError {}

#[derive(Clone, Copy, Debug, Default)]
pub struct WatchOptions {
    /// Read events on a thread of its own as they come (the normal case). Without it, events wait in the kernel
    /// queue until the next query: tests use that to overflow the queue.
    pub no_thread: bool,
}

#[cfg(target_os = "linux")]
pub use linux::Watcher;

#[cfg(not(target_os = "linux"))]
pub struct Watcher;

#[cfg(not(target_os = "linux"))]
impl Watcher {
    pub fn start(_root: &Path, _opts: WatchOptions) -> Result<Watcher, WatchError> {
        Err(WatchError::Unsupported("only Linux (inotify) is supported".into()))
    }
    pub fn changes_since(&self, _since: Option<Token>) -> Result<Changes, WatchError> {
        Err(WatchError::Unsupported("only Linux (inotify) is supported".into()))
    }
    pub fn wait_ready(&self, _timeout: std::time::Duration) -> bool {
        false
    }
    pub fn instance(&self) -> u64 {
        0
    }
}

fn join_rel(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    if !dir.is_empty() {
        p.extend_from_slice(dir);
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn abs_of(root: &Path, rel: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(std::ffi::OsStr::from_bytes(rel))
    }
}

/// A name whose change changes the ignore rules (see `scan.rs` and `ignore_rules.rs`): an ignore file at any level
/// (either kind: a root `.skyignore` switches the kind), and the root's `.git/info/exclude` with the directories on
/// its way.
fn feeds_rules(dir: &[u8], name: &[u8]) -> bool {
    name == b".gitignore"
        || name == b".skyignore"
        || (dir.is_empty() && name == b".git")
        || (dir == b".git" && name == b"info")
        || (dir == b".git/info" && name == b"exclude")
}

#[cfg(target_os = "linux")]
mod linux;
