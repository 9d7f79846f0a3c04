//! The parallel tree walk. Symlinks are recorded, never followed; sockets, FIFOs and devices are skipped and
//! reported; unreadable directories are reported and remembered so that their old contents are not mistaken for
//! deletions.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::entry::{EntryList, Kind, Meta};
use crate::ignore_rules::{is_ignored, push_level, IgnoreMode, RuleChain};
use crate::tree::Tree;

#[derive(Debug)]
pub enum ScanError {
    RootMissing(PathBuf),
    RootNotDirectory(PathBuf),
    RootUnreadable(PathBuf, io::Error),
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanError::RootMissing(p) => write!(f, "{}: no such directory; check the path", p.display()),
            ScanError::RootNotDirectory(p) => {
                write!(f, "{}: not a directory; give the directory to sync", p.display())
            }
            ScanError::RootUnreadable(p, e) => {
                write!(f, "{}: cannot read directory ({e}); check its permissions", p.display())
            }
        }
    }
}

impl std::error::Error for ScanError {}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WarningKind {
    Unreadable,
    Special,
    BadIgnoreFile,
}

#[derive(Clone, Debug)]
pub struct Warning {
    pub kind: WarningKind,
    pub path: Vec<u8>,
    pub message: String,
}

pub struct ScanOutput {
    /// Sorted by path bytes.
    pub entries: EntryList,
    pub warnings: Vec<Warning>,
    /// Relative paths of directories that could not be listed and of entries that could not be examined: what the
    /// previous tree holds at or under them is carried over, not reported deleted.
    pub unreadable_dirs: Vec<Vec<u8>>,
    pub ignore_mode: IgnoreMode,
    /// Filesystem clock (coarse) when the walk began: anything modified at or after it is racy.
    pub started_ns: i64,
    /// Ignored entries seen; a partial scan counts those of the directories it listed only.
    pub ignored: u64,
    /// Directories whose entries were listed (a full scan lists them all).
    pub dirs_listed: u64,
    /// Listed only where the previous tree could be out of date (see `scan_tree_partial`).
    pub partial: bool,
}

pub fn coarse_now_ns() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // The kernel stamps files from the coarse clock, so compare against the same clock.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    timespec_ns(ts)
}

// time_t and c_long are i64 on the targets built today, but i32 on 32-bit ones, where the casts are needed.
#[allow(clippy::unnecessary_cast)]
fn timespec_ns(ts: libc::timespec) -> i64 {
    ts.tv_sec as i64 * 1_000_000_000 + ts.tv_nsec as i64
}

fn meta_of(md: &fs::Metadata, kind: Kind) -> Meta {
    Meta {
        size: if kind == Kind::Dir { 0 } else { md.size() },
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
        ino: md.ino(),
        mode: (md.mode() & 0o7777) as u16,
        kind,
    }
}

struct Walk<'a> {
    mode: IgnoreMode,
    out: Mutex<EntryList>,
    warnings: Mutex<Vec<Warning>>,
    unreadable: Mutex<Vec<Vec<u8>>>,
    ignored: std::sync::atomic::AtomicU64,
    listed: std::sync::atomic::AtomicU64,
    root: &'a Path,
    /// Set for a partial scan: which directories to list again, and the tree to take the others from.
    rescan: Option<&'a Rescan<'a>>,
}

