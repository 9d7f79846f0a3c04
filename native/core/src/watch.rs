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
mod linux {
    use super::*;
    use crate::ignore_rules::{is_ignored, push_level, IgnoreMode, RuleChain};
    use std::collections::{BTreeMap, BTreeSet, HashMap};
    use std::ffi::{CString, OsStr};
    use std::fs;
    use std::io;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    const EVENTS: u32 = libc::IN_MODIFY
        | libc::IN_ATTRIB
        | libc::IN_CLOSE_WRITE
        | libc::IN_MOVED_FROM
        | libc::IN_MOVED_TO
        | libc::IN_CREATE
        | libc::IN_DELETE
        | libc::IN_DELETE_SELF
        | libc::IN_MOVE_SELF
        | libc::IN_EXCL_UNLINK;

    /// Past this many marks the bookkeeping costs more than a full scan: start over from a full one.
    const MAX_MARKS: usize = 200_000;

    /// Filesystems whose every change goes through this kernel, so inotify sees it. Others (NFS, CIFS, FUSE, 9p,
    /// virtiofs...) can change under us from another machine or process without an event.
    const TRUSTED_FS: &[i64] = &[
        0xEF53,     // ext2/3/4
        0x58465342, // xfs
        0x9123683E, // btrfs
        0x01021994, // tmpfs
        0x858458f6, // ramfs
        0xF2F52010, // f2fs
        0x2FC12FC1, // zfs
        0xca451a4e, // bcachefs
        0x794c7630, // overlayfs (changes made through it)
        0x3153464a, // jfs
        0x52654973, // reiserfs
        0x4d44,     // vfat
        0x5346544e, // ntfs
        0x7366746e, // ntfs3
        0x2011BAB0, // exfat
    ];

    struct Watched {
        rel: Vec<u8>,
        /// The rules that apply to its entries (its own ignore file included).
        chain: RuleChain,
        dev: u64,
    }

    struct State {
        fd: libc::c_int,
        root: PathBuf,
        root_id: (u64, u64),
        root_wd: i32,
        mode: IgnoreMode,
        instance: u64,
        /// Marks made now carry this number; a query answers with it and moves it on.
        seq: u64,
        /// Tokens below this cannot be vouched for.
        full_at: u64,
        full_reason: String,
        dead: Option<String>,
        watches: HashMap<i32, Watched>,
        by_path: BTreeMap<Vec<u8>, i32>,
        /// Watches on `.git` and `.git/info` when they are not directories of the tree (ignored, or reached through
        /// a symlink): only their names that feed the rules matter.
        special: HashMap<i32, Vec<u8>>,
        dirty: HashMap<Vec<u8>, u64>,
        subtrees: HashMap<Vec<u8>, u64>,
        /// Directories holding a file with several names: a write through another name gives no event here.
        linked: BTreeSet<Vec<u8>>,
        /// Directories that cannot be watched or trusted (path -> why): every answer is `full` while any is left.
        problems: BTreeMap<Vec<u8>, (String, bool)>,
        mounts: u64,
        /// A rebuild asked for while draining (see `rebuild`).
        pending: Option<String>,
        buf: Vec<u64>,
    }

    /// The mounts below `root` (its real path): mounting over a directory of the tree gives no event. Mounts
    /// elsewhere (containers starting...) do not count; one over the root or above it changes the root's identity.
    fn mounts_hash(root: &Path) -> u64 {
        use std::hash::{Hash, Hasher};
        let real = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        // mountinfo escapes space, tab, newline and backslash as octal.
        let mut esc = Vec::new();
        for &b in real.as_os_str().as_bytes() {
            match b {
                b' ' | b'\t' | b'\n' | b'\\' => esc.extend_from_slice(format!("\\{b:03o}").as_bytes()),
                _ => esc.push(b),
            }
        }
        if esc.last() != Some(&b'/') {
            esc.push(b'/');
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let info = fs::read("/proc/self/mountinfo").unwrap_or_default();
        for line in info.split(|&b| b == b'\n') {
            if line.split(|&b| b == b' ').nth(4).is_some_and(|mp| mp.starts_with(&esc)) {
                line.hash(&mut h);
            }
        }
        h.finish()
    }

    fn fs_type(path: &Path) -> Option<i64> {
        let c = CString::new(path.as_os_str().as_bytes()).ok()?;
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
            return None;
        }
        Some(st.f_type as i64)
    }

