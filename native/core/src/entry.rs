//! Entries of a scanned tree. Kept small: the scan holds one per file, and memory per entry is a target (150 bytes
//! with the previous tree alive). A list stores every name in one byte buffer and each entry as a fixed 48-byte
//! record pointing into it, so a tree of n entries is a few large allocations rather than n small ones: no
//! per-path allocator overhead, and nothing left fragmented across the scan threads' heaps once a scan is over.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    File = 1,
    Dir = 2,
    Symlink = 3,
}

impl Kind {
    pub fn from_u8(v: u8) -> Option<Kind> {
        match v {
            1 => Some(Kind::File),
            2 => Some(Kind::Dir),
            3 => Some(Kind::Symlink),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    /// Permission bits only (st_mode & 0o7777).
    pub mode: u16,
    pub kind: Kind,
}

/// Splits a stored name into path and symlink target: a target is kept after a NUL, which no path can contain.
fn split_name(name: &[u8], kind: Kind) -> (&[u8], Option<&[u8]>) {
    if kind != Kind::Symlink {
        return (name, None);
    }
    match name.iter().position(|&b| b == 0) {
        Some(i) => (&name[..i], Some(&name[i + 1..])),
        None => (name, None),
    }
}

fn joined_name<'a>(path: &'a [u8], target: Option<&'a [u8]>) -> impl Iterator<Item = &'a [u8]> {
    let (sep, t): (&[u8], &[u8]) = match target {
        Some(t) => (&[0], t),
        None => (&[], &[]),
    };
    [path, sep, t].into_iter()
}

/// An entry on its own, with its path owned: what callers hand in (e.g. what an agent placed). Paths are relative
/// to the scan root, '/'-separated, raw bytes (names need not be UTF-8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    name: Box<[u8]>,
    pub meta: Meta,
}

impl Entry {
    pub fn new(path: &[u8], meta: Meta, target: Option<&[u8]>) -> Entry {
        let target = if meta.kind == Kind::Symlink { target } else { None };
        Entry { name: joined_name(path, target).collect::<Vec<_>>().concat().into_boxed_slice(), meta }
    }

    pub fn path(&self) -> &[u8] {
        split_name(&self.name, self.meta.kind).0
    }

    pub fn target(&self) -> Option<&[u8]> {
        split_name(&self.name, self.meta.kind).1
    }

    pub fn view(&self) -> EntryRef<'_> {
        let (path, target) = split_name(&self.name, self.meta.kind);
        EntryRef { meta: self.meta, path, target }
    }
}

/// An entry of a list, borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRef<'a> {
    pub meta: Meta,
    path: &'a [u8],
    target: Option<&'a [u8]>,
}

impl<'a> EntryRef<'a> {
    pub fn path(&self) -> &'a [u8] {
        self.path
    }

    pub fn target(&self) -> Option<&'a [u8]> {
        self.target
    }

    pub fn to_entry(&self) -> Entry {
        Entry::new(self.path, self.meta, self.target)
    }
}

/// One entry of a list: its metadata and where its name lies in the list's byte buffer. The offset is 64-bit
/// because the record has room for it (the size is rounded up to 48 bytes either way).
#[derive(Clone, Copy, Debug)]
struct Rec {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    off: u64,
    len: u32,
    mode: u16,
    kind: Kind,
}

const _: () = assert!(std::mem::size_of::<Rec>() == 48);

impl Rec {
    fn meta(&self) -> Meta {
        Meta {
            size: self.size,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
            ino: self.ino,
            mode: self.mode,
            kind: self.kind,
        }
    }

    fn name<'a>(&self, names: &'a [u8]) -> &'a [u8] {
        &names[self.off as usize..self.off as usize + self.len as usize]
    }

    fn path<'a>(&self, names: &'a [u8]) -> &'a [u8] {
        split_name(self.name(names), self.kind).0
    }
}

/// Entries in one name buffer. Kept in path order except while a scan is filling it.
#[derive(Clone, Default)]
pub struct EntryList {
    recs: Vec<Rec>,
    names: Vec<u8>,
}

impl EntryList {
    pub fn new() -> EntryList {
        EntryList::default()
    }

    /// Room for `entries` entries whose names (paths, plus symlink targets) add up to `name_bytes`.
    pub fn with_capacity(entries: usize, name_bytes: usize) -> EntryList {
        EntryList { recs: Vec::with_capacity(entries), names: Vec::with_capacity(name_bytes) }
    }