impl Walk<'_> {
    fn warn(&self, kind: WarningKind, path: &[u8], message: String) {
        self.warnings.lock().unwrap().push(Warning { kind, path: path.to_vec(), message });
    }

    /// An entry that exists but could not be examined: reported, and remembered so it is not taken for a deletion.
    fn unreadable(&self, path: &[u8], message: String) {
        self.warn(WarningKind::Unreadable, path, message);
        self.unreadable.lock().unwrap().push(path.to_vec());
    }

    /// Lists a directory, records its entries and spawns the walk of each child directory.
    fn dir<'s>(&'s self, scope: &rayon::Scope<'s>, abs: PathBuf, rel: Vec<u8>, chain: RuleChain) {
        self.listed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some((children, has_rules_file)) = self.list(&abs, &rel) else { return };
        let prefix_len = if rel.is_empty() { 0 } else { rel.len() + 1 };
        let chain = if has_rules_file { self.own_rules(&abs, &rel, prefix_len, chain) } else { chain };
        let mut local = EntryList::with_capacity(children.len(), children.len() * (prefix_len + 16));
        let mut path_buf: Vec<u8> = Vec::with_capacity(prefix_len + 64);
        for de in children {
            let name = de.file_name();
            path_buf.clear();
            if !rel.is_empty() {
                path_buf.extend_from_slice(&rel);
                path_buf.push(b'/');
            }
            path_buf.extend_from_slice(name.as_bytes());
            self.child(scope, de, &path_buf, &chain, &mut local);
        }
        self.out.lock().unwrap().append(&mut local);
    }

    /// A directory's entries, and whether its ignore file is among them. Like git, an ignore file that is a
    /// symlink is not read (links are never followed): it is reported.
    fn list(&self, abs: &Path, rel: &[u8]) -> Option<(Vec<fs::DirEntry>, bool)> {
        let listing = match fs::read_dir(abs) {
            Ok(l) => l,
            Err(e) => {
                self.unreadable(rel, format!("cannot read directory: {e}"));
                return None;
            }
        };
        let mut children: Vec<fs::DirEntry> = Vec::new();
        let mut has_rules_file = false;
        let rules_name = self.mode.file_name().as_bytes();
        for item in listing {
            match item {
                Ok(de) => {
                    if de.file_name().as_bytes() == rules_name {
                        match de.file_type() {
                            Ok(t) if t.is_file() => has_rules_file = true,
                            Ok(t) if t.is_symlink() => {
                                let mut p = rel.to_vec();
                                if !p.is_empty() {
                                    p.push(b'/');
                                }
                                p.extend_from_slice(rules_name);
                                self.warn(WarningKind::BadIgnoreFile, &p, "not read: it is a symlink".into());
                            }
                            _ => {}
                        }
                    }
                    children.push(de);
                }
                Err(e) => {
                    self.unreadable(rel, format!("error while listing: {e}"));
                }
            }
        }
        Some((children, has_rules_file))
    }

    /// The rules for a directory's entries: its ancestors' (`chain`) and its own ignore file's.
    fn own_rules(&self, abs: &Path, rel: &[u8], prefix_len: usize, chain: RuleChain) -> RuleChain {
        let (own, warning) = push_level(&chain, prefix_len, &abs.join(self.mode.file_name()));
        if let Some(w) = warning {
            self.warn(WarningKind::BadIgnoreFile, rel, w);
        }
        own
    }

    /// One entry of a listed directory at `path`: skipped when ignored or special, otherwise recorded in `local`;
    /// a directory's walk is spawned.
    fn child<'s>(
        &'s self,
        scope: &rayon::Scope<'s>,
        de: fs::DirEntry,
        path: &[u8],
        chain: &RuleChain,
        local: &mut EntryList,
    ) {
        let ft = match de.file_type() {
            Ok(t) => t,
            Err(e) => {
                self.unreadable(path, format!("cannot stat: {e}"));
                return;
            }
        };
        let is_dir = ft.is_dir();
        if is_ignored(chain, Path::new(OsStr::from_bytes(path)), path.len(), is_dir) {
            self.ignored.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        if let Some(what) = special_kind(&ft) {
            self.warn(WarningKind::Special, path, format!("skipped: a {what} cannot be synced"));
            return;
        }
        let md = match de.metadata() {
            Ok(m) => m,
            Err(e) => {
                // Vanished between readdir and stat: the next scan sees the truth.
                if e.kind() != io::ErrorKind::NotFound {
                    self.unreadable(path, format!("cannot stat: {e}"));
                }
                return;
            }
        };
        if ft.is_symlink() {
            match fs::read_link(de.path()) {
                Ok(target) => local.push(path, meta_of(&md, Kind::Symlink), Some(target.as_os_str().as_bytes())),
                Err(e) => self.unreadable(path, format!("cannot read link: {e}")),
            }
        } else if is_dir {
            local.push(path, meta_of(&md, Kind::Dir), None);
            let child_abs = de.path();
            let child_rel = path.to_vec();
            let child_chain = chain.clone();
            if self.rescan.is_some() {
                scope.spawn(move |s| self.visit(s, child_abs, child_rel, child_chain));
            } else {
                scope.spawn(move |s| self.dir(s, child_abs, child_rel, child_chain));
            }
        } else {
            local.push(path, meta_of(&md, Kind::File), None);
        }
    }
}