    fn random_u64() -> u64 {
        let mut b = [0u8; 8];
        if let Ok(mut f) = fs::File::open("/dev/urandom") {
            use std::io::Read;
            if f.read_exact(&mut b).is_ok() {
                return u64::from_le_bytes(b);
            }
        }
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        (t.as_nanos() as u64) ^ ((std::process::id() as u64) << 32)
    }

    impl State {
        fn mark_full(&mut self, why: String) {
            self.full_at = self.seq;
            self.full_reason = why;
            self.dirty.clear();
            self.subtrees.clear();
        }

        fn dirty(&mut self, rel: &[u8]) {
            match self.dirty.get_mut(rel) {
                Some(s) => *s = self.seq,
                None => {
                    self.dirty.insert(rel.to_vec(), self.seq);
                }
            }
            if self.dirty.len() + self.subtrees.len() > MAX_MARKS {
                self.mark_full("too many changes to track one by one".into());
            }
        }

        fn add_watch(&mut self, abs: &Path, follow: bool) -> io::Result<i32> {
            let c =
                CString::new(abs.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            let flags = EVENTS | libc::IN_ONLYDIR | if follow { 0 } else { libc::IN_DONT_FOLLOW };
            let wd = unsafe { libc::inotify_add_watch(self.fd, c.as_ptr(), flags) };
            if wd < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(wd)
            }
        }