    pub fn len(&self) -> usize {
        self.recs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    /// Bytes taken by the names: with `len`, what a list like this one needs.
    pub fn name_bytes(&self) -> usize {
        self.names.len()
    }

    pub fn get(&self, i: usize) -> EntryRef<'_> {
        let r = &self.recs[i];
        let (path, target) = split_name(r.name(&self.names), r.kind);
        EntryRef { meta: r.meta(), path, target }
    }

    /// The path alone, without building the whole entry: what sorting and searching compare.
    pub fn path(&self, i: usize) -> &[u8] {
        self.recs[i].path(&self.names)
    }

    pub fn meta(&self, i: usize) -> Meta {
        self.recs[i].meta()
    }

    /// Makes entry `i` unlike anything a scan can find: no time is `i64::MIN`, and no directory's permission bits
    /// are `u16::MAX` (see `Tree::forget`).
    pub fn mark_unknown(&mut self, i: usize) {
        let r = &mut self.recs[i];
        r.mtime_ns = i64::MIN;
        if r.kind == Kind::Dir {
            r.mode = u16::MAX;
        }
    }

    /// Whether `mark_unknown` marked entry `i`.
    pub fn is_marked_unknown(&self, i: usize) -> bool {
        self.recs[i].mtime_ns == i64::MIN
    }

    pub fn last_path(&self) -> Option<&[u8]> {
        self.recs.last().map(|r| r.path(&self.names))
    }

    pub fn iter(&self) -> Iter<'_> {
        Iter { list: self, range: 0..self.recs.len() }
    }

    /// Index of `path`, when the list is in path order.
    pub fn find(&self, path: &[u8]) -> Option<usize> {
        self.recs.binary_search_by(|r| r.path(&self.names).cmp(path)).ok()
    }

    pub fn push(&mut self, path: &[u8], meta: Meta, target: Option<&[u8]>) {
        let off = self.names.len();
        let target = if meta.kind == Kind::Symlink { target } else { None };
        for part in joined_name(path, target) {
            self.names.extend_from_slice(part);
        }
        let len = u32::try_from(self.names.len() - off).expect("a name longer than 4 GiB");
        self.recs.push(Rec {
            size: meta.size,
            mtime_ns: meta.mtime_ns,
            ctime_ns: meta.ctime_ns,
            ino: meta.ino,
            off: off as u64,
            len,
            mode: meta.mode,
            kind: meta.kind,
        });
    }

    pub fn push_ref(&mut self, e: EntryRef<'_>) {
        self.push(e.path, e.meta, e.target)
    }

    /// Moves every entry of `other` to the end of this list, leaving `other` empty with its buffers kept for reuse.
    pub(crate) fn append(&mut self, other: &mut EntryList) {
        let base = self.names.len() as u64;
        self.names.extend_from_slice(&other.names);
        self.recs.extend(other.recs.iter().map(|r| Rec { off: r.off + base, ..*r }));
        other.clear();
    }

    pub(crate) fn clear(&mut self) {
        self.recs.clear();
        self.names.clear();
    }

    /// Puts the entries in path order. Only the records move; the names stay where they are.
    pub(crate) fn sort_by_path(&mut self) {
        use rayon::slice::ParallelSliceMut;
        let names = &self.names;
        self.recs.par_sort_unstable_by(|a, b| a.path(names).cmp(b.path(names)));
    }

    pub(crate) fn shrink_to_fit(&mut self) {
        self.recs.shrink_to_fit();
        self.names.shrink_to_fit();
    }

    /// The entries strictly under directory `dir` ("" for the root): a contiguous range in path order, because
    /// '/' sorts before every byte that can follow it in a name ('0' is the first byte after it).
    pub(crate) fn subtree_range(&self, dir: &[u8], within: std::ops::Range<usize>) -> std::ops::Range<usize> {
        if dir.is_empty() {
            return within;
        }
        let recs = &self.recs[within.clone()];
        let names = &self.names;
        let below = |r: &Rec, last: u8| {
            let p = r.path(names);
            let n = dir.len().min(p.len());
            match p[..n].cmp(dir) {
                std::cmp::Ordering::Equal => p.len() <= dir.len() || p[dir.len()] < last,
                o => o == std::cmp::Ordering::Less,
            }
        };
        let lo = recs.partition_point(|r| below(r, b'/'));
        let hi = recs.partition_point(|r| below(r, b'0'));
        within.start + lo..within.start + hi
    }

    /// Entries `range` of this list pushed on another as they are.
    pub(crate) fn copy_range_to(&self, range: std::ops::Range<usize>, to: &mut EntryList) {
        let recs = &self.recs[range];
        if recs.is_empty() {
            return;
        }
        // Names of distinct records never overlap; when those of the range tile one stretch of the buffer (a loaded
        // tree keeps them in path order), copy the stretch at once.
        let start = recs.iter().map(|r| r.off).min().unwrap();
        let end = recs.iter().map(|r| r.off + r.len as u64).max().unwrap();
        let total: u64 = recs.iter().map(|r| r.len as u64).sum();
        if end - start == total {
            let base = to.names.len() as u64;
            to.names.extend_from_slice(&self.names[start as usize..end as usize]);
            to.recs.extend(recs.iter().map(|r| Rec { off: r.off - start + base, ..*r }));
        } else {
            for r in recs {
                let off = to.names.len() as u64;
                to.names.extend_from_slice(r.name(&self.names));
                to.recs.push(Rec { off, ..*r });
            }
        }
    }

    /// Entry `i` of this list, to be pushed on another as it is: copies the record and its name.
    pub(crate) fn copy_to(&self, i: usize, to: &mut EntryList) {
        let r = self.recs[i];
        let off = to.names.len() as u64;
        to.names.extend_from_slice(r.name(&self.names));
        to.recs.push(Rec { off, ..r });
    }

    /// This list with entries of `from` inserted: `inserts` holds (position in the result, index in `from`) in
    /// increasing position. The names of this list stay where they are; only the inserted ones are copied.
    pub(crate) fn with_inserted(self, inserts: &[(usize, usize)], from: &EntryList) -> EntryList {
        if inserts.is_empty() {
            return self;
        }
        let EntryList { recs: mine, mut names } = self;
        let mut recs = Vec::with_capacity(mine.len() + inserts.len());
        let mut mine = mine.into_iter();
        for &(pos, i) in inserts {
            recs.extend(mine.by_ref().take(pos - recs.len()));
            debug_assert_eq!(recs.len(), pos);
            let r = from.recs[i];
            let off = names.len() as u64;
            names.extend_from_slice(r.name(&from.names));
            recs.push(Rec { off, ..r });
        }
        recs.extend(mine);
        EntryList { recs, names }
    }
}

