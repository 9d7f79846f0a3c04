//! Drift: which placed entries changed on disk since they were placed, whole or scoped to what a watch saw.

use std::path::PathBuf;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use skysync_core as core;

use crate::paths::{dir_scope, BytePath, DirScope};
use crate::tree::Tree;

pub struct DriftTask {
    tree: Tree,
    root: PathBuf,
    /// Directories (their direct entries) and subtrees to check; None: everything.
    scope: Option<DirScope>,
}

impl Task for DriftTask {
    type Output = Vec<Vec<u8>>;
    type JsValue = Vec<BytePath>;

    fn compute(&mut self) -> Result<Self::Output> {
        let s = self.tree.inner.read().unwrap();
        let found = match &self.scope {
            None => s.drift(&self.root),
            Some((dirs, subtrees)) => s.drift_in(&self.root, &core::drift::DriftScope { dirs, subtrees }),
        };
        Ok(found.into_iter().map(|i| s.entries().path(i).to_vec()).collect())
    }

    fn resolve(&mut self, _env: Env, out: Self::Output) -> Result<Self::JsValue> {
        Ok(out.into_iter().map(BytePath).collect())
    }
}

#[napi]
impl Tree {
    /// Paths of placed files and symlinks under `root` that changed since they were placed (or are gone).
    #[napi(ts_return_type = "Promise<string[]>")]
    pub fn drift(&self, root: String) -> AsyncTask<DriftTask> {
        AsyncTask::new(DriftTask { tree: self.clone(), root: PathBuf::from(root), scope: None })
    }

    /// `drift` for only the entries directly in `dirs` and anywhere below `subtrees` (relative paths, "" for the
    /// root): what a watch reported as changed since the last check. The rest is taken as unchanged.
    #[napi(ts_return_type = "Promise<string[]>")]
    pub fn drift_in(
        &self,
        root: String,
        #[napi(ts_arg_type = "string[]")] dirs: Vec<BytePath>,
        #[napi(ts_arg_type = "string[]")] subtrees: Vec<BytePath>,
    ) -> AsyncTask<DriftTask> {
        let scope = dir_scope(dirs, subtrees);
        AsyncTask::new(DriftTask { tree: self.clone(), root: PathBuf::from(root), scope: Some(scope) })
    }
}
