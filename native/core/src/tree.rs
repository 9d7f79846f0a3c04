//! What a tree looked like at the last sync: entries with their metadata and, for files, their recipes.
//! Compared here, so an unchanged tree never crosses into JavaScript; saved and loaded by `file`.

use std::path::Path;
use std::sync::Arc;

use crate::chunk::{recipe_digest, ChunkParams, ChunkRef, Recipe};
use crate::entry::{Entry, EntryList, EntryRef, Kind};
use crate::ignore_rules::IgnoreMode;
use crate::scan::ScanOutput;

mod file;
pub use file::LoadError;

const NOT_CHUNKED: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: u32,
    count: u32,
}

const NO_RECIPE: Span = Span { start: 0, count: NOT_CHUNKED };

/// The chunks of every recipe of a tree; a span indexes `base` followed by `own`.
///
/// A re-scan builds a new tree while the previous one stays alive (the caller still holds it, and reports the
/// recipes files had), and an unchanged file's recipe is the same in both. So the new tree shares the previous
/// tree's `base` rather than copying it, and recipes recorded later go to `own`, leaving `base` untouched for both.
#[derive(Clone, Debug, Default)]
struct ChunkStore {
    base: Arc<Vec<ChunkRef>>,
    own: Vec<ChunkRef>,
}

impl ChunkStore {
    fn get(&self, s: Span) -> &[ChunkRef] {
        let (start, count) = (s.start as usize, s.count as usize);
        if count == 0 {
            // An empty file's span may point past the end of a store it was carried into.
            return &[];
        }
        match start.checked_sub(self.base.len()) {
            None => &self.base[start..start + count],
            Some(o) => &self.own[o..o + count],
        }
    }

    fn push(&mut self, chunks: &[ChunkRef]) -> Span {
        let start = self.base.len() + self.own.len();
        self.own.extend_from_slice(chunks);
        Span { start: start as u32, count: chunks.len() as u32 }
    }
}

