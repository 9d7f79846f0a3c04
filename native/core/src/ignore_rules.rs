//! Ignore rules with git's semantics, chosen the way SkyPilot chooses them:
//! a `.skyignore` at the root means `.skyignore` files at every level and nothing else; otherwise `.gitignore`
//! at every level plus the root's `.git/info/exclude`. The user's global excludes never apply, and a directory
//! need not be a git repository.

use std::path::Path;
use std::sync::Arc;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::Match;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IgnoreMode {
    SkyIgnore,
    GitIgnore,
}

impl IgnoreMode {
    pub fn detect(root: &Path) -> IgnoreMode {
        if root.join(".skyignore").is_file() {
            IgnoreMode::SkyIgnore
        } else {
            IgnoreMode::GitIgnore
        }
    }

    pub fn file_name(self) -> &'static str {
        match self {
            IgnoreMode::SkyIgnore => ".skyignore",
            IgnoreMode::GitIgnore => ".gitignore",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IgnoreMode::SkyIgnore => "skyignore",
            IgnoreMode::GitIgnore => "gitignore",
        }
    }
}

/// One level of rules: the matcher of one ignore file and the length of its directory's relative path prefix
/// (including the trailing slash), so a candidate path is matched relative to the file that holds the rule.
pub struct RuleLevel {
    matcher: Gitignore,
    prefix_len: usize,
    parent: Option<Arc<RuleLevel>>,
}

pub type RuleChain = Option<Arc<RuleLevel>>;

/// Loads one ignore file into a new innermost level. Returns the chain unchanged when the file has no rules, and
/// a warning for lines git would also reject.
pub fn push_level(chain: &RuleChain, rel_prefix_len: usize, file: &Path) -> (RuleChain, Option<String>) {
    // Candidates are already relative to the rules' directory (see `is_ignored`). The matcher strips its root from
    // any candidate that starts with it, so the root must be one no relative path starts with: with the rules'
    // own directory, a relative scan root `proj` made `proj/secret` match `/secret`.
    let mut builder = GitignoreBuilder::new("/");
    // Git's own default: patterns are case-sensitive on Linux.
    builder.case_insensitive(false).ok();
    // Git never matches a pattern with an unclosed `[` (wildmatch aborts); the default would match it literally.
    builder.allow_unclosed_class(false);
    let warning = add_rules_file(&mut builder, file).map(|e| format!("{}: {}", file.display(), e));
    match builder.build() {
        Ok(matcher) if !matcher.is_empty() => {
            (Some(Arc::new(RuleLevel { matcher, prefix_len: rel_prefix_len, parent: chain.clone() })), warning)
        }
        Ok(_) => (chain.clone(), warning),
        Err(e) => (chain.clone(), Some(format!("{}: {}", file.display(), e))),
    }
}

/// Reads an ignore file the way git does rather than the way `GitignoreBuilder::add` does: git reads bytes and
/// hands each line to its matcher as a C string, so a NUL ends the pattern (`*\0junk` is `*`), and a line that is
/// not UTF-8 still has its rules up to the NUL. The builder would drop such a line whole, and a binary file that
/// ended up named `.gitignore` ignored a different set of paths than git.
fn add_rules_file(builder: &mut GitignoreBuilder, file: &Path) -> Option<String> {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => return Some(e.to_string()),
    };
    let mut rejected: Vec<String> = Vec::new();
    let mut not_utf8 = 0usize;
    let mut first_not_utf8 = 0usize;
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let raw = match raw.iter().position(|&b| b == 0) {
            Some(nul) => &raw[..nul],
            None => raw,
        };
        // Git skips a UTF-8 byte order mark at the start of the file.
        let raw = if i == 0 { raw.strip_prefix("\u{feff}".as_bytes()).unwrap_or(raw) } else { raw };
        let line = match std::str::from_utf8(raw) {
            Ok(l) => l,
            Err(_) => {
                // Such a rule can only match names with the same invalid bytes, which no UTF-8 glob can express.
                if not_utf8 == 0 {
                    first_not_utf8 = i + 1;
                }
                not_utf8 += 1;
                continue;
            }
        };
        if let Err(e) = builder.add_line(Some(file.to_path_buf()), line) {
            if rejected.len() < 3 {
                rejected.push(format!("line {}: {}", i + 1, e));
            }
        }
    }
    if not_utf8 > 0 {
        rejected.push(format!("{not_utf8} line(s) not UTF-8, skipped (first: line {first_not_utf8})"));
    }
    if rejected.is_empty() {
        None
    } else {
        Some(rejected.join("; "))
    }
}

/// Git's precedence: the innermost file with a matching rule decides; within a file the last match wins.
pub fn is_ignored(chain: &RuleChain, rel_path: &Path, rel_bytes_len: usize, is_dir: bool) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let bytes = rel_path.as_os_str().as_bytes();
    debug_assert_eq!(bytes.len(), rel_bytes_len);
    let mut level = chain.as_ref();
    while let Some(l) = level {
        let candidate = Path::new(std::ffi::OsStr::from_bytes(&bytes[l.prefix_len.min(bytes.len())..]));
        match l.matcher.matched(candidate, is_dir) {
            Match::Ignore(_) => return true,
            Match::Whitelist(_) => return false,
            Match::None => {}
        }
        level = l.parent.as_ref();
    }
    false
}