/// What a file that cannot be synced is called in the warning that skips it (none for what can be).
fn special_kind(ft: &fs::FileType) -> Option<&'static str> {
    if ft.is_socket() {
        Some("socket")
    } else if ft.is_fifo() {
        Some("FIFO")
    } else if ft.is_block_device() || ft.is_char_device() {
        Some("device")
    } else {
        None
    }
}

impl Walk<'_> {
    /// A directory a partial scan reaches, with the rules of its ancestors. Listed when the rescan says so;
    /// otherwise its entries are the previous tree's, and only the way to listed directories below is followed.
    fn visit<'s>(&'s self, scope: &rayon::Scope<'s>, abs: PathBuf, rel: Vec<u8>, chain: RuleChain) {
        let r = self.rescan.expect("a partial scan");
        if r.must_list(&rel) {
            return self.dir(scope, abs, rel, chain);
        }
        let prev = r.previous;
        let range = prev.subtree_range(&rel, 0..prev.len());
        if !r.marks_below(&rel) {
            // Straight into the result: on a no-op this is nearly the whole tree, and memory touched for the
            // first time is what such a scan mostly pays for.
            prev.copy_range_to(range, &mut self.out.lock().unwrap());
            return;
        }
        let mut local = EntryList::new();
        // Directories below must be listed: the rules of this one apply to them. Its ignore file is unchanged
        // (a change makes the watcher ask for a full scan), and any warning it gave made it a listed directory.
        let mut own = chain.clone();
        let rules = abs.join(self.mode.file_name());
        if fs::symlink_metadata(&rules).map(|m| m.is_file()).unwrap_or(false) {
            own = push_level(&chain, if rel.is_empty() { 0 } else { rel.len() + 1 }, &rules).0;
        }
        // Direct entries and the subtrees of child directories interleave in path order ("a", "a.txt", "a/b"):
        // a child directory is decided on at its own entry, and its subtree skipped or copied where it starts.
        let skip = if rel.is_empty() { 0 } else { rel.len() + 1 };
        let mut descend: Vec<Vec<u8>> = Vec::new();
        let mut subtrees: Vec<std::ops::Range<usize>> = Vec::new();
        let mut i = range.start;
        while i < range.end {
            let path = prev.path(i);
            if let Some(slash) = path[skip..].iter().position(|&b| b == b'/') {
                let child = &path[..skip + slash];
                let sub = prev.subtree_range(child, i..range.end);
                if !r.must_list(child) && !r.marks_below(child) {
                    subtrees.push(sub.clone());
                }
                i = sub.end.max(i + 1);
                continue;
            }
            if prev.meta(i).kind == Kind::Dir {
                if r.must_list(path) || r.marks_below(path) {
                    // On the way to a listed directory, or listed itself: stat'ed again, so that its entry (times,
                    // mode) is what a full scan records now, and the way is known to be there.
                    match fs::symlink_metadata(self.root.join(OsStr::from_bytes(path))) {
                        Ok(md) if md.file_type().is_dir() => local.push(path, meta_of(&md, Kind::Dir), None),
                        // Gone or no longer a directory: this directory changed after all, so list it.
                        _ => return self.dir(scope, abs, rel, chain),
                    }
                    descend.push(path.to_vec());
                } else {
                    prev.copy_range_to(i..i + 1, &mut local);
                }
            } else {
                prev.copy_range_to(i..i + 1, &mut local);
            }
            i += 1;
        }
        {
            let mut out = self.out.lock().unwrap();
            for sub in subtrees {
                prev.copy_range_to(sub, &mut out);
            }
            out.append(&mut local);
        }
        for d in descend {
            let child_abs = self.root.join(OsStr::from_bytes(&d));
            let child_chain = own.clone();
            scope.spawn(move |s| self.visit(s, child_abs, d, child_chain));
        }
    }
}

