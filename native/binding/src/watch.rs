//! The inotify watcher behind partial scans and scoped drift checks.

use std::path::Path;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use skysync_core as core;

use crate::paths::BytePath;

#[napi(object)]
pub struct WatchAnswer {
    /// `ok`: answered; `starting`: a walk is under way (the first one, or one after lost events): no token yet;
    /// `dead`: this watcher can never answer again (its directory went away or moved): start another.
    #[napi(ts_type = "'ok' | 'starting' | 'dead'")]
    pub state: String,
    /// The token to store with the tree of a scan that starts after this answer.
    pub token: Option<String>,
    /// Scan everything: the watcher cannot vouch for the token given.
    pub full: bool,
    pub reason: Option<String>,
    #[napi(ts_type = "string[]")]
    pub dirs: Vec<BytePath>,
    #[napi(ts_type = "string[]")]
    pub subtrees: Vec<BytePath>,
}

/// Watches a directory tree (Linux inotify) so that a later scan lists only what changed (`scanPartial`).
/// Throws when watching is not supported here (platform, filesystem).
#[napi]
pub struct Watcher {
    inner: Option<core::watch::Watcher>,
}

#[napi]
impl Watcher {
    #[napi(constructor)]
    pub fn new(root: String) -> Result<Watcher> {
        core::watch::Watcher::start(Path::new(&root), core::watch::WatchOptions::default())
            .map(|w| Watcher { inner: Some(w) })
            .map_err(|e| Error::new(Status::GenericFailure, format!("{root}: {e}")))
    }

    /// What changed since `token` (null: nothing known), and the token for a scan that starts now.
    #[napi]
    pub fn changes_since(&self, token: Option<String>) -> WatchAnswer {
        let since = token.as_deref().and_then(core::watch::Token::parse);
        let Some(w) = &self.inner else {
            return WatchAnswer {
                state: "dead".into(),
                token: None,
                full: true,
                reason: Some("closed".into()),
                dirs: vec![],
                subtrees: vec![],
            };
        };
        match w.changes_since(since) {
            Ok(c) => WatchAnswer {
                state: "ok".into(),
                token: Some(c.token.encode()),
                full: c.full,
                reason: c.reason,
                dirs: c.dirs.into_iter().map(BytePath).collect(),
                subtrees: c.subtrees.into_iter().map(BytePath).collect(),
            },
            Err(e @ (core::watch::WatchError::NotReady | core::watch::WatchError::Busy)) => WatchAnswer {
                state: "starting".into(),
                token: None,
                full: true,
                reason: Some(e.to_string()),
                dirs: vec![],
                subtrees: vec![],
            },
            Err(e) => WatchAnswer {
                state: "dead".into(),
                token: None,
                full: true,
                reason: Some(e.to_string()),
                dirs: vec![],
                subtrees: vec![],
            },
        }
    }

    /// Stops watching (also done when the object is collected).
    #[napi]
    pub fn close(&mut self) {
        self.inner = None;
    }
}
