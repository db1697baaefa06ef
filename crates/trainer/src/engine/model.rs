//! A trained model as one self-describing safetensors file: backbone and head tensors plus, in the file's
//! `__metadata__`, what is needed to rebuild and use it (classes, preprocessing, architecture, head config).
//!
//! Tensors are named `head.<name>` and `backbone.<timm name>`. A feature-extraction run's `best.safetensors`
//! leaves the (unchanged) pretrained backbone out and records its weights file (path and sha256) instead; `export`
//! puts it in, so the exported file needs nothing else.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use backbones::{Backbone, ModelSpec, ParamStore};
use candle_core::{DType, Device, Tensor};
use data::PreprocessConfig;
use heads::{Head, HeadConfig};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The metadata key holding [`ModelMeta`] as JSON.
pub const META_KEY: &str = "graft";

/// A pretrained weights file as recorded in a run: where it was and its sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsRef {
    /// The file used (absolute when it could be resolved).
    pub path: PathBuf,
    /// Its sha256 (hex).
    pub sha256: String,
}

/// What a saved model needs besides its tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Registry name of the backbone (`tf_efficientnet_lite0`, …).
    pub model: String,
    /// Architecture built by `backbones::zoo::build`.
    pub architecture: String,
    /// Class names in output order.
    pub classes: Vec<String>,
    /// Evaluation preprocessing.
    pub preprocess: PreprocessConfig,
    /// The head's configuration.
    pub head: HeadConfig,
    /// `feature-extract` or `fine-tune`.
    pub mode: String,
    /// The pretrained weights the backbone started from.
    pub weights: Option<WeightsRef>,
    /// Whether the file holds the backbone's tensors (else they are read from `weights`).
    pub backbone_included: bool,
}

/// A backbone and head ready for inference, with their metadata.
pub struct LoadedModel {
    /// The metadata the model was saved with.
    pub meta: ModelMeta,
    /// The backbone (eval mode).
    pub backbone: Box<dyn Backbone>,
    /// The head.
    pub head: Head,
}

impl LoadedModel {
    /// The pair as the training library's model.
    pub fn model(&self) -> training::Model<'_> {
        training::Model {
            backbone: Some(self.backbone.as_ref()),
            head: &self.head,
        }
    }

    /// Class probabilities (N×classes) for preprocessed images N×3×H×W.
    pub fn probabilities(&self, images: &Tensor) -> anyhow::Result<Tensor> {
        let features = head_input(self.backbone.as_ref(), &self.head, images)?;
        Ok(self.head.predict_proba(&features)?)
    }
}

/// The head's input for `images`: pooled features or the whole feature map, per the head's config (eval mode).
pub fn head_input(backbone: &dyn Backbone, head: &Head, images: &Tensor) -> anyhow::Result<Tensor> {
    Ok(match head.config().input {
        heads::InputKind::Pooled { .. } => backbone.forward_pooled(images, false)?,
        heads::InputKind::FeatureMap { .. } => backbone.forward_features(images, false)?,
    }
    .detach())
}

/// Build `spec`'s backbone over `tensors` (timm names) on `device`.
pub fn build_backbone(
    architecture: &str,
    tensors: HashMap<String, Tensor>,
    device: &Device,
) -> anyhow::Result<Box<dyn Backbone>> {
    let store = ParamStore::from_tensors(tensors, DType::F32, device);
    let backbone = backbones::zoo::build(architecture, &store)?;
    store.set_batchnorm_train(false);
    Ok(backbone)
}

/// Load the pretrained backbone of `spec` from `weights` on `device`.
pub fn load_pretrained(spec: &ModelSpec, weights: &Path, device: &Device) -> anyhow::Result<Box<dyn Backbone>> {
    let tensors = backbones::weights::load_tensors(weights)?;
    build_backbone(&spec.architecture, tensors, device)
        .with_context(|| format!("weights {} do not fit {}", weights.display(), spec.name))
}

