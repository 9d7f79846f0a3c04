//! What a tree looked like at the last sync: entries with their metadata and, for files, their recipes.
//! Persisted in a compact binary format and compared here, so an unchanged tree never crosses into JavaScript.
//!
//! File format (little endian), version 1:
//!   "SKYSNAP\0" | u32 version | u32 min | u32 avg | u32 max | i64 started_ns | u8 ignore_mode | varint entries
//!   per entry: varint shared_prefix | varint suffix_len | suffix | u8 kind | varint mode | varint size |
//!              i64 mtime_ns | i64 ctime_ns | varint ino |
//!              symlink: varint target_len | target;  file: varint (chunks + 1, 0 = not chunked) | chunks
//!   per chunk: 32-byte id | varint len
//!   trailer: 32-byte BLAKE3 of everything before it.

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use crate::chunk::{recipe_digest, ChunkParams, ChunkRef, Recipe};
use crate::ignore_rules::IgnoreMode;
use crate::scan::ScanOutput;
use crate::tree::{Entry, EntryList, EntryRef, Kind, Meta};

const MAGIC: &[u8; 8] = b"SKYSNAP\0";
const VERSION: u32 = 1;
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
pub struct Snapshot {
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
    /// Index in the new snapshot (for Deleted: none).
    pub index: Option<usize>,
    /// Index in the previous snapshot, when the path existed there.
    pub prev_index: Option<usize>,
}

#[derive(Debug)]
pub enum LoadError {
    Io(io::Error),
    Corrupt(String),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Io(e) => write!(f, "{e}"),
            LoadError::Corrupt(why) => write!(f, "corrupted snapshot ({why})"),
        }
    }
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

