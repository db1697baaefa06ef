//! Downloading pretrained weights from the Hugging Face Hub into its standard cache layout.
//!
//! hf-hub's async client does the transfer (resumable `*.sync.part` files, ranged requests) inside a private
//! staging cache (`<cache>/.graft-staging`). Only a file whose byte count, and sha256 where known (the registry's,
//! or the LFS etag, which *is* the sha256), check out is moved into `<cache>/models--{org}--{name}/blobs/{etag}`
//! and linked from `snapshots/{commit}/{file}`; `refs/{revision}` is written last, atomically. So a partial or
//! corrupt download is never where a complete file is expected, and files downloaded by Python are reused. Lookups
//! and folder names are hf-hub's ([`hf_hub::Cache`], `Repo::folder_name`); every rename is flushed to disk
//! ([`data::fsutil`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hf_hub::api::tokio::{ApiBuilder, ApiError, Progress};
use hf_hub::Cache;
use indicatif::{MultiProgress, ProgressBar};

use crate::error::{Error, Result};
use crate::registry::ModelSpec;
use crate::weights::{cached_path_in, file_sha256, hub_cache_dir, hub_repo};

/// The Hub endpoint used when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// How and where to download.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// The Hub cache root (holding `models--{org}--{name}`).
    pub cache_dir: PathBuf,
    /// The Hub endpoint, without a trailing slash.
    pub endpoint: String,
    /// Refuse any network access (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Draw progress bars on the terminal.
    pub progress: bool,
    /// Access token (`HF_TOKEN`), for gated or private repositories.
    pub token: Option<String>,
}

impl DownloadOptions {
    /// Options from the environment: `HF_HUB_CACHE`/`HF_HOME`, `HF_ENDPOINT`, `HF_HUB_OFFLINE`, `HF_TOKEN`.
    pub fn from_env() -> Self {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        Self {
            cache_dir: hub_cache_dir(),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            offline: env_flag("HF_HUB_OFFLINE"),
            progress: false,
            token: std::env::var("HF_TOKEN").ok().filter(|t| !t.trim().is_empty()),
        }
    }

    /// The same options with another cache root.
    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = dir.into();
        self
    }

    /// The same options with another endpoint (e.g. a mirror or a test server).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into().trim_end_matches('/').to_string();
        self
    }
}

/// Whether an environment flag is set to a true value (`1`, `true`, `yes`, `on`).
pub(crate) fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// What a download produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// The weights file inside the Hub cache.
    pub path: PathBuf,
    /// `true` when the file was already cached and no network was used.
    pub was_cached: bool,
}

/// The one-line hint telling the user how to get the weights of `name`.
pub fn how_to_get(name: &str) -> String {
    format!("run `cargo xtask download-weights {name}` where the Hub is reachable, or pass `--weights FILE`")
}

/// Download `spec`'s weights into the cache (no network when already cached); the cached file's path.
pub fn download(spec: &ModelSpec, opts: &DownloadOptions) -> Result<PathBuf> {
    let rt = runtime()?;
    rt.block_on(download_async(spec, opts, None)).map(|d| d.path)
}

/// Download several models concurrently, one progress bar each; one result per spec, in order.
pub fn download_many(specs: &[ModelSpec], opts: &DownloadOptions) -> Vec<Result<Downloaded>> {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            let msg = e.to_string();
            return specs.iter().map(|_| Err(Error::Msg(msg.clone()))).collect();
        }
    };
    let multi = opts.progress.then(MultiProgress::new);
    rt.block_on(async {
        let mut handles = Vec::with_capacity(specs.len());
        for spec in specs {
            let spec = spec.clone();
            let opts = opts.clone();
            let bar = multi.as_ref().map(|m| m.add(ProgressBar::new(0)));
            handles.push(tokio::spawn(async move { download_async(&spec, &opts, bar).await }));
        }
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            out.push(match h.await {
                Ok(r) => r,
                Err(e) => Err(Error::Msg(format!("download task failed: {e}"))),
            });
        }
        out
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Msg(format!("cannot start the download runtime: {e}")))
}