/// Write `meta`, the head and (when given) every backbone tensor to `path` atomically.
pub fn save_model(path: &Path, meta: &ModelMeta, head: &Head, backbone: Option<&dyn Backbone>) -> anyhow::Result<()> {
    let mut tensors: Vec<(String, Tensor)> = head
        .vars()
        .into_iter()
        .map(|(k, v)| (format!("head.{k}"), v.as_tensor().detach()))
        .collect();
    if let Some(b) = backbone {
        for (k, t) in b.store().state_dict() {
            tensors.push((format!("backbone.{k}"), t));
        }
    }
    let mut meta = meta.clone();
    meta.backbone_included = backbone.is_some();
    write_model_file(path, &meta, tensors)
}

/// Serialise tensors (moved to the CPU) with `meta` in the header, atomically.
pub fn write_model_file(path: &Path, meta: &ModelMeta, tensors: Vec<(String, Tensor)>) -> anyhow::Result<()> {
    let tensors = tensors
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let info = HashMap::from([(META_KEY.to_string(), serde_json::to_string(meta)?)]);
    let bytes = safetensors::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(info))
        .with_context(|| format!("cannot serialise {}", path.display()))?;
    data::fsutil::write_atomic(path, &bytes)?;
    Ok(())
}

/// Read the metadata and tensors of a model file.
pub fn read_model_file(path: &Path, device: &Device) -> anyhow::Result<(ModelMeta, HashMap<String, Tensor>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read model file {}", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a safetensors file ({e})", path.display()))?;
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{} is not a graft model file (no `{META_KEY}` metadata)",
                path.display()
            )
        })?;
    let meta: ModelMeta =
        serde_json::from_str(json).with_context(|| format!("{}: invalid `{META_KEY}` metadata", path.display()))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .with_context(|| format!("cannot read the tensors of {}", path.display()))?;
    Ok((meta, tensors))
}

/// Check that `weights` is the file recorded (by sha256), returning the path to load.
fn check_weights(w: &WeightsRef) -> anyhow::Result<PathBuf> {
    if !w.path.is_file() {
        bail!(
            "the pretrained weights this model was trained on are gone: {} (export the run while they exist)",
            w.path.display()
        );
    }
    let sha = backbones::weights::file_sha256(&w.path)?;
    if sha != w.sha256 {
        bail!(
            "{} changed since training (sha256 {sha}, expected {})",
            w.path.display(),
            w.sha256
        );
    }
    Ok(w.path.clone())
}

/// Rebuild the model saved in `path` (a run's `best.safetensors` or an exported file) on `device`.
pub fn load_model(path: &Path, device: &Device) -> anyhow::Result<LoadedModel> {
    let (meta, tensors) = read_model_file(path, device)?;
    let mut head_t = HashMap::new();
    let mut backbone_t = HashMap::new();
    for (k, t) in tensors {
        if let Some(n) = k.strip_prefix("head.") {
            head_t.insert(n.to_string(), t);
        } else if let Some(n) = k.strip_prefix("backbone.") {
            backbone_t.insert(n.to_string(), t);
        }
    }
    let backbone_t = if meta.backbone_included {
        backbone_t
    } else {
        let w = meta
            .weights
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("{} has neither backbone tensors nor a weights file", path.display()))?;
        backbones::weights::load_tensors(&check_weights(w)?)?
    };
    let backbone = build_backbone(&meta.architecture, backbone_t, device)
        .with_context(|| format!("{}: backbone tensors do not fit {}", path.display(), meta.architecture))?;
    let head = restore_head(&meta.head, &head_t, device).with_context(|| format!("{}", path.display()))?;
    Ok(LoadedModel { meta, backbone, head })
}

