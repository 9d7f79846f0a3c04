//! Entries of a scanned tree. Kept small: the scan holds one per file, and memory per entry is a target.

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

/// A path relative to the scan root, '/'-separated, raw bytes (names need not be UTF-8). A symlink's target is
/// stored after a NUL in the same allocation: paths cannot contain NUL, and one allocation per entry matters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: Box<[u8]>,
    pub meta: Meta,
}

impl Entry {
    pub fn new(path: &[u8], meta: Meta, target: Option<&[u8]>) -> Entry {
        let name = match target {
            Some(t) => {
                let mut v = Vec::with_capacity(path.len() + 1 + t.len());
                v.extend_from_slice(path);
                v.push(0);
                v.extend_from_slice(t);
                v.into_boxed_slice()
            }
            None => path.to_vec().into_boxed_slice(),
        };
        Entry { name, meta }
    }

    pub fn path(&self) -> &[u8] {
        match self.name.iter().position(|&b| b == 0) {
            Some(i) if self.meta.kind == Kind::Symlink => &self.name[..i],
            _ => &self.name,
        }
    }

    pub fn target(&self) -> Option<&[u8]> {
        if self.meta.kind != Kind::Symlink {
            return None;
        }
        self.name.iter().position(|&b| b == 0).map(|i| &self.name[i + 1..])
    }
}
