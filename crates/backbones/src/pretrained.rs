//! One call from a registry name to a pretrained backbone: registry → weights resolution (an explicit file, or the
//! registry's Hub entry through the Hugging Face cache and a download) → load → build (eval mode).
//!
//! ```no_run
//! use backbones::pretrained::{pretrained, WeightsSource};
//! let p = pretrained("resnet18", &WeightsSource::hub(), &candle_core::Device::Cpu)?;
//! println!("{} from {} ({} features)", p.spec.name, p.weights.display(), p.backbone.num_features());
//! # Ok::<(), backbones::Error>(())
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::backbone::Backbone;
use crate::error::{Error, Result};
use crate::hub::DownloadOptions;
use crate::params::ParamStore;
use crate::registry::{self, ModelSpec};
use crate::weights;

/// Where the weights come from.
#[derive(Debug, Clone)]
pub enum WeightsSource {
    /// This file (safetensors or zip-format PyTorch).
    File(PathBuf),
    /// The registry's Hub entry: the Hugging Face cache, else a download with these options.
    Hub(DownloadOptions),
}

impl WeightsSource {
    /// The Hub with options from the environment (`HF_HUB_CACHE`/`HF_HOME`, `HF_ENDPOINT`, `HF_HUB_OFFLINE`).
    pub fn hub() -> Self {
        Self::Hub(DownloadOptions::from_env())
    }

    /// `file` when given, else [`WeightsSource::hub`].
    pub fn file_or_hub(file: Option<&Path>) -> Self {
        match file {
            Some(f) => Self::File(f.to_path_buf()),
            None => Self::hub(),
        }
    }
}

/// A weights file found for a model, with its sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedWeights {
    /// The file (canonical when it could be resolved).
    pub path: PathBuf,
    /// Its sha256 (hex).
    pub sha256: String,
}

/// A built pretrained backbone with what it was built from.
pub struct Pretrained {
    /// The registry entry.
    pub spec: ModelSpec,
    /// The backbone (eval mode: BatchNorm uses running statistics; every parameter frozen).
    pub backbone: Box<dyn Backbone>,
    /// The weights file used.
    pub weights: PathBuf,
    /// Its sha256 (hex).
    pub sha256: String,
}

impl std::fmt::Debug for Pretrained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pretrained")
            .field("spec", &self.spec.name)
            .field("weights", &self.weights)
            .field("sha256", &self.sha256)
            .finish()
    }
}

/// Find `spec`'s weights per `source` (an explicit file must be readable; the Hub path reuses the cache, else
/// downloads) and hash them.
pub fn resolve(spec: &ModelSpec, source: &WeightsSource) -> Result<ResolvedWeights> {
    let path = match source {
        WeightsSource::File(f) => weights::resolve(spec, Some(f), &DownloadOptions::from_env())?,
        WeightsSource::Hub(opts) => weights::resolve(spec, None, opts)?,
    };
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    let sha256 = weights::file_sha256(&path)?;
    Ok(ResolvedWeights { path, sha256 })
}

/// Build `architecture` over `tensors` (timm names) on `device`, BatchNorm in eval mode.
pub fn build(architecture: &str, tensors: HashMap<String, Tensor>, device: &Device) -> Result<Box<dyn Backbone>> {
    let store = ParamStore::from_tensors(tensors, DType::F32, device);
    let backbone = crate::zoo::build(architecture, &store)?;
    store.set_batchnorm_train(false);
    Ok(backbone)
}

/// Load the weights file at `path` and build `spec`'s backbone from it on `device`.
pub fn load(spec: &ModelSpec, path: &Path, device: &Device) -> Result<Box<dyn Backbone>> {
    let tensors = weights::load_tensors(path)?;
    build(&spec.architecture, tensors, device).map_err(|e| {
        Error::Msg(format!(
            "weights {} do not fit {}: {}",
            path.display(),
            spec.name,
            data::text::one_line(&e.to_string())
        ))
    })
}

/// The registry's `name` → its weights per `source` → the built backbone on `device`.
pub fn pretrained(name: &str, source: &WeightsSource, device: &Device) -> Result<Pretrained> {
    let spec = registry::get(name)?;
    let ResolvedWeights { path, sha256 } = resolve(&spec, source)?;
    let backbone = load(&spec, &path, device)?;
    Ok(Pretrained {
        spec,
        backbone,
        weights: path,
        sha256,
    })
}