        /// Watches `rel` and every directory below it that the scan would enter. `chain` holds the rules of its
        /// ancestors. A watch is added before its directory is listed: whatever is created after the listing
        /// gives an event, whatever was created before is in the listing.
        fn walk(&mut self, rel: Vec<u8>, chain: RuleChain, parent_dev: u64) {
            let mut stack = vec![(rel, chain, parent_dev)];
            while let Some((rel, chain, parent_dev)) = stack.pop() {
                let abs = abs_of(&self.root, &rel);
                let wd = match self.add_watch(&abs, rel.is_empty()) {
                    Ok(wd) => wd,
                    Err(e) => {
                        match e.raw_os_error() {
                            // Gone or replaced meanwhile: its parent has an event for that.
                            Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP) => {}
                            Some(libc::ENOSPC) => {
                                self.problems.insert(
                                    rel,
                                    ("the inotify watch limit is reached (fs.inotify.max_user_watches)".into(), false),
                                );
                            }
                            Some(libc::EACCES) | Some(libc::EPERM) => {
                                self.problems.insert(rel, (format!("cannot watch: {e}"), true));
                            }
                            _ => {
                                self.problems.insert(rel, (format!("cannot watch: {e}"), false));
                            }
                        }
                        continue;
                    }
                };
                let dev = match fs::metadata(&abs) {
                    Ok(m) => m.dev(),
                    Err(_) => parent_dev,
                };
                if dev != parent_dev && !rel.is_empty() {
                    match fs_type(&abs) {
                        Some(t) if TRUSTED_FS.contains(&t) => {}
                        t => {
                            let why = format!(
                                "a mount of a filesystem whose changes may not be reported (type {:#x})",
                                t.unwrap_or(0)
                            );
                            self.problems.insert(rel.clone(), (why, false));
                        }
                    }
                }
                if let Some(other) = self.watches.get(&wd) {
                    if other.rel != rel && self.by_path.get(&other.rel) == Some(&wd) {
                        // Two paths, one directory (a bind mount): events would name only one of them.
                        self.problems.insert(rel.clone(), ("a directory reachable by two paths".into(), false));
                        continue;
                    }
                }
                let listing = match fs::read_dir(&abs) {
                    Ok(l) => l,
                    Err(e) => {
                        if !matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) {
                            self.problems.insert(rel.clone(), (format!("cannot list: {e}"), true));
                        }
                        unsafe { libc::inotify_rm_watch(self.fd, wd) };
                        continue;
                    }
                };
                let mut names: Vec<(Vec<u8>, fs::DirEntry)> = Vec::new();
                let mut own = chain.clone();
                let rules_name = self.mode.file_name().as_bytes();
                for de in listing.flatten() {
                    let name = de.file_name().as_bytes().to_vec();
                    if name == rules_name && de.file_type().map(|t| t.is_file()).unwrap_or(false) {
                        let prefix = if rel.is_empty() { 0 } else { rel.len() + 1 };
                        own = push_level(&chain, prefix, &abs.join(self.mode.file_name())).0;
                    }
                    names.push((name, de));
                }
                for (name, de) in names {
                    let Ok(ft) = de.file_type() else { continue };
                    // Ignored names too: an event on one with several names must not look like news (see `event`).
                    if ft.is_file() && !self.linked.contains(&rel) && de.metadata().is_ok_and(|m| m.nlink() > 1) {
                        self.linked.insert(rel.clone());
                    }
                    let child = join_rel(&rel, &name);
                    if is_ignored(&own, Path::new(OsStr::from_bytes(&child)), child.len(), ft.is_dir()) {
                        continue;
                    }
                    if ft.is_dir() {
                        stack.push((child, own.clone(), dev));
                    }
                }
                if let Some(old) = self.by_path.insert(rel.clone(), wd) {
                    if old != wd {
                        self.watches.remove(&old);
                        unsafe { libc::inotify_rm_watch(self.fd, old) };
                    }
                }
                self.watches.insert(wd, Watched { rel, chain: own, dev });
            }
        }

        /// `.git` and `.git/info` are watched for the exclude file even when the tree does not enter them.
        fn watch_exclude_dirs(&mut self) {
            if self.mode != IgnoreMode::GitIgnore {
                return;
            }
            for rel in [&b".git"[..], b".git/info"] {
                let abs = abs_of(&self.root, rel);
                if let Ok(wd) = self.add_watch(&abs, true) {
                    // Also when the tree watches it already: through a symlink it has another name there.
                    if self.watches.get(&wd).is_none_or(|w| w.rel != rel) {
                        self.special.insert(wd, rel.to_vec());
                    }
                }
            }
        }

        /// Asks for a rebuild once the queue is drained: what comes before it in the queue is superseded by it, and
        /// many reasons at once (a thousand hard links made) cost one walk.
        fn rebuild(&mut self, why: String) {
            if self.pending.is_none() {
                self.pending = Some(why);
            }
        }

        /// Forgets every watch and walks again: after lost events, or when the rules (and so the set of watched
        /// directories) changed. Tokens given before cannot be vouched for.
        fn rebuild_now(&mut self, why: String) {
            for wd in self.watches.keys().chain(self.special.keys()) {
                unsafe { libc::inotify_rm_watch(self.fd, *wd) };
            }
            self.watches.clear();
            self.by_path.clear();
            self.special.clear();
            self.linked.clear();
            self.problems.clear();
            self.pending = None;
            self.mark_full(why);
            self.walk_root();
        }

        fn walk_root(&mut self) {
            self.mode = IgnoreMode::detect(&self.root);
            let mut chain: RuleChain = None;
            if self.mode == IgnoreMode::GitIgnore {
                let exclude = self.root.join(".git/info/exclude");
                if exclude.is_file() {
                    chain = push_level(&chain, 0, &exclude).0;
                }
            }
            let dev = self.root_id.0;
            self.walk(Vec::new(), chain, dev);
            self.root_wd = self.by_path.get(&Vec::new()).copied().unwrap_or(-1);
            if self.root_wd < 0 && self.dead.is_none() {
                self.dead = Some("the root cannot be watched".into());
            }
            self.watch_exclude_dirs();
            self.mounts = mounts_hash(&self.root);
        }

        fn unwatch_under(&mut self, rel: &[u8]) {
            let mut from = rel.to_vec();
            let gone: Vec<(Vec<u8>, i32)> = {
                let mut v: Vec<(Vec<u8>, i32)> =
                    self.by_path.get(rel).map(|&wd| (rel.to_vec(), wd)).into_iter().collect();
                from.push(b'/');
                v.extend(
                    self.by_path
                        .range(from.clone()..)
                        .take_while(|(p, _)| p.starts_with(&from))
                        .map(|(p, w)| (p.clone(), *w)),
                );
                v
            };
            for (p, wd) in gone {
                self.by_path.remove(&p);
                self.watches.remove(&wd);
                unsafe { libc::inotify_rm_watch(self.fd, wd) };
            }
        }

        /// Reads every queued event without blocking and applies it. After a rebuild, what is left may wait: every
        /// token given before it gets a full answer anyway.
        fn drain(&mut self) {
            let mut rebuilt = 0;
            loop {
                let bytes = self.buf.len() * 8;
                let n = unsafe { libc::read(self.fd, self.buf.as_mut_ptr().cast(), bytes) };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    if e.kind() != io::ErrorKind::WouldBlock {
                        self.dead = Some(format!("reading events failed: {e}"));
                        return;
                    }
                    match self.pending.take() {
                        Some(why) if self.dead.is_none() && rebuilt < 3 => {
                            self.rebuild_now(why);
                            rebuilt += 1;
                            continue;
                        }
                        Some(why) => {
                            self.pending = Some(why);
                            return;
                        }
                        None => return,
                    }
                }
                if n == 0 {
                    return;
                }
                let data: Vec<u8> =
                    unsafe { std::slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), n as usize) }.to_vec();
                let head = std::mem::size_of::<libc::inotify_event>();
                let mut at = 0usize;
                while at + head <= data.len() {
                    let ev: libc::inotify_event = unsafe { std::ptr::read_unaligned(data[at..].as_ptr().cast()) };
                    let name_bytes = &data[at + head..at + head + ev.len as usize];
                    let name = &name_bytes[..name_bytes.iter().position(|&b| b == 0).unwrap_or(name_bytes.len())];
                    self.event(ev.wd, ev.mask, name);
                    at += head + ev.len as usize;
                }
            }
        }

        fn event(&mut self, wd: i32, mask: u32, name: &[u8]) {
            if self.pending.is_some() || self.dead.is_some() {
                return;
            }
            if mask & libc::IN_Q_OVERFLOW != 0 {
                self.rebuild("the event queue overflowed".into());
                return;
            }
            if let Some(logical) = self.special.get(&wd) {
                if mask & (libc::IN_IGNORED | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_UNMOUNT) != 0
                    || (!name.is_empty() && feeds_rules(logical, name))
                {
                    let why = format!("{} changed", String::from_utf8_lossy(&join_rel(logical, name)));
                    self.rebuild(why);
                    return;
                }
            }
            if !self.watches.contains_key(&wd) {
                // A watch dropped already (its directory moved away or the watches were rebuilt): what it reports
                // happened before, and is covered by the rebuild's full mark or the new place's subtree mark.
                return;
            }
            if mask & libc::IN_UNMOUNT != 0 {
                self.rebuild("a filesystem under the root was unmounted".into());
                return;
            }
            if wd == self.root_wd && mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED) != 0 {
                self.dead = Some("the directory was deleted or moved".into());
                return;
            }
            if mask & libc::IN_IGNORED != 0 {
                if let Some(w) = self.watches.remove(&wd) {
                    if self.by_path.get(&w.rel) == Some(&wd) {
                        self.by_path.remove(&w.rel);
                    }
                }
                return;
            }
            let (rel, chain, dev) = {
                let w = &self.watches[&wd];
                (w.rel.clone(), w.chain.clone(), w.dev)
            };
            if name.is_empty() {
                // The directory itself: a mode change decides whether it can be listed; its parent hears of it too.
                if mask & libc::IN_ATTRIB != 0 {
                    self.dirty(&rel);
                }
                return;
            }
            if feeds_rules(&rel, name) {
                let why = format!("{} changed", String::from_utf8_lossy(&join_rel(&rel, name)));
                self.rebuild(why);
                return;
            }
            let is_dir = mask & libc::IN_ISDIR != 0;
            let child = join_rel(&rel, name);
            if !is_dir && mask & (libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_ATTRIB) != 0 {
                let abs = abs_of(&self.root, &child);
                if fs::symlink_metadata(&abs).is_ok_and(|m| m.is_file() && m.nlink() > 1) {
                    let linked = self.linked.contains(&rel);
                    if mask & libc::IN_MOVED_TO != 0 {
                        // Renamed, not linked: its other names were multi-link names already, and so are known.
                        self.linked.insert(rel.clone());
                    } else if mask & libc::IN_CREATE != 0 || !linked {
                        // A new name for a file (ignored or not), or one with several names where none was known:
                        // its names in the tree may be anywhere (the link count moved their ctime, and writes
                        // through one name change the others), so find every directory that holds one.
                        self.rebuild(format!("{} has another name (a hard link)", String::from_utf8_lossy(&child)));
                        return;
                    }
                }
            }
            if is_ignored(&chain, Path::new(OsStr::from_bytes(&child)), child.len(), is_dir) {
                // Not in the tree, but a name made or removed here moves this directory's times, which its entry
                // (in its parent's listing) records.
                if mask & (libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_MOVED_TO) != 0 {
                    self.dirty(&rel);
                }
                return;
            }
            self.dirty(&rel);
            if is_dir {
                if mask & libc::IN_MOVED_FROM != 0 {
                    self.unwatch_under(&child);
                }
                if mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
                    // New here (made, or moved in from elsewhere): walked whole by the next scan, watched from now.
                    self.subtrees.insert(child.clone(), self.seq);
                    self.unwatch_under(&child);
                    self.walk(child.clone(), chain, dev);
                }
                if mask & libc::IN_ATTRIB != 0 {
                    self.dirty(&child);
                    if self.problems.get(&child).is_some_and(|p| p.1) {
                        self.rebuild(format!("{} became readable", String::from_utf8_lossy(&child)));
                    }
                }
            }
        }

        /// Before answering: the root must still be the directory watched, and the mounts those walked through.
        fn check(&mut self) {
            if self.dead.is_some() {
                return;
            }
            match fs::metadata(&self.root) {
                Ok(m) if (m.dev(), m.ino()) == self.root_id => {}
                _ => {
                    self.dead = Some("the directory was replaced, moved or deleted".into());
                    return;
                }
            }
            if mounts_hash(&self.root) != self.mounts {
                self.rebuild("the mount table changed".into());
            }
            let blind: Vec<Vec<u8>> = self.problems.iter().filter(|(_, p)| p.1).map(|(r, _)| r.clone()).collect();
            for rel in blind {
                let abs = abs_of(&self.root, &rel);
                if fs::read_dir(&abs).is_ok() {
                    self.rebuild(format!("{} became readable", String::from_utf8_lossy(&rel)));
                    break;
                }
            }
        }

        fn answer(&mut self, since: Option<Token>) -> Result<Changes, WatchError> {
            self.check();
            self.drain();
            if let Some(why) = &self.dead {
                return Err(WatchError::Dead(why.clone()));
            }
            let now = Token { instance: self.instance, seq: self.seq };
            self.seq += 1;
            let full = match since {
                None => Some("no earlier token".to_string()),
                Some(t) if t.instance != self.instance => Some("the token is another watcher's".to_string()),
                Some(t) if t.seq > now.seq => Some("the token is from the future".to_string()),
                Some(t) if t.seq < self.full_at => Some(self.full_reason.clone()),
                Some(_) => self.problems.iter().next().map(|(rel, (why, _))| {
                    format!("{}: {why}", if rel.is_empty() { ".".into() } else { String::from_utf8_lossy(rel) })
                }),
            };
            if let Some(reason) = full {
                return Ok(Changes { token: now, full: true, reason: Some(reason), dirs: vec![], subtrees: vec![] });
            }
            let since = since.unwrap().seq;
            let mut dirs: BTreeSet<Vec<u8>> =
                self.dirty.iter().filter(|(_, &s)| s > since).map(|(p, _)| p.clone()).collect();
            dirs.extend(self.linked.iter().cloned());
            let subtrees: BTreeSet<Vec<u8>> =
                self.subtrees.iter().filter(|(_, &s)| s > since).map(|(p, _)| p.clone()).collect();
            Ok(Changes {
                token: now,
                full: false,
                reason: None,
                dirs: dirs.into_iter().collect(),
                subtrees: subtrees.into_iter().collect(),
            })
        }
    }

    struct Shared {
        state: Mutex<State>,
        ready: AtomicBool,
        instance: u64,
    }

    /// Watches a tree (see the module's comment). Events are read on a thread of its own; the first walk runs there
    /// too, so starting one returns at once.
    pub struct Watcher {
        shared: Arc<Shared>,
        thread: Option<std::thread::JoinHandle<()>>,
        stop: [libc::c_int; 2],
    }

    impl Watcher {
        pub fn start(root: &Path, opts: WatchOptions) -> Result<Watcher, WatchError> {
            let md = fs::metadata(root).map_err(WatchError::Io)?;
            if !md.is_dir() {
                return Err(WatchError::Io(io::Error::new(io::ErrorKind::InvalidInput, "not a directory")));
            }
            match fs_type(root) {
                Some(t) if TRUSTED_FS.contains(&t) => {}
                t => {
                    return Err(WatchError::Unsupported(format!(
                        "a filesystem whose changes may not be reported (type {:#x})",
                        t.unwrap_or(0)
                    )))
                }
            }
            let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
            if fd < 0 {
                return Err(WatchError::Io(io::Error::last_os_error()));
            }
            let instance = random_u64();
            let state = State {
                fd,
                root: root.to_path_buf(),
                root_id: (md.dev(), md.ino()),
                root_wd: -1,
                mode: IgnoreMode::GitIgnore,
                instance,
                seq: 1,
                full_at: 1,
                full_reason: "the watcher started after it".into(),
                dead: None,
                watches: HashMap::new(),
                by_path: BTreeMap::new(),
                special: HashMap::new(),
                dirty: HashMap::new(),
                subtrees: HashMap::new(),
                linked: BTreeSet::new(),
                problems: BTreeMap::new(),
                mounts: 0,
                pending: None,
                buf: vec![0u64; 8192],
            };
            let shared = Arc::new(Shared { state: Mutex::new(state), ready: AtomicBool::new(false), instance });
            let mut stop = [-1, -1];
            if unsafe { libc::pipe2(stop.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
                unsafe { libc::close(fd) };
                return Err(WatchError::Io(io::Error::last_os_error()));
            }
            let mut w = Watcher { shared: shared.clone(), thread: None, stop };
            if opts.no_thread {
                shared.state.lock().unwrap().walk_root();
                shared.ready.store(true, Ordering::Release);
            } else {
                let stop_rd = stop[0];
                w.thread = Some(
                    std::thread::Builder::new()
                        .name("skysync-watch".into())
                        .spawn(move || run(shared, stop_rd))
                        .map_err(WatchError::Io)?,
                );
            }
            Ok(w)
        }

        pub fn instance(&self) -> u64 {
            self.shared.instance
        }

        /// True once the first walk is done (then `changes_since` answers).
        pub fn wait_ready(&self, timeout: Duration) -> bool {
            let until = Instant::now() + timeout;
            while !self.shared.ready.load(Ordering::Acquire) {
                if Instant::now() >= until {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            true
        }

        /// What changed since `since` (None: nothing is known yet), and the token for a scan that starts now.
        pub fn changes_since(&self, since: Option<Token>) -> Result<Changes, WatchError> {
            if !self.shared.ready.load(Ordering::Acquire) {
                return Err(WatchError::NotReady);
            }
            // Events are applied in moments; a walk (after an overflow or a rule change) can take a second on a
            // large tree, longer than the scan it would spare.
            let until = Instant::now() + Duration::from_millis(250);
            loop {
                match self.shared.state.try_lock() {
                    Ok(mut st) => return st.answer(since),
                    Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner().answer(since),
                    Err(std::sync::TryLockError::WouldBlock) if Instant::now() < until => {
                        std::thread::sleep(Duration::from_micros(500))
                    }
                    Err(std::sync::TryLockError::WouldBlock) => return Err(WatchError::Busy),
                }
            }
        }
    }

    fn run(shared: Arc<Shared>, stop: libc::c_int) {
        let fd = {
            let mut st = shared.state.lock().unwrap();
            st.walk_root();
            st.fd
        };
        shared.ready.store(true, Ordering::Release);
        loop {
            let mut fds = [
                libc::pollfd { fd, events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: stop, events: libc::POLLIN, revents: 0 },
            ];
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if r < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            if fds[1].revents != 0 {
                break;
            }
            if fds[0].revents != 0 {
                let mut st = shared.state.lock().unwrap();
                st.drain();
                if st.dead.is_some() {
                    break;
                }
            }
        }
    }

    impl Drop for Watcher {
        fn drop(&mut self) {
            unsafe { libc::write(self.stop[1], b"x".as_ptr().cast(), 1) };
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
            unsafe {
                libc::close(self.stop[0]);
                libc::close(self.stop[1]);
                libc::close(self.shared.state.lock().unwrap().fd);
            }
        }
    }
}
