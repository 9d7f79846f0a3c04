//! Chunking and hashing: FastCDC cut points, BLAKE3 ids, recipes and their digests.

use std::path::PathBuf;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use skysync_core as core;

use crate::layouts::{pack_chunks, unpack_chunks};
use crate::paths::{join, BytePath};

#[napi(object)]
#[derive(Clone, Copy)]
pub struct ChunkParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl From<core::ChunkParams> for ChunkParams {
    fn from(p: core::ChunkParams) -> Self {
        ChunkParams { min_size: p.min_size, avg_size: p.avg_size, max_size: p.max_size }
    }
}

pub(crate) fn params_of(p: Option<ChunkParams>) -> Result<core::ChunkParams> {
    let p = match p {
        Some(p) => core::ChunkParams { min_size: p.min_size, avg_size: p.avg_size, max_size: p.max_size },
        None => core::DEFAULT_PARAMS,
    };
    p.validate().map_err(|e| Error::new(Status::InvalidArg, e))?;
    Ok(p)
}

/// The chunk parameters skysync uses unless told otherwise.
#[napi]
pub fn default_chunk_params() -> ChunkParams {
    core::DEFAULT_PARAMS.into()
}

/// A file's content as chunks. `chunks` packs each chunk as a 32-byte BLAKE3 id followed by its length
/// (u32 little endian), 36 bytes a chunk, so a 1 GB file's recipe crosses as one buffer.
#[napi(object)]
pub struct Recipe {
    pub size: f64,
    pub digest: Buffer,
    pub chunks: Buffer,
}

pub(crate) fn recipe_js(r: &core::Recipe) -> Recipe {
    Recipe { size: r.size as f64, digest: r.digest.to_vec().into(), chunks: pack_chunks(&r.chunks).into() }
}

pub struct ChunkTask {
    root: PathBuf,
    paths: Vec<Vec<u8>>,
    params: core::ChunkParams,
    hints: Option<Vec<Option<Vec<core::ChunkRef>>>>,
}

#[napi(object)]
pub struct ChunkOutcome {
    pub recipe: Option<Recipe>,
    pub error: Option<String>,
}

impl Task for ChunkTask {
    type Output = Vec<std::io::Result<core::Recipe>>;
    type JsValue = Vec<ChunkOutcome>;

    fn compute(&mut self) -> Result<Self::Output> {
        let abs: Vec<PathBuf> = self.paths.iter().map(|p| join(&self.root, p)).collect();
        Ok(match &self.hints {
            Some(hints) => core::chunk_files_hinted(&abs, hints, self.params),
            None => core::chunk_files(&abs, self.params),
        })
    }

    fn resolve(&mut self, _env: Env, out: Self::Output) -> Result<Self::JsValue> {
        Ok(out
            .into_iter()
            .map(|r| match r {
                Ok(r) => ChunkOutcome { recipe: Some(recipe_js(&r)), error: None },
                Err(e) => ChunkOutcome { recipe: None, error: Some(e.to_string()) },
            })
            .collect())
    }
}

/// Chunks files under `root` in parallel. One outcome per path, in order: a recipe or the read error. A large
/// file is read in Rust and cut in segments on all cores (core `chunk::parallel`), with the recipe of a single
/// pass, so one big file alone uses the whole machine too.
///
/// `hints`, when given, has one entry per path: the packed recipe the caller had for that file before (as in
/// `Recipe.chunks`), or null. The outcomes are the same as without hints; where a large file still holds the
/// chunks of its hint they are hashed instead of cut again. A hint must come from the same chunk parameters
/// (the tree's `params`): with others, the cuts may differ from a run without hints.
#[napi(ts_return_type = "Promise<ChunkOutcome[]>")]
pub fn chunk_files(
    root: String,
    #[napi(ts_arg_type = "string[]")] paths: Vec<BytePath>,
    params: Option<ChunkParams>,
    #[napi(ts_arg_type = "Array<Buffer | null | undefined> | null")] hints: Option<Vec<Option<Buffer>>>,
) -> Result<AsyncTask<ChunkTask>> {
    let hints = match hints {
        Some(h) if h.len() != paths.len() => {
            return Err(Error::new(
                Status::InvalidArg,
                format!("hints must have one entry per path ({} paths, {} hints)", paths.len(), h.len()),
            ))
        }
        Some(h) => Some(
            h.iter()
                .enumerate()
                .map(|(i, b)| match b {
                    Some(b) => unpack_chunks(b)
                        .map(Some)
                        .map_err(|e| Error::new(Status::InvalidArg, format!("hint {i}: {}", e.reason))),
                    None => Ok(None),
                })
                .collect::<Result<Vec<_>>>()?,
        ),
        None => None,
    };
    Ok(AsyncTask::new(ChunkTask {
        root: PathBuf::from(root),
        paths: paths.into_iter().map(|p| p.0).collect(),
        params: params_of(params)?,
        hints,
    }))
}

#[napi]
pub fn chunk_buffer(data: Buffer, params: Option<ChunkParams>) -> Result<Recipe> {
    Ok(recipe_js(&core::chunk_bytes(&data, params_of(params)?)))
}

/// Chunk lengths for a buffer, for golden vectors and the fallback's tests.
#[napi]
pub fn cut_points(data: Buffer, params: Option<ChunkParams>) -> Result<Vec<u32>> {
    Ok(core::chunk::cut_points(&data, params_of(params)?).into_iter().map(|l| l as u32).collect())
}

#[napi]
pub fn blake3(data: Buffer) -> Buffer {
    core::chunk::chunk_id(&data).to_vec().into()
}

pub struct VerifyTask {
    data: Buffer,
    refs: Buffer,
}

impl Task for VerifyTask {
    type Output = i64;
    type JsValue = i64;

    fn compute(&mut self) -> Result<i64> {
        Ok(core::chunk::verify_chunks(&self.data, &self.refs).map(|i| i as i64).unwrap_or(-1))
    }

    fn resolve(&mut self, _env: Env, output: i64) -> Result<i64> {
        Ok(output)
    }
}

/// Verifies consecutive chunks of `data` against packed refs (id + length) off the JavaScript thread, so a
/// receiver keeps reading while it hashes. Resolves with the index of the first bad chunk, or -1.
#[napi(ts_return_type = "Promise<number>")]
pub fn verify_chunks(data: Buffer, refs: Buffer) -> AsyncTask<VerifyTask> {
    AsyncTask::new(VerifyTask { data, refs })
}

/// The whole-file digest of a packed recipe.
#[napi]
pub fn recipe_digest(chunks: Buffer) -> Result<Buffer> {
    Ok(core::chunk::recipe_digest(&unpack_chunks(&chunks)?).to_vec().into())
}