/// What a partial scan lists again; everything else is taken from the previous tree.
pub struct Rescan<'a> {
    previous: &'a EntryList,
    /// Directories whose own entries are listed again.
    dirs: HashSet<Vec<u8>>,
    /// Directories listed with everything below them.
    subtrees: HashSet<Vec<u8>>,
    /// Both, sorted: what lies below a directory is a range.
    marks: BTreeSet<Vec<u8>>,
}

impl<'a> Rescan<'a> {
    pub fn new(previous: &'a EntryList, dirs: &[Vec<u8>], subtrees: &[Vec<u8>]) -> Rescan<'a> {
        let dirs: HashSet<Vec<u8>> = dirs.iter().cloned().collect();
        let subtrees: HashSet<Vec<u8>> = subtrees.iter().cloned().collect();
        let marks = dirs.iter().chain(subtrees.iter()).cloned().collect();
        Rescan { previous, dirs, subtrees, marks }
    }

    /// Listed: marked itself, under a subtree, or a directory the previous tree does not know as one.
    fn must_list(&self, rel: &[u8]) -> bool {
        if self.dirs.contains(rel) || self.subtrees.contains(rel) {
            return true;
        }
        if !self.subtrees.is_empty() {
            for (i, &b) in rel.iter().enumerate() {
                if b == b'/' && self.subtrees.contains(&rel[..i]) {
                    return true;
                }
            }
            if self.subtrees.contains(&b""[..]) {
                return true;
            }
        }
        !rel.is_empty() && self.previous.find(rel).map(|i| self.previous.meta(i).kind) != Some(Kind::Dir)
    }

    /// Some mark lies strictly below `rel`.
    fn marks_below(&self, rel: &[u8]) -> bool {
        if rel.is_empty() {
            return self.marks.iter().any(|m| !m.is_empty());
        }
        let mut from = rel.to_vec();
        from.push(b'/');
        self.marks.range(from.clone()..).next().is_some_and(|m| m.starts_with(&from))
    }
}

/// Walks `root` with the ignore rules the root selects.
pub fn scan_tree(root: &Path) -> Result<ScanOutput, ScanError> {
    scan_tree_sized(root, 0, 0)
}

/// Like `scan_tree`, sizing the result for about `entries` entries with `name_bytes` of names (those of the last
/// scan of the same tree): the result is one of the largest allocations of a scan, and growing it step by step
/// copies it and leaves the old copies behind in the allocator.
pub fn scan_tree_sized(root: &Path, entries: usize, name_bytes: usize) -> Result<ScanOutput, ScanError> {
    walk_tree(root, entries, name_bytes, None)
}

/// A scan that lists only `dirs` (their own entries), `subtrees` (everything below them) and directories the
/// previous tree does not hold as directories, and takes every other entry from `previous`, the tree of an
/// earlier scan of `root`. The result is the full scan's provided nothing changed outside those directories since
/// that earlier scan began: what a filesystem watcher vouches for (see `watch.rs`). Every directory on the way to
/// a listed one must be a directory of `previous`; one that is not (or no longer is) is listed itself.
///
/// With other ignore rules than `previous` was scanned with (a `.skyignore` appeared or went), it is a full scan.
pub fn scan_tree_partial(
    root: &Path,
    previous: &Tree,
    dirs: &[Vec<u8>],
    subtrees: &[Vec<u8>],
) -> Result<ScanOutput, ScanError> {
    // An entry the previous tree forgot (the remote did not take it) must be compared again even where nothing
    // changed: its parent is listed too. A forgotten file would be re-read anyway (it has no recipe); a symlink or
    // a directory would be carried over as "unchanged" and never sent again.
    let list = previous.entries();
    let forgotten_parents = (0..list.len()).filter(|&i| list.is_marked_unknown(i)).map(|i| {
        let p = list.path(i);
        p[..p.iter().rposition(|&b| b == b'/').unwrap_or(0)].to_vec()
    });
    let dirs: Vec<Vec<u8>> = dirs.iter().cloned().chain(forgotten_parents).collect();
    let rescan = Rescan::new(previous.entries(), &dirs, subtrees);
    let entries = previous.len();
    let name_bytes = previous.entries().name_bytes();
    if previous.ignore_mode.is_none()
        || fs::metadata(root).is_ok_and(|m| m.is_dir()) && previous.ignore_mode != Some(IgnoreMode::detect(root))
    {
        return walk_tree(root, entries, name_bytes, None);
    }
    walk_tree(root, entries, name_bytes, Some(&rescan))
}

fn walk_tree(root: &Path, entries: usize, name_bytes: usize, rescan: Option<&Rescan>) -> Result<ScanOutput, ScanError> {
    // A root that is a symlink to a directory is fine (SkyPilot allows it): follow it once.
    let md = match fs::metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ScanError::RootMissing(root.into())),
        Err(e) => return Err(ScanError::RootUnreadable(root.into(), e)),
    };
    if !md.is_dir() {
        return Err(ScanError::RootNotDirectory(root.into()));
    }
    if let Err(e) = fs::read_dir(root) {
        return Err(ScanError::RootUnreadable(root.into(), e));
    }
    let started_ns = coarse_now_ns();
    let mode = IgnoreMode::detect(root);
    let mut chain: RuleChain = None;
    let mut warnings = Vec::new();
    if mode == IgnoreMode::GitIgnore {
        let exclude = root.join(".git/info/exclude");
        if exclude.is_file() {
            let (c, w) = push_level(&chain, 0, &exclude);
            chain = c;
            if let Some(w) = w {
                warnings.push(Warning {
                    kind: WarningKind::BadIgnoreFile,
                    path: b".git/info/exclude".to_vec(),
                    message: w,
                });
            }
        }
    }
    let walk = Walk {
        mode,
        // A little room for growth: a tree rarely changes much between two syncs.
        out: Mutex::new(EntryList::with_capacity(entries + entries / 64, name_bytes + name_bytes / 64)),
        warnings: Mutex::new(warnings),
        unreadable: Mutex::new(Vec::new()),
        ignored: Default::default(),
        listed: Default::default(),
        root,
        rescan,
    };
    if rescan.is_some() {
        rayon::scope(|s| walk.visit(s, root.to_path_buf(), Vec::new(), chain));
    } else {
        rayon::scope(|s| walk.dir(s, root.to_path_buf(), Vec::new(), chain));
    }
    let mut entries = walk.out.into_inner().unwrap();
    entries.sort_by_path();
    entries.shrink_to_fit();
    let mut warnings = walk.warnings.into_inner().unwrap();
    warnings.sort_by(|a, b| a.path.cmp(&b.path));
    let mut unreadable_dirs = walk.unreadable.into_inner().unwrap();
    unreadable_dirs.sort();
    Ok(ScanOutput {
        entries,
        warnings,
        unreadable_dirs,
        ignore_mode: mode,
        started_ns,
        ignored: walk.ignored.into_inner(),
        dirs_listed: walk.listed.into_inner(),
        partial: rescan.is_some(),
    })
}
