//! On-disk cache of a frozen backbone's pooled features, keyed by a sha256 of everything that determines them.
//!
//! `{dir}/{key}.safetensors` holds `features` (N×F, float32) and `labels`; `{dir}/{key}.json` the key's inputs.
//! With augmentation, K augmented views per image are cached (N·K rows, labels repeated).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use backbones::Backbone;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// One dataset file as it enters the key: path, size and modification time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    /// The path as given.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: u128,
}

/// Everything that determines the cached features.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKey {
    /// The dataset's files in order.
    pub files: Vec<FileStamp>,
    /// Backbone architecture.
    pub backbone: String,
    /// Sha256 of the backbone weights.
    pub weights_sha256: String,
    /// A description of the preprocessing (e.g. its JSON).
    pub preprocessing: String,
    /// Augmented views per image (1 without augmentation).
    pub views: usize,
}

impl CacheKey {
    /// A key over `files` (each is stat'ed; a missing file is an error naming it).
    pub fn new(
        files: &[PathBuf],
        backbone: &str,
        weights_sha256: &str,
        preprocessing: &str,
        views: usize,
    ) -> Result<Self> {
        let files = files
            .iter()
            .map(|p| {
                let md = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
                let mtime_ns = md
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                Ok(FileStamp {
                    path: p.to_string_lossy().into_owned(),
                    size: md.len(),
                    mtime_ns,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            files,
            backbone: backbone.to_string(),
            weights_sha256: weights_sha256.to_string(),
            preprocessing: preprocessing.to_string(),
            views,
        })
    }

    /// The sha256 (hex) of the key's JSON.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).expect("a cache key always serialises");
        hex::encode(Sha256::digest(json))
    }
}

/// Whether features came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Loaded from disk.
    Hit,
    /// Computed and written.
    Miss,
}

/// Cached features and labels.
#[derive(Debug, Clone)]
pub struct CachedFeatures {
    /// N×F float32 features.
    pub features: Tensor,
    /// Labels (u32), N or N×C.
    pub labels: Tensor,
    /// Hit or miss.
    pub status: CacheStatus,
    /// The safetensors file.
    pub path: PathBuf,
}

/// The cached features for `key` in `dir`, or — on a miss — `compute()`'s, written atomically for next time.
pub fn load_or_compute<F>(dir: &Path, key: &CacheKey, device: &Device, compute: F) -> Result<CachedFeatures>
where
    F: FnOnce() -> Result<(Tensor, Tensor)>,
{
    let digest = key.digest();
    let path = dir.join(format!("{digest}.safetensors"));
    let json_path = dir.join(format!("{digest}.json"));
    if path.exists() && json_path.exists() {
        let stored: Option<CacheKey> = std::fs::read(&json_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if stored.as_ref() == Some(key) {
            let mut t = candle_core::safetensors::load(&path, device).map_err(|e| Error::io(&path, e))?;
            if let (Some(features), Some(labels)) = (t.remove("features"), t.remove("labels")) {
                return Ok(CachedFeatures {
                    features,
                    labels,
                    status: CacheStatus::Hit,
                    path,
                });
            }
        }
    }
    let (features, labels) = compute()?;
    let features = features.to_dtype(DType::F32)?;
    let labels = labels.to_dtype(DType::U32)?;
    if features.dim(0)? != labels.dim(0)? {
        return Err(Error::Config(format!(
            "{} feature rows for {} labels",
            features.dim(0)?,
            labels.dim(0)?
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tensors = HashMap::from([
        ("features".to_string(), features.clone()),
        ("labels".to_string(), labels.clone()),
    ]);
    heads::save_safetensors_atomic(&tensors, &path)?;
    let json = serde_json::to_vec_pretty(key).map_err(|e| Error::io(&json_path, e))?;
    data::fsutil::write_atomic(&json_path, &json)?;
    Ok(CachedFeatures {
        features,
        labels,
        status: CacheStatus::Miss,
        path,
    })
}

/// Run the frozen `backbone` (eval mode) over `batches` of `(images, labels)` and stack the pooled features and
/// labels. For K augmented views, pass an iterator that goes over the dataset K times with augmentation.
pub fn extract_features<I>(backbone: &dyn Backbone, batches: I) -> Result<(Tensor, Tensor)>
where
    I: IntoIterator<Item = Result<(Tensor, Tensor)>>,
{
    let (mut feats, mut labels) = (Vec::new(), Vec::new());
    for batch in batches {
        let (x, y) = batch?;
        feats.push(backbone.forward_pooled(&x, false)?.detach().to_dtype(DType::F32)?);
        labels.push(y.to_dtype(DType::U32)?);
    }
    if feats.is_empty() {
        return Err(Error::Config("no batches to extract features from".into()));
    }
    Ok((Tensor::cat(&feats, 0)?, Tensor::cat(&labels, 0)?))
}