/// A head with `config` and the given tensors (names as [`Head::vars`]).
pub fn restore_head(config: &HeadConfig, tensors: &HashMap<String, Tensor>, device: &Device) -> anyhow::Result<Head> {
    let head = Head::new(config.clone(), device, &mut ChaCha8Rng::seed_from_u64(0))?;
    for (name, var) in head.vars() {
        let t = tensors
            .get(&name)
            .ok_or_else(|| anyhow::anyhow!("head tensor `{name}` is missing"))?;
        if t.dims() != var.dims() {
            bail!(
                "head tensor `{name}` has shape {:?}, expected {:?}",
                t.dims(),
                var.dims()
            );
        }
        var.set(&t.to_dtype(DType::F32)?.to_device(device)?)?;
    }
    Ok(head)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use heads::Task;

    /// A resnet18 with zero weights except a random `fc`-free first conv, and a seeded 3-class linear head.
    pub fn tiny_model() -> LoadedModel {
        let dev = Device::Cpu;
        let store = ParamStore::empty(DType::F32, &dev);
        let backbone = backbones::zoo::build("resnet18", &store).unwrap();
        let conv = store.params().into_iter().find(|p| p.name() == "conv1.weight").unwrap();
        conv.set(&Tensor::randn(0f32, 0.1, conv.tensor().dims(), &dev).unwrap())
            .unwrap();
        let spec = backbones::registry::get("resnet18").unwrap();
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let head_cfg = HeadConfig::linear(Task::MultiClass, classes.clone(), backbone.num_features());
        let head = Head::seeded(head_cfg.clone(), &dev, 7).unwrap();
        let meta = ModelMeta {
            model: spec.name.clone(),
            architecture: spec.architecture.clone(),
            classes,
            preprocess: spec.preprocess.clone(),
            head: head_cfg,
            mode: "fine-tune".into(),
            weights: None,
            backbone_included: true,
        };
        LoadedModel { meta, backbone, head }
    }

    fn same(a: &Tensor, b: &Tensor) -> bool {
        a.flatten_all().unwrap().to_vec1::<f32>().unwrap() == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn a_saved_model_loads_back_with_its_tensors_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let m = tiny_model();
        save_model(&path, &m.meta, &m.head, Some(m.backbone.as_ref())).unwrap();
        let back = load_model(&path, &Device::Cpu).unwrap();
        assert_eq!(back.meta, m.meta);
        for ((n1, v1), (n2, v2)) in m.head.vars().iter().zip(back.head.vars()) {
            assert_eq!(n1, &n2);
            assert!(same(v1.as_tensor(), v2.as_tensor()), "{n1}");
        }
        let a = m.backbone.store().state_dict();
        let b = back.backbone.store().state_dict();
        assert_eq!(a.len(), b.len());
        assert!(same(&a["conv1.weight"], &b["conv1.weight"]));
        assert!(!dir
            .path()
            .read_dir()
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
    }

    #[test]
    fn a_model_without_its_backbone_needs_the_recorded_weights_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("best.safetensors");
        let mut m = tiny_model();
        let weights = dir.path().join("pretrained.safetensors");
        m.meta.weights = Some(WeightsRef {
            path: weights.clone(),
            sha256: "0".repeat(64),
        });
        save_model(&path, &m.meta, &m.head, None).unwrap();
        let (meta, tensors) = read_model_file(&path, &Device::Cpu).unwrap();
        assert!(!meta.backbone_included);
        assert!(tensors.keys().all(|k| k.starts_with("head.")));
        let err = format!("{:#}", load_model(&path, &Device::Cpu).err().unwrap());
        assert!(err.contains("pretrained.safetensors"), "{err}");
        // Present but different from what was recorded: refused by its sha256.
        std::fs::write(&weights, b"not the weights").unwrap();
        let err = format!("{:#}", load_model(&path, &Device::Cpu).err().unwrap());
        assert!(err.contains("changed since training"), "{err}");
    }

    #[test]
    fn files_that_are_not_graft_models_are_refused_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.safetensors");
        let t = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
        candle_core::safetensors::save(&HashMap::from([("x".to_string(), t)]), &plain).unwrap();
        let err = format!("{:#}", load_model(&plain, &Device::Cpu).err().unwrap());
        assert!(err.contains("not a graft model file") && !err.contains('\n'), "{err}");
        let junk = dir.path().join("junk.safetensors");
        std::fs::write(&junk, b"garbage").unwrap();
        let err = format!("{:#}", load_model(&junk, &Device::Cpu).err().unwrap());
        assert!(err.contains("junk.safetensors"), "{err}");
    }
}