#[derive(Clone, Debug)]
pub struct Tree {
    pub params: ChunkParams,
    pub started_ns: i64,
    pub ignore_mode: Option<IgnoreMode>,
    entries: EntryList,
    spans: Vec<Span>,
    chunks: ChunkStore,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    TypeChanged,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Modified => "modified",
            ChangeKind::TypeChanged => "typechanged",
            ChangeKind::Deleted => "deleted",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Change {
    pub kind: ChangeKind,
    /// Index in the new tree (for Deleted: none).
    pub index: Option<usize>,
    /// Index in the previous tree, when the path existed there.
    pub prev_index: Option<usize>,
}

fn same_entry(a: &EntryRef, b: &EntryRef) -> bool {
    if a.meta.kind != b.meta.kind || a.meta.mode != b.meta.mode {
        return false;
    }
    match a.meta.kind {
        // A directory's times change whenever its children do; its children are compared on their own.
        Kind::Dir => true,
        Kind::Symlink => a.target() == b.target() && a.meta.ino == b.meta.ino && a.meta.mtime_ns == b.meta.mtime_ns,
        Kind::File => {
            a.meta.size == b.meta.size
                && a.meta.mtime_ns == b.meta.mtime_ns
                && a.meta.ctime_ns == b.meta.ctime_ns
                && a.meta.ino == b.meta.ino
        }
    }
}

/// True when `path` is one of `dirs` or lies under one of them.
fn under_any(path: &[u8], dirs: &[Vec<u8>]) -> bool {
    dirs.iter().any(|d| path.starts_with(d) && (path.len() == d.len() || path[d.len()] == b'/'))
}

impl Tree {
    pub fn empty(params: ChunkParams) -> Tree {
        Tree {
            params,
            started_ns: 0,
            ignore_mode: None,
            entries: EntryList::new(),
            spans: Vec::new(),
            chunks: ChunkStore::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &EntryList {
        &self.entries
    }

    pub fn entry(&self, index: usize) -> EntryRef<'_> {
        self.entries.get(index)
    }

    pub fn find(&self, path: &[u8]) -> Option<usize> {
        self.entries.find(path)
    }

    pub fn chunks_of(&self, index: usize) -> Option<&[ChunkRef]> {
        let s = self.spans[index];
        if s.count == NOT_CHUNKED {
            None
        } else {
            Some(self.chunks.get(s))
        }
    }

    pub fn recipe_of(&self, index: usize) -> Option<Recipe> {
        let chunks = self.chunks_of(index)?;
        Some(Recipe { size: self.entries.meta(index).size, digest: recipe_digest(chunks), chunks: chunks.to_vec() })
    }

    /// Records a file's recipe. Refuses one whose size does not match what was scanned: the file changed while
    /// it was read, and the next scan must look at it again.
    pub fn set_recipe(&mut self, index: usize, chunks: &[ChunkRef]) -> bool {
        let total: u64 = chunks.iter().map(|c| c.len as u64).sum();
        let meta = self.entries.meta(index);
        if meta.kind != Kind::File || total != meta.size {
            return false;
        }
        self.spans[index] = self.chunks.push(chunks);
        true
    }

    /// Forgets what was recorded for an entry, so that the next scan reports it again: a file that could not be
    /// read, or anything the remote did not take.
    pub fn forget(&mut self, index: usize) {
        self.spans[index] = NO_RECIPE;
        // Only a file has a recipe to drop. A symlink or directory the remote did not take must compare as changed
        // as well: otherwise the next scan finds it as recorded, and no later push sends it again.
        self.entries.mark_unknown(index);
    }

    /// Compares a fresh scan against this tree. Returns the new tree (recipes carried over for unchanged
    /// files) and the changes, sorted by path. Entries under directories that could not be read (and entries that
    /// could not be examined) are carried over untouched rather than reported deleted.
    pub fn diff(&self, scan: ScanOutput, params: ChunkParams) -> (Tree, Vec<Change>) {
        let recipes_valid = self.params == params;
        let racy_from = self.started_ns;
        let unreadable = scan.unreadable_dirs;
        // The scanned list becomes the new tree's as it is; only carried entries are added to it, at the end.
        let new = scan.entries;
        let old = &self.entries;
        let mut spans = Vec::with_capacity(new.len());
        let mut carried: Vec<(usize, usize)> = Vec::new();
        let mut changes = Vec::new();
        let (mut i, mut j) = (0usize, 0usize);
        loop {
            let ord = match (i < old.len(), j < new.len()) {
                (false, false) => break,
                (true, false) => std::cmp::Ordering::Less,
                (false, true) => std::cmp::Ordering::Greater,
                (true, true) => old.path(i).cmp(new.path(j)),
            };
            let pos = spans.len();
            match ord {
                std::cmp::Ordering::Less => {
                    if !unreadable.is_empty() && under_any(old.path(i), &unreadable) {
                        carried.push((pos, i));
                        spans.push(self.kept_span(i, old.meta(i).kind, recipes_valid));
                    } else {
                        changes.push(Change { kind: ChangeKind::Deleted, index: None, prev_index: Some(i) });
                    }
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    spans.push(NO_RECIPE);
                    changes.push(Change { kind: ChangeKind::Added, index: Some(pos), prev_index: None });
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let (o, n) = (old.get(i), new.get(j));
                    let same = same_entry(&o, &n);
                    let kind_changed = o.meta.kind != n.meta.kind;
                    let racy = n.meta.kind == Kind::File && o.meta.mtime_ns >= racy_from;
                    let chunked = n.meta.kind != Kind::File || (recipes_valid && self.spans[i].count != NOT_CHUNKED);
                    if same && !racy && chunked {
                        spans.push(self.kept_span(i, n.meta.kind, recipes_valid));
                    } else {
                        spans.push(NO_RECIPE);
                        let kind = if kind_changed { ChangeKind::TypeChanged } else { ChangeKind::Modified };
                        changes.push(Change { kind, index: Some(pos), prev_index: Some(i) });
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        let entries = new.with_inserted(&carried, old);
        let chunks = self.carry_chunks(&mut spans);
        let out =
            Tree { params, started_ns: scan.started_ns, ignore_mode: Some(scan.ignore_mode), entries, spans, chunks };
        (out, changes)
    }

    /// The span entry `i` of this tree passes on to the next one (still indexing this tree's chunks).
    fn kept_span(&self, i: usize, kind: Kind, recipes_valid: bool) -> Span {
        if recipes_valid && kind == Kind::File {
            self.spans[i]
        } else {
            NO_RECIPE
        }
    }

    /// The chunk store of a tree whose `spans` were taken from this one. Shares this one's loaded chunks when
    /// that is all the spans use and most of them are still used; otherwise copies what is used (and rewrites the
    /// spans), so that a tree does not keep a long-gone tree's recipes alive.
    fn carry_chunks(&self, spans: &mut [Span]) -> ChunkStore {
        let used = spans.iter().filter(|s| s.count != NOT_CHUNKED);
        let live: usize = used.clone().map(|s| s.count as usize).sum();
        let base_len = self.chunks.base.len();
        let only_base = used.clone().all(|s| (s.start as usize) < base_len || s.count == 0);
        if live == 0 {
            return ChunkStore::default();
        }
        if only_base && live * 2 >= base_len {
            return ChunkStore { base: Arc::clone(&self.chunks.base), own: Vec::new() };
        }
        let mut base = Vec::with_capacity(live);
        for s in spans.iter_mut().filter(|s| s.count != NOT_CHUNKED) {
            let start = base.len() as u32;
            base.extend_from_slice(self.chunks.get(*s));
            s.start = start;
        }
        ChunkStore { base: Arc::new(base), own: Vec::new() }
    }

    /// Inserts or replaces entries (with their recipes) and removes paths, keeping path order. The agent keeps
    /// what it placed this way. Runs in O(n + m log m); chunk space of replaced entries is reclaimed on save.
    pub fn update(&mut self, mut upserts: Vec<(Entry, Option<Vec<ChunkRef>>)>, mut removals: Vec<Vec<u8>>) {
        upserts.sort_by(|a, b| a.0.path().cmp(b.0.path()));
        upserts.dedup_by(|a, b| a.0.path() == b.0.path());
        removals.sort();
        let old = std::mem::take(&mut self.entries);
        let old_spans = std::mem::take(&mut self.spans);
        let name_bytes = old.name_bytes() + upserts.iter().map(|(u, _)| u.path().len() + 1).sum::<usize>();
        let mut entries = EntryList::with_capacity(old.len() + upserts.len(), name_bytes);
        let mut spans = Vec::with_capacity(old.len() + upserts.len());
        let mut ups = upserts.into_iter().peekable();
        let mut rm = removals.iter().peekable();
        let push_new = |entries: &mut EntryList,
                        spans: &mut Vec<Span>,
                        chunks: &mut ChunkStore,
                        e: Entry,
                        c: Option<Vec<ChunkRef>>| {
            let span = match c {
                Some(c) if e.meta.kind == Kind::File => chunks.push(&c),
                _ => NO_RECIPE,
            };
            entries.push_ref(e.view());
            spans.push(span);
        };
        for (i, span) in old_spans.into_iter().enumerate() {
            let path = old.path(i);
            while let Some((u, _)) = ups.peek() {
                if u.path() < path {
                    let (u, c) = ups.next().unwrap();
                    push_new(&mut entries, &mut spans, &mut self.chunks, u, c);
                } else {
                    break;
                }
            }
            while rm.peek().is_some_and(|r| r.as_slice() < path) {
                rm.next();
            }
            let removed = rm.peek().is_some_and(|r| r.as_slice() == path);
            let replaced = ups.peek().is_some_and(|(u, _)| u.path() == path);
            if replaced {
                let (u, c) = ups.next().unwrap();
                push_new(&mut entries, &mut spans, &mut self.chunks, u, c);
            } else if !removed {
                old.copy_to(i, &mut entries);
                spans.push(span);
            }
        }
        for (u, c) in ups {
            push_new(&mut entries, &mut spans, &mut self.chunks, u, c);
        }
        entries.shrink_to_fit();
        self.entries = entries;
        self.spans = spans;
    }

    /// Indexes of files and symlinks whose lstat no longer matches what was recorded (size, inode, and the
    /// mtime observed right after placing, which agents keep in the ctime slot). Missing ones count too, and so
    /// does everything under a directory that is now a symlink: no symlink below `root` is followed.
    pub fn drift(&self, root: &Path) -> Vec<usize> {
        crate::drift::drifted(&self.entries, root)
    }

    /// [`Tree::drift`] for only the entries `scope` covers (directories a watch saw change).
    pub fn drift_in(&self, root: &Path, scope: &crate::drift::DriftScope) -> Vec<usize> {
        crate::drift::drifted_in(&self.entries, root, scope)
    }

    /// Builds a tree of a whole scan with no recipes yet (every file is new).
    pub fn from_scan(scan: ScanOutput, params: ChunkParams) -> Tree {
        Tree::empty(params).diff(scan, params).0
    }
}

#[cfg(test)]
mod tests;
