//! Applying inotify events: each one marks the directories a later query names, or asks for a rebuild.

use super::State;
use crate::ignore_rules::{is_ignored, RuleChain};
use crate::watch::{abs_of, feeds_rules, join_rel};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Past this many marks the bookkeeping costs more than a full scan: start over from a full one.
const MAX_MARKS: usize = 200_000;

impl State {
    pub(super) fn mark_full(&mut self, why: String) {
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

    /// Asks for a rebuild once the queue is drained: what comes before it in the queue is superseded by it, and
    /// many reasons at once (a thousand hard links made) cost one walk.
    pub(super) fn rebuild(&mut self, why: String) {
        if self.pending.is_none() {
            self.pending = Some(why);
        }
    }

    /// Reads every queued event without blocking and applies it. After a rebuild, what is left may wait: every
    /// token given before it gets a full answer anyway.
    pub(super) fn drain(&mut self) {
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

    /// One event: `name` is empty when it is about the watched directory itself.
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
        if !is_dir
            && mask & (libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_ATTRIB) != 0
            && self.rebuild_for_hard_link(&rel, &child, mask)
        {
            return;
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
            self.directory_event(child, chain, dev, mask);
        }
    }

    /// A name `child` (in `rel`) made, moved in or changed: when its file has several names, `rel` is noted as
    /// linked, or a rebuild is asked for (then true).
    fn rebuild_for_hard_link(&mut self, rel: &[u8], child: &[u8], mask: u32) -> bool {
        let abs = abs_of(&self.root, child);
        if fs::symlink_metadata(&abs).is_ok_and(|m| m.is_file() && m.nlink() > 1) {
            let linked = self.linked.contains(rel);
            if mask & libc::IN_MOVED_TO != 0 {
                // Renamed, not linked: its other names were multi-link names already, and so are known.
                self.linked.insert(rel.to_vec());
            } else if mask & libc::IN_CREATE != 0 || !linked {
                // A new name for a file (ignored or not), or one with several names where none was known:
                // its names in the tree may be anywhere (the link count moved their ctime, and writes
                // through one name change the others), so find every directory that holds one.
                self.rebuild(format!("{} has another name (a hard link)", String::from_utf8_lossy(child)));
                return true;
            }
        }
        false
    }

    /// An event on `child`, a directory of the tree inside a watched one whose rules are `chain`.
    fn directory_event(&mut self, child: Vec<u8>, chain: RuleChain, dev: u64, mask: u32) {
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