impl Snapshot {
    pub fn empty(params: ChunkParams) -> Snapshot {
        Snapshot {
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

    /// Compares a fresh scan against this snapshot. Returns the new snapshot (recipes carried over for unchanged
    /// files) and the changes, sorted by path. Entries under directories that could not be read (and entries that
    /// could not be examined) are carried over untouched rather than reported deleted.
    pub fn diff(&self, scan: ScanOutput, params: ChunkParams) -> (Snapshot, Vec<Change>) {
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
        let out = Snapshot { params, started_ns: scan.started_ns, ignore_mode: Some(scan.ignore_mode), entries, spans, chunks };
        (out, changes)
    }

    /// The span entry `i` of this snapshot passes on to the next one (still indexing this snapshot's chunks).
    fn kept_span(&self, i: usize, kind: Kind, recipes_valid: bool) -> Span {
        if recipes_valid && kind == Kind::File {
            self.spans[i]
        } else {
            NO_RECIPE
        }
    }

    /// The chunk store of a snapshot whose `spans` were taken from this one. Shares this one's loaded chunks when
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
        let push_new = |entries: &mut EntryList, spans: &mut Vec<Span>, chunks: &mut ChunkStore, e: Entry, c: Option<Vec<ChunkRef>>| {
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

    /// [`Snapshot::drift`] for only the entries `scope` covers (directories a watch saw change).
    pub fn drift_in(&self, root: &Path, scope: &crate::drift::DriftScope) -> Vec<usize> {
        crate::drift::drifted_in(&self.entries, root, scope)
    }

    /// Builds a snapshot of a whole scan with no recipes yet (every file is new).
    pub fn from_scan(scan: ScanOutput, params: ChunkParams) -> Snapshot {
        Snapshot::empty(params).diff(scan, params).0
    }

    pub fn encode(&self) -> Vec<u8> {
        let chunk_count = self.chunks.base.len() + self.chunks.own.len();
        let mut w = Vec::with_capacity(64 + self.entries.len() * 48 + chunk_count * 34);
        w.extend_from_slice(MAGIC);
        w.extend_from_slice(&VERSION.to_le_bytes());
        w.extend_from_slice(&self.params.min_size.to_le_bytes());
        w.extend_from_slice(&self.params.avg_size.to_le_bytes());
        w.extend_from_slice(&self.params.max_size.to_le_bytes());
        w.extend_from_slice(&self.started_ns.to_le_bytes());
        w.push(match self.ignore_mode {
            None => 0,
            Some(IgnoreMode::GitIgnore) => 1,
            Some(IgnoreMode::SkyIgnore) => 2,
        });
        put_varint(&mut w, self.entries.len() as u64);
        let mut prev: &[u8] = &[];
        for (i, e) in self.entries.iter().enumerate() {
            let p = e.path();
            let shared = p.iter().zip(prev.iter()).take_while(|(a, b)| a == b).count();
            put_varint(&mut w, shared as u64);
            put_varint(&mut w, (p.len() - shared) as u64);
            w.extend_from_slice(&p[shared..]);
            w.push(e.meta.kind as u8);
            put_varint(&mut w, e.meta.mode as u64);
            put_varint(&mut w, e.meta.size);
            w.extend_from_slice(&e.meta.mtime_ns.to_le_bytes());
            w.extend_from_slice(&e.meta.ctime_ns.to_le_bytes());
            put_varint(&mut w, e.meta.ino);
            match e.meta.kind {
                Kind::Symlink => {
                    let t = e.target().unwrap_or(&[]);
                    put_varint(&mut w, t.len() as u64);
                    w.extend_from_slice(t);
                }
                Kind::File => match self.chunks_of(i) {
                    None => put_varint(&mut w, 0),
                    Some(cs) => {
                        put_varint(&mut w, cs.len() as u64 + 1);
                        for c in cs {
                            w.extend_from_slice(&c.id);
                            put_varint(&mut w, c.len as u64);
                        }
                    }
                },
                Kind::Dir => {}
            }
            prev = p;
        }
        let sum = blake3::hash(&w);
        w.extend_from_slice(sum.as_bytes());
        w
    }

    pub fn decode(data: &[u8]) -> Result<Snapshot, LoadError> {
        let corrupt = |why: &str| LoadError::Corrupt(why.to_string());
        if data.len() < 8 + 4 * 4 + 8 + 1 + 32 || &data[..8] != MAGIC {
            return Err(corrupt("not a snapshot file"));
        }
        let (body, sum) = data.split_at(data.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err(corrupt("checksum mismatch"));
        }
        let mut r = Reader { data: body, pos: 8 };
        let version = r.u32()?;
        if version != VERSION {
            return Err(LoadError::Corrupt(format!("unknown version {version}")));
        }
        let params = ChunkParams { min_size: r.u32()?, avg_size: r.u32()?, max_size: r.u32()? };
        let started_ns = r.i64()?;
        let ignore_mode = match r.u8()? {
            0 => None,
            1 => Some(IgnoreMode::GitIgnore),
            2 => Some(IgnoreMode::SkyIgnore),
            _ => return Err(corrupt("bad ignore mode")),
        };
        let n = r.varint()? as usize;
        // Every entry takes at least 20 bytes: refuse counts the file cannot hold before allocating for them.
        if n > body.len() / 20 {
            return Err(corrupt("entry count larger than the file"));
        }
        // The file's size as a first guess for the names (trimmed at the end): shared prefixes are stored once in
        // the file and in full in memory, chunk ids only in the file.
        let mut entries = EntryList::with_capacity(n, body.len());
        let mut spans = Vec::with_capacity(n);
        let mut chunks: Vec<ChunkRef> = Vec::new();
        let mut path: Vec<u8> = Vec::new();
        for _ in 0..n {
            let shared = r.varint()? as usize;
            let suffix = r.varint()? as usize;
            if shared > path.len() {
                return Err(corrupt("bad path prefix"));
            }
            path.truncate(shared);
            path.extend_from_slice(r.bytes(suffix)?);
            if path.is_empty() || path.contains(&0) {
                return Err(corrupt("bad path"));
            }
            if let Some(last) = entries.last_path() {
                if last >= path.as_slice() {
                    return Err(corrupt("entries out of order"));
                }
            }
            let kind = Kind::from_u8(r.u8()?).ok_or_else(|| corrupt("bad kind"))?;
            let mode = r.varint()? as u16;
            let size = r.varint()?;
            let mtime_ns = r.i64()?;
            let ctime_ns = r.i64()?;
            let ino = r.varint()?;
            let meta = Meta { size, mtime_ns, ctime_ns, ino, mode, kind };
            let mut span = NO_RECIPE;
            let mut target = None;
            match kind {
                Kind::Symlink => {
                    let len = r.varint()? as usize;
                    target = Some(r.bytes(len)?);
                }
                Kind::File => {
                    let count = r.varint()?;
                    if count > 0 {
                        let count = (count - 1) as usize;
                        if count > r.remaining() / 33 {
                            return Err(corrupt("chunk count larger than the file"));
                        }
                        let start = chunks.len() as u32;
                        let mut total = 0u64;
                        for _ in 0..count {
                            let mut id = [0u8; 32];
                            id.copy_from_slice(r.bytes(32)?);
                            let len = r.varint()? as u32;
                            total += len as u64;
                            chunks.push(ChunkRef { id, len });
                        }
                        if total != size {
                            return Err(corrupt("recipe does not add up to the file size"));
                        }
                        span = Span { start, count: count as u32 };
                    }
                }
                Kind::Dir => {}
            }
            entries.push(&path, meta, target);
            spans.push(span);
        }
        if r.remaining() != 0 {
            return Err(corrupt("trailing bytes"));
        }
        entries.shrink_to_fit();
        chunks.shrink_to_fit();
        Ok(Snapshot {
            params,
            started_ns,
            ignore_mode,
            entries,
            spans,
            chunks: ChunkStore { base: Arc::new(chunks), own: Vec::new() },
        })
    }

    pub fn load(path: &Path) -> Result<Snapshot, LoadError> {
        let data = fs::read(path).map_err(LoadError::Io)?;
        Snapshot::decode(&data)
    }

    /// Writes atomically: a crashed process leaves the old snapshot or the new one, never half of one. No fsync:
    /// on ext4 it would flush every dirty file of the sync just done (seconds for a large file), and a snapshot
    /// lost to a power cut only costs the next push a full comparison; the checksum catches a torn one.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let data = self.encode();
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&data)?;
        }
        fs::rename(&tmp, path)
    }
}