impl PartialEq for EntryList {
    fn eq(&self, other: &EntryList) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for EntryList {}

impl fmt::Debug for EntryList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

pub struct Iter<'a> {
    list: &'a EntryList,
    range: std::ops::Range<usize>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = EntryRef<'a>;

    fn next(&mut self) -> Option<EntryRef<'a>> {
        self.range.next().map(|i| self.list.get(i))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.range.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.range.next_back().map(|i| self.list.get(i))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a EntryList {
    type Item = EntryRef<'a>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: Kind) -> Meta {
        Meta { size: 1, mtime_ns: 2, ctime_ns: 3, ino: 4, mode: 0o644, kind }
    }

    #[test]
    fn names_and_targets_round_trip_through_one_buffer() {
        let mut a = EntryList::new();
        a.push(b"b/link", meta(Kind::Symlink), Some(b"../x\xff"));
        a.push(b"a", meta(Kind::File), Some(b"ignored: not a link"));
        let mut b = EntryList::new();
        b.push(b"c", meta(Kind::Dir), None);
        b.append(&mut a);
        assert!(a.is_empty());
        b.sort_by_path();
        let got: Vec<_> = b.iter().map(|e| (e.path(), e.target())).collect();
        assert_eq!(got, vec![(&b"a"[..], None), (&b"b/link"[..], Some(&b"../x\xff"[..])), (&b"c"[..], None)]);
        assert_eq!(b.find(b"b/link"), Some(1));
        assert_eq!(b.find(b"b"), None);
        assert_eq!(b.get(1).to_entry(), Entry::new(b"b/link", meta(Kind::Symlink), Some(b"../x\xff")));
        assert_eq!(b.get(1), Entry::new(b"b/link", meta(Kind::Symlink), Some(b"../x\xff")).view());
        let mut c = EntryList::new();
        b.copy_to(1, &mut c);
        assert_eq!(c.get(0), b.get(1));
        let mut d = EntryList::new();
        d.push(b"a0", meta(Kind::File), None);
        d.push(b"a2", meta(Kind::File), None);
        let mut from = EntryList::new();
        from.push(b"a1", meta(Kind::Dir), None);
        from.push(b"a3", meta(Kind::Symlink), Some(b"t"));
        let d = d.with_inserted(&[(1, 0), (3, 1)], &from);
        let got: Vec<_> = d.iter().map(|e| (e.path(), e.target())).collect();
        assert_eq!(
            got,
            vec![(&b"a0"[..], None), (&b"a1"[..], None), (&b"a2"[..], None), (&b"a3"[..], Some(&b"t"[..]))]
        );
    }
}