/// Async [`download`]: reuse the cache, else fetch, verify and install the file; `bar` shows progress.
pub async fn download_async(spec: &ModelSpec, opts: &DownloadOptions, bar: Option<ProgressBar>) -> Result<Downloaded> {
    if let Some(path) = cached_path_in(spec, &opts.cache_dir) {
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        return Ok(Downloaded { path, was_cached: true });
    }
    let name = &spec.name;
    if opts.offline {
        return Err(Error::Msg(format!(
            "weights for `{name}` ({}) are not in the cache {} and HF_HUB_OFFLINE is set: {}",
            spec.hub.repo,
            opts.cache_dir.display(),
            how_to_get(name)
        )));
    }
    let url = format!(
        "{}/{}/resolve/{}/{}",
        opts.endpoint,
        spec.hub.repo,
        spec.hub.revision.replace('/', "%2F"),
        spec.hub.file
    );
    let fail = |reason: String| {
        Error::Msg(format!(
            "cannot download weights for `{name}` from {url}: {reason}; {}",
            how_to_get(name)
        ))
    };

    let staging_root = opts.cache_dir.join(".graft-staging");
    let repo = hub_repo(spec);
    let staging_repo = staging_root.join(repo.folder_name());
    // Stale pointers from an interrupted run would make hf-hub skip linking; blobs stay (resumable parts).
    let _ = std::fs::remove_dir_all(staging_repo.join("snapshots"));
    let _ = std::fs::remove_dir_all(staging_repo.join("refs"));

    let api = ApiBuilder::from_cache(Cache::new(staging_root.clone()))
        .with_endpoint(opts.endpoint.clone())
        .with_token(opts.token.clone())
        .with_progress(false)
        .build()
        .map_err(|e| fail(api_reason(&e)))?;
    let tracker = Tracker {
        expected: Arc::new(AtomicU64::new(u64::MAX)),
        received: Arc::new(AtomicU64::new(0)),
        bar: bar.clone(),
    };
    let staged = api
        .repo(repo)
        .download_with_progress(&spec.hub.file, tracker.clone())
        .await
        .map_err(|e| fail(api_reason(&e)))?;

    let result = install(spec, opts, &staged, &tracker).await;
    let _ = std::fs::remove_dir_all(staging_repo.join("snapshots"));
    let _ = std::fs::remove_dir_all(staging_repo.join("refs"));
    match result {
        Ok(path) => Ok(Downloaded {
            path,
            was_cached: false,
        }),
        Err(reason) => Err(fail(reason)),
    }
}

/// Verify the staged file and move it into the real cache layout; the reason on failure (the blob is removed).
async fn install(
    spec: &ModelSpec,
    opts: &DownloadOptions,
    staged: &Path,
    tracker: &Tracker,
) -> std::result::Result<PathBuf, String> {
    let blob =
        std::fs::canonicalize(staged).map_err(|e| format!("downloaded file {} vanished: {e}", staged.display()))?;
    let commit = staged
        .parent()
        .and_then(|p| p.file_name())
        .map(|c| c.to_string_lossy().into_owned())
        .ok_or_else(|| format!("unexpected cache path {}", staged.display()))?;
    let etag = blob
        .file_name()
        .map(|c| c.to_string_lossy().into_owned())
        .ok_or_else(|| format!("unexpected blob path {}", blob.display()))?;
    let discard = |reason: String| {
        let _ = std::fs::remove_file(&blob);
        let _ = std::fs::remove_file(staged);
        reason
    };

    let expected = tracker.expected.load(Ordering::SeqCst);
    let received = tracker.received.load(Ordering::SeqCst);
    let on_disk = std::fs::metadata(&blob).map(|m| m.len()).unwrap_or(0);
    if received != expected || on_disk != expected {
        return Err(discard(format!(
            "incomplete download: received {received} of {expected} bytes; the partial file was removed"
        )));
    }

    let is_sha256 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let registry_sha = spec.hub.sha256.as_deref().map(str::to_ascii_lowercase);
    let etag_sha = is_sha256(&etag).then(|| etag.to_ascii_lowercase());
    if registry_sha.is_some() || etag_sha.is_some() {
        let blob_c = blob.clone();
        let actual = tokio::task::spawn_blocking(move || file_sha256(&blob_c))
            .await
            .map_err(|e| format!("hashing task failed: {e}"))?
            .map_err(|e| discard(e.to_string()))?;
        for (what, want) in [("registry", &registry_sha), ("Hub etag", &etag_sha)] {
            if let Some(want) = want {
                if &actual != want {
                    return Err(discard(format!(
                        "sha256 mismatch ({what} expects {want}, got {actual}); the file was removed"
                    )));
                }
            }
        }
    }

    let io = |what: &str, p: &Path, e: std::io::Error| format!("cannot {what} {}: {e}", p.display());
    let repo_dir = opts.cache_dir.join(hub_repo(spec).folder_name());
    let blobs = repo_dir.join("blobs");
    std::fs::create_dir_all(&blobs).map_err(|e| io("create", &blobs, e))?;
    let final_blob = blobs.join(&etag);
    std::fs::rename(&blob, &final_blob).map_err(|e| io("move the download to", &final_blob, e))?;
    data::fsutil::sync_dir(&blobs).map_err(|e| io("flush", &blobs, e))?;

    let snap_dir = repo_dir.join("snapshots").join(&commit);
    let pointer = snap_dir.join(&spec.hub.file);
    let pointer_parent = pointer.parent().unwrap_or(&snap_dir).to_path_buf();
    std::fs::create_dir_all(&pointer_parent).map_err(|e| io("create", &pointer_parent, e))?;
    let tmp_pointer = pointer_parent.join(format!(
        ".{}.{}.tmp",
        pointer
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp_pointer);
    link_or_copy(&final_blob, &tmp_pointer).map_err(|e| io("link", &tmp_pointer, e))?;
    std::fs::rename(&tmp_pointer, &pointer).map_err(|e| io("create", &pointer, e))?;
    data::fsutil::sync_dir(&pointer_parent).map_err(|e| io("flush", &pointer_parent, e))?;

    // Not hf-hub's `CacheRepo::create_ref`: it truncates the ref in place, and the ref must appear last and whole.
    let ref_path = repo_dir.join("refs").join(&spec.hub.revision);
    if let Some(parent) = ref_path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
    }
    data::fsutil::write_atomic(&ref_path, commit.as_bytes()).map_err(|e| e.to_string())?;
    Ok(pointer)
}