fn put_varint(w: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        w.push((v as u8) | 0x80);
        v >>= 7;
    }
    w.push(v as u8);
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], LoadError> {
        if n > self.remaining() {
            return Err(LoadError::Corrupt("truncated".into()));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, LoadError> {
        Ok(self.bytes(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, LoadError> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().unwrap()))
    }
    fn i64(&mut self) -> Result<i64, LoadError> {
        Ok(i64::from_le_bytes(self.bytes(8)?.try_into().unwrap()))
    }
    fn varint(&mut self) -> Result<u64, LoadError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(LoadError::Corrupt("varint too long".into()))
    }
}

#[cfg(test)]
mod update_tests {
    use super::*;

    fn file(p: &str, size: u64) -> Entry {
        Entry::new(p.as_bytes(), Meta { size, mtime_ns: 1, ctime_ns: 2, ino: 3, mode: 0o644, kind: Kind::File }, None)
    }

    fn chunk(n: u8, len: u32) -> ChunkRef {
        ChunkRef { id: [n; 32], len }
    }

    #[test]
    fn update_inserts_replaces_and_removes_in_order() {
        let mut s = Snapshot::empty(crate::DEFAULT_PARAMS);
        s.update(vec![(file("b", 1), Some(vec![chunk(1, 1)])), (file("a", 2), Some(vec![chunk(2, 2)]))], vec![]);
        s.update(
            vec![(file("c", 3), Some(vec![chunk(3, 3)])), (file("a", 4), Some(vec![chunk(4, 4)]))],
            vec![b"b".to_vec(), b"zzz".to_vec()],
        );
        let paths: Vec<&[u8]> = s.entries().iter().map(|e| e.path()).collect();
        assert_eq!(paths, vec![b"a".as_slice(), b"c".as_slice()]);
        assert_eq!(s.chunks_of(0).unwrap(), &[chunk(4, 4)]);
        assert_eq!(s.chunks_of(1).unwrap(), &[chunk(3, 3)]);
        let again = Snapshot::decode(&s.encode()).unwrap();
        assert_eq!(again.chunks_of(0).unwrap(), &[chunk(4, 4)]);
        assert_eq!(again.len(), 2);
    }

