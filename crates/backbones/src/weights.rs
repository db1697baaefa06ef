//! Finding a model's weights file (explicit path, Hugging Face cache, download) and reading it into tensors.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use data::text::one_line;
use hf_hub::{Cache, Repo, RepoType};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::hub::{self, DownloadOptions};
use crate::pth;
use crate::registry::ModelSpec;

/// Where the weights for `spec` are: `explicit` when given, else the Hub cache, else a download (see `opts`).
pub fn resolve(spec: &ModelSpec, explicit: Option<&Path>, opts: &DownloadOptions) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return check_readable(path).map(|()| path.to_path_buf());
    }
    if let Some(path) = cached_path_in(spec, &opts.cache_dir) {
        return Ok(path);
    }
    hub::download(spec, opts)
}

fn check_readable(path: &Path) -> Result<()> {
    let err = |reason: String| Error::Weights {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if !meta.is_file() {
        return Err(err("not a regular file".into()));
    }
    std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// The Hugging Face Hub cache: `HF_HUB_CACHE` when set (hf-hub 0.4 itself reads only `HF_HOME`), else hf-hub's
/// [`Cache::from_env`] (`HF_HOME/hub`, else `~/.cache/huggingface/hub`).
pub fn hub_cache() -> Cache {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("HF_HUB_CACHE") {
        return Cache::new(dir);
    }
    // hf-hub takes an empty HF_HOME literally and panics without a home folder: those cases stay here.
    let hf_home_unset = std::env::var_os("HF_HOME").is_none();
    if var("HF_HOME").is_some() || (hf_home_unset && var("HOME").is_some()) {
        return Cache::from_env();
    }
    let home = var("HOME")
        .or_else(|| var("USERPROFILE"))
        .unwrap_or_else(|| PathBuf::from("."));
    Cache::new(home.join(".cache").join("huggingface").join("hub"))
}

/// The Hub cache root (see [`hub_cache`]).
pub fn hub_cache_dir() -> PathBuf {
    hub_cache().path().clone()
}

/// The Hub repository of `spec` at its revision.
pub(crate) fn hub_repo(spec: &ModelSpec) -> Repo {
    Repo::with_revision(spec.hub.repo.clone(), RepoType::Model, spec.hub.revision.clone())
}

/// The cache folder name of a model repository (`timm/resnet18.tv_in1k` → `models--timm--resnet18.tv_in1k`).
pub fn repo_folder(repo: &str) -> String {
    Repo::model(repo.to_string()).folder_name()
}

/// The cached weights file of `spec` in the default Hub cache, when present.
pub fn cached_path(spec: &ModelSpec) -> Option<PathBuf> {
    cached_path_in(spec, &hub_cache_dir())
}

/// The cached weights file of `spec` under the cache root `cache_dir`, looked up with hf-hub's [`Cache`].
pub fn cached_path_in(spec: &ModelSpec, cache_dir: &Path) -> Option<PathBuf> {
    let repo = hub_repo(spec);
    let path = Cache::new(cache_dir.to_path_buf())
        .repo(repo.clone())
        .get(&spec.hub.file)
        .or_else(|| {
            // What hf-hub's lookup does not cover: a ref with a trailing newline (hand-written), and a revision that
            // is itself a commit id (no ref file).
            let repo_dir = cache_dir.join(repo.folder_name());
            let rev = &spec.hub.revision;
            let commit = match std::fs::read_to_string(repo_dir.join("refs").join(rev)) {
                Ok(c) => c.trim().to_string(),
                Err(_) if rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()) => rev.clone(),
                Err(_) => return None,
            };
            if commit.is_empty() || commit.contains(['/', '\\']) || commit == ".." {
                return None;
            }
            Some(repo_dir.join("snapshots").join(commit).join(&spec.hub.file))
        })?;
    // `is_file` follows symlinks: a dangling link to a removed blob (or a folder) is not a cached file.
    path.is_file().then_some(path)
}

/// The sha256 of a file as lowercase hex, read in a streaming fashion.
pub fn file_sha256(path: &Path) -> Result<String> {
    let err = |e: std::io::Error| Error::Weights {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut f = std::fs::File::open(path).map_err(err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Every tensor of a weights file with timm's names, floats as float32 (see [`load_tensors_as`]).
pub fn load_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    load_tensors_as(path, DType::F32)
}

/// Every tensor of a weights file (safetensors, or zip-format PyTorch `.pth`/`.pt`/`.bin`, told apart by content),
/// renamed from torchvision's to timm's names where they differ, float tensors converted to `dtype`, on the CPU.
pub fn load_tensors_as(path: &Path, dtype: DType) -> Result<HashMap<String, Tensor>> {
    let err = |reason: String| Error::Weights {
        path: path.to_path_buf(),
        reason,
    };
    check_readable(path)?;
    let mut magic = [0u8; 4];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut magic))
        .map_err(|e| err(e.to_string()))?;
    let raw = if n == 4 && &magic == b"PK\x03\x04" {
        pth::read_pth(path)?
    } else if is_legacy_pickle(&magic[..n]) {
        return Err(err(
            "legacy (non-zip) PyTorch format is not supported: re-save it with a recent torch.save, or convert it to safetensors"
                .into(),
        ));
    } else {
        candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
            err(format!(
                "not a safetensors or zip-format PyTorch file ({})",
                one_line(&e.to_string())
            ))
        })?
    };
    let mapped = pth::torchvision_to_timm(raw).map_err(|e| err(one_line(&e.to_string())))?;
    mapped
        .into_iter()
        .map(|(k, t)| {
            let t = if t.dtype().is_float() && t.dtype() != dtype {
                t.to_dtype(dtype).map_err(|e| err(format!("tensor `{k}`: {e}")))?
            } else {
                t
            };
            Ok((k, t))
        })
        .collect()
}

fn is_legacy_pickle(head: &[u8]) -> bool {
    head.first() == Some(&0x80)
}