/// A relative symlink from `link` to `target` (as Python's huggingface_hub makes), else a copy.
fn link_or_copy(target: &Path, link: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let rel = relative_to(target, link.parent().unwrap_or(Path::new(".")));
        if std::os::unix::fs::symlink(&rel, link).is_ok() {
            return Ok(());
        }
    }
    std::fs::copy(target, link).map(|_| ())
}

/// `target` expressed relative to the directory `from` (both absolute or both relative).
fn relative_to(target: &Path, from: &Path) -> PathBuf {
    let t: Vec<_> = target.components().collect();
    let f: Vec<_> = from.components().collect();
    let common = t.iter().zip(&f).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

/// A one-line reason from an hf-hub error (with its source chain, and a plain word for HTTP statuses).
fn api_reason(e: &ApiError) -> String {
    let status = match e {
        ApiError::RequestError(r) => r.status(),
        ApiError::TooManyRetries(inner) => match inner.as_ref() {
            ApiError::RequestError(r) => r.status(),
            _ => None,
        },
        _ => None,
    };
    let mut msg = match status {
        Some(s) if s.as_u16() == 404 => {
            "not found on the Hub (HTTP 404: wrong repository, file or revision)".to_string()
        }
        Some(s) if s.as_u16() == 401 || s.as_u16() == 403 => {
            format!("access denied (HTTP {s}): the repository may be gated; set HF_TOKEN")
        }
        Some(s) => format!("HTTP {s}"),
        None => e.to_string(),
    };
    if status.is_none() {
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            let text = s.to_string();
            if !msg.contains(&text) {
                msg.push_str(": ");
                msg.push_str(&text);
            }
            src = s.source();
        }
    }
    msg.replace('\n', " ")
}

/// Counts the bytes hf-hub reports (to detect short transfers) and forwards them to an optional progress bar.
#[derive(Clone)]
struct Tracker {
    expected: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    bar: Option<ProgressBar>,
}

impl Progress for Tracker {
    async fn init(&mut self, size: usize, filename: &str) {
        self.expected.store(size as u64, Ordering::SeqCst);
        self.received.store(0, Ordering::SeqCst);
        if let Some(bar) = &mut self.bar {
            Progress::init(bar, size, filename).await;
        }
    }

    async fn update(&mut self, size: usize) {
        self.received.fetch_add(size as u64, Ordering::SeqCst);
        if let Some(bar) = &mut self.bar {
            Progress::update(bar, size).await;
        }
    }

    async fn finish(&mut self) {
        if let Some(bar) = &mut self.bar {
            Progress::finish(bar).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_to(Path::new("/c/m/blobs/abc"), Path::new("/c/m/snapshots/123")),
            PathBuf::from("../../blobs/abc")
        );
        assert_eq!(relative_to(Path::new("/a/b"), Path::new("/a")), PathBuf::from("b"));
    }
}