    #[test]
    fn drift_sees_changed_and_missing_files() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("same"), b"x").unwrap();
        std::fs::write(dir.path().join("edited"), b"y").unwrap();
        let rec = |name: &str| {
            let md = std::fs::symlink_metadata(dir.path().join(name)).unwrap();
            let m = Meta {
                size: md.size(),
                mtime_ns: 0,
                ctime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
                ino: md.ino(),
                mode: 0o644,
                kind: Kind::File,
            };
            (Entry::new(name.as_bytes(), m, None), None)
        };
        let mut s = Snapshot::empty(crate::DEFAULT_PARAMS);
        let gone = (file("gone", 1), None);
        s.update(vec![rec("same"), rec("edited"), gone], vec![]);
        std::fs::write(dir.path().join("edited"), b"yy").unwrap();
        let drifted: Vec<&[u8]> = s.drift(dir.path()).into_iter().map(|i| s.entries().path(i)).collect();
        assert_eq!(drifted, vec![b"edited".as_slice(), b"gone".as_slice()]);
    }

    #[test]
    fn scoped_drift_checks_only_the_directories_it_is_given() {
        use crate::drift::DriftScope;
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        for d in ["a", "a/deep", "b"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let names = ["top", "a/one", "a/deep/two", "b/three"];
        for n in names {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let rec = |name: &str| {
            let md = std::fs::symlink_metadata(dir.path().join(name)).unwrap();
            let m = Meta { size: md.size(), mtime_ns: 0, ctime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(), ino: md.ino(), mode: 0o644, kind: Kind::File };
            (Entry::new(name.as_bytes(), m, None), None)
        };
        let mut s = Snapshot::empty(crate::DEFAULT_PARAMS);
        s.update(names.iter().map(|n| rec(n)).collect(), vec![]);
        // Every file changes; each scope reports exactly the ones it covers.
        for n in names {
            std::fs::write(dir.path().join(n), b"changed").unwrap();
        }
        let paths = |v: Vec<usize>| -> Vec<String> { v.into_iter().map(|i| String::from_utf8_lossy(s.entries().path(i)).into_owned()).collect() };
        let none: Vec<Vec<u8>> = vec![];
        let only = |dirs: &[&str], subtrees: &[&str]| {
            let d: Vec<Vec<u8>> = dirs.iter().map(|x| x.as_bytes().to_vec()).collect();
            let t: Vec<Vec<u8>> = subtrees.iter().map(|x| x.as_bytes().to_vec()).collect();
            paths(s.drift_in(dir.path(), &DriftScope { dirs: &d, subtrees: &t }))
        };
        assert_eq!(only(&[""], &[]), vec!["top"]);
        assert_eq!(only(&["a"], &[]), vec!["a/one"]);
        assert_eq!(only(&["a/deep", "b"], &[]), vec!["a/deep/two", "b/three"]);
        assert_eq!(only(&[], &["a"]), vec!["a/deep/two", "a/one"]);
        assert_eq!(only(&[], &[""]), paths(s.drift(dir.path())));
        assert!(paths(s.drift_in(dir.path(), &DriftScope { dirs: &none, subtrees: &none })).is_empty());
        // A directory that is gone: what was recorded in it drifted.
        std::fs::remove_dir_all(dir.path().join("b")).unwrap();
        assert_eq!(only(&["b"], &[]), vec!["b/three"]);
    }
}

#[cfg(test)]
mod carry_tests {
    use super::*;

    fn meta(size: u64) -> Meta {
        Meta { size, mtime_ns: 1, ctime_ns: 2, ino: 3, mode: 0o644, kind: Kind::File }
    }

    fn chunk(n: u8, len: u32) -> ChunkRef {
        ChunkRef { id: [n; 32], len }
    }

    /// A saved and loaded tree of files named after their chunk: what a re-scan starts from.
    fn loaded(files: &[(&str, &[ChunkRef])]) -> Snapshot {
        let mut s = Snapshot::empty(crate::DEFAULT_PARAMS);
        let ups = files
            .iter()
            .map(|(p, cs)| (Entry::new(p.as_bytes(), meta(cs.iter().map(|c| c.len as u64).sum()), None), Some(cs.to_vec())))
            .collect();
        s.update(ups, vec![]);
        s.started_ns = 100;
        Snapshot::decode(&s.encode()).unwrap()
    }

    fn scan_of(prev: &Snapshot, keep: &[&str]) -> ScanOutput {
        let mut entries = EntryList::new();
        for e in prev.entries().iter().filter(|e| keep.contains(&std::str::from_utf8(e.path()).unwrap())) {
            entries.push_ref(e);
        }
        ScanOutput {
            entries,
            warnings: vec![],
            unreadable_dirs: vec![],
            ignore_mode: IgnoreMode::GitIgnore,
            started_ns: 200,
            ignored: 0,
            dirs_listed: 0,
            partial: false,
        }
    }

    fn recipe(s: &Snapshot, p: &str) -> Option<Vec<ChunkRef>> {
        s.chunks_of(s.find(p.as_bytes()).unwrap()).map(|c| c.to_vec())
    }

    #[test]
    fn an_unchanged_rescan_shares_the_loaded_recipes_and_both_trees_stay_independent() {
        let (a, b) = ([chunk(1, 5), chunk(2, 6)], [chunk(3, 7)]);
        let mut prev = loaded(&[("a", &a), ("b", &b), ("empty", &[])]);
        let (mut next, changes) = prev.diff(scan_of(&prev, &["a", "b", "empty"]), prev.params);
        assert!(changes.is_empty());
        assert!(Arc::ptr_eq(&next.chunks.base, &prev.chunks.base), "recipes copied, not shared");
        assert_eq!(recipe(&next, "a").unwrap(), a);
        assert_eq!(recipe(&next, "empty").unwrap(), []);
        // Recording on one tree leaves the other as it was.
        assert!(next.set_recipe(next.find(b"a").unwrap(), &[chunk(9, 11)]));
        assert!(prev.set_recipe(prev.find(b"b").unwrap(), &[chunk(8, 7)]));
        assert_eq!(recipe(&next, "a").unwrap(), [chunk(9, 11)]);
        assert_eq!(recipe(&next, "b").unwrap(), b);
        assert_eq!(recipe(&prev, "a").unwrap(), a);
        assert_eq!(recipe(&prev, "b").unwrap(), [chunk(8, 7)]);
        let back = Snapshot::decode(&next.encode()).unwrap();
        assert_eq!(recipe(&back, "a").unwrap(), [chunk(9, 11)]);
        assert_eq!(recipe(&back, "b").unwrap(), b);
        // A tree with recipes of its own, used as the previous one, passes every recipe on (copied).
        let (third, changes) = next.diff(scan_of(&next, &["a", "b", "empty"]), next.params);
        assert!(changes.is_empty());
        assert!(!Arc::ptr_eq(&third.chunks.base, &next.chunks.base));
        assert_eq!(recipe(&third, "a").unwrap(), [chunk(9, 11)]);
        assert_eq!(recipe(&third, "b").unwrap(), b);
        assert_eq!(recipe(&third, "empty").unwrap(), []);
    }

    #[test]
    fn recipes_are_copied_when_most_of_the_previous_ones_are_gone() {
        let big: Vec<ChunkRef> = (0..10).map(|i| chunk(i, 1)).collect();
        let prev = loaded(&[("big", &big), ("empty", &[]), ("small", &[chunk(20, 3)])]);
        let (next, changes) = prev.diff(scan_of(&prev, &["empty", "small"]), prev.params);
        assert_eq!(changes.len(), 1);
        assert!(!Arc::ptr_eq(&next.chunks.base, &prev.chunks.base));
        assert_eq!(next.chunks.base.len(), 1, "only the live recipe is kept");
        assert_eq!(recipe(&next, "small").unwrap(), [chunk(20, 3)]);
        assert_eq!(recipe(&next, "empty").unwrap(), []);
    }

    #[test]
    fn entries_under_an_unreadable_directory_are_carried_in_order_with_their_recipes() {
        let prev = loaded(&[("a", &[chunk(1, 1)]), ("d/x", &[chunk(2, 2)]), ("d/y", &[chunk(3, 3)]), ("z", &[chunk(4, 4)])]);
        let mut scan = scan_of(&prev, &["a", "z"]);
        let mut entries = EntryList::new();
        entries.push_ref(scan.entries.get(0));
        entries.push(b"c", meta(9), None);
        entries.push_ref(scan.entries.get(1));
        scan.entries = entries;
        scan.unreadable_dirs = vec![b"d".to_vec()];
        let (next, changes) = prev.diff(scan, prev.params);
        let paths: Vec<&[u8]> = next.entries().iter().map(|e| e.path()).collect();
        assert_eq!(paths, vec![&b"a"[..], b"c", b"d/x", b"d/y", b"z"]);
        assert_eq!(changes.len(), 1);
        assert_eq!((changes[0].kind, changes[0].index), (ChangeKind::Added, Some(1)));
        assert_eq!(recipe(&next, "d/y").unwrap(), [chunk(3, 3)]);
        assert_eq!(recipe(&next, "z").unwrap(), [chunk(4, 4)]);
        assert_eq!(recipe(&next, "c"), None);
        assert_eq!(next.entry(3), prev.entry(2));
    }

    #[test]
    fn other_chunk_params_carry_no_recipe() {
        let prev = loaded(&[("a", &[chunk(1, 5)])]);
        let params = ChunkParams { min_size: prev.params.min_size * 2, ..prev.params };
        let (next, changes) = prev.diff(scan_of(&prev, &["a"]), params);
        assert_eq!(changes.len(), 1);
        assert_eq!(recipe(&next, "a"), None);
        assert!(next.chunks.base.is_empty());
    }
}
