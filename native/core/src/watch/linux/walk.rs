//! The watches: a walk that adds one to every directory the scan would enter, and what drops them.

use super::{fs_type, mounts_hash, State, Watched, TRUSTED_FS};
use crate::ignore_rules::{is_ignored, push_level, IgnoreMode, RuleChain};
use crate::watch::{abs_of, join_rel};
use std::ffi::{CString, OsStr};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

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

impl State {
    fn add_watch(&mut self, abs: &Path, follow: bool) -> io::Result<i32> {
        let c = CString::new(abs.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
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
    pub(super) fn walk(&mut self, rel: Vec<u8>, chain: RuleChain, parent_dev: u64) {
        let mut stack = vec![(rel, chain, parent_dev)];
        while let Some((rel, chain, parent_dev)) = stack.pop() {
            let abs = abs_of(&self.root, &rel);
            let wd = match self.add_watch(&abs, rel.is_empty()) {
                Ok(wd) => wd,
                Err(e) => {
                    self.cannot_watch(rel, &e);
                    continue;
                }
            };
            let dev = match fs::metadata(&abs) {
                Ok(m) => m.dev(),
                Err(_) => parent_dev,
            };
            if dev != parent_dev && !rel.is_empty() {
                self.check_mount(&abs, &rel);
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

    /// Why `rel` has no watch, kept as a problem; none when it is gone or replaced meanwhile (its parent has an
    /// event for that).
    fn cannot_watch(&mut self, rel: Vec<u8>, e: &io::Error) {
        match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP) => {}
            Some(libc::ENOSPC) => {
                self.problems
                    .insert(rel, ("the inotify watch limit is reached (fs.inotify.max_user_watches)".into(), false));
            }
            Some(libc::EACCES) | Some(libc::EPERM) => {
                self.problems.insert(rel, (format!("cannot watch: {e}"), true));
            }
            _ => {
                self.problems.insert(rel, (format!("cannot watch: {e}"), false));
            }
        }
    }

    /// A mount inside the tree: a problem unless its filesystem reports every change through this kernel.
    fn check_mount(&mut self, abs: &Path, rel: &[u8]) {
        match fs_type(abs) {
            Some(t) if TRUSTED_FS.contains(&t) => {}
            t => {
                let why =
                    format!("a mount of a filesystem whose changes may not be reported (type {:#x})", t.unwrap_or(0));
                self.problems.insert(rel.to_vec(), (why, false));
            }
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

    /// Forgets every watch and walks again: after lost events, or when the rules (and so the set of watched
    /// directories) changed. Tokens given before cannot be vouched for.
    pub(super) fn rebuild_now(&mut self, why: String) {
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

    pub(super) fn walk_root(&mut self) {
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

    pub(super) fn unwatch_under(&mut self, rel: &[u8]) {
        let mut from = rel.to_vec();
        let gone: Vec<(Vec<u8>, i32)> = {
            let mut v: Vec<(Vec<u8>, i32)> = self.by_path.get(rel).map(|&wd| (rel.to_vec(), wd)).into_iter().collect();
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
}
