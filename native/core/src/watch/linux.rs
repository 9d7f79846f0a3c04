//! The Linux watcher: its state, the thread that reads events, and the answers to queries. Walking the tree
//! and keeping its watches is in `walk`, applying events in `events`.

mod events;
mod walk;

use super::*;
use crate::ignore_rules::{IgnoreMode, RuleChain};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
