//! A trained model as one self-describing safetensors file: backbone and head tensors plus, in the file's
//! `__metadata__` under the key `graft`, what is needed to rebuild and use it ([`ModelMeta`]: classes,
//! preprocessing, architecture, head config).
//!
//! Tensors are named `head.<name>` and `backbone.<timm name>`. A feature-extraction run's `best.safetensors`
//! leaves the (unchanged) pretrained backbone out and records its weights file (path and sha256) instead; an
//! exported file holds it, so it needs nothing else. [`load`] gives an [`ExportedModel`] ready to predict.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use backbones::Backbone;
use candle_core::{DType, Device, Tensor};
use data::transforms::Pipeline;
use data::PreprocessConfig;
use heads::{Head, HeadConfig, InputKind};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fit::Model;

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

/// A backbone and head ready for inference, with their metadata (classes, preprocessing).
pub struct ExportedModel {
    /// The metadata the model was saved with.
    pub meta: ModelMeta,
    /// The backbone (eval mode).
    pub backbone: Box<dyn Backbone>,
    /// The head.
    pub head: Head,
}

impl std::fmt::Debug for ExportedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportedModel").field("meta", &self.meta).finish()
    }
}

impl ExportedModel {
    /// The pair as the training library's model.
    pub fn model(&self) -> Model<'_> {
        Model {
            backbone: Some(self.backbone.as_ref()),
            head: &self.head,
        }
    }

    /// Class names in output order.
    pub fn classes(&self) -> &[String] {
        &self.meta.classes
    }

    /// The evaluation preprocessing (resize, crop, normalisation) images need before [`Self::probabilities`].
    pub fn pipeline(&self) -> Pipeline {
        Pipeline::eval(&self.meta.preprocess)
    }

    /// Class probabilities (N×classes) for preprocessed images N×3×H×W.
    pub fn probabilities(&self, images: &Tensor) -> Result<Tensor> {
        let features = head_input(self.backbone.as_ref(), &self.head, images)?;
        Ok(self.head.predict_proba(&features)?)
    }

    /// Class probabilities of the image file at `path` (decoded and preprocessed with [`Self::pipeline`]).
    pub fn predict_file(&self, path: &Path) -> Result<Vec<f32>> {
        let img = data::decode_image(path).map_err(|e| Error::io(path, e))?;
        let pipeline = self.pipeline();
        let (h, w) = pipeline.output_hw;
        let pixels = pipeline.apply(img, &mut ChaCha8Rng::seed_from_u64(0));
        let x = Tensor::from_vec(pixels, (1, 3, h, w), self.head.device())?;
        Ok(self
            .probabilities(&x)?
            .to_device(&Device::Cpu)?
            .to_vec2::<f32>()?
            .remove(0))
    }
}

/// The head's input for `images`: pooled features or the whole feature map, per the head's config (eval mode).
pub fn head_input(backbone: &dyn Backbone, head: &Head, images: &Tensor) -> Result<Tensor> {
    Ok(match head.config().input {
        InputKind::Pooled { .. } => backbone.forward_pooled(images, false)?,
        InputKind::FeatureMap { .. } => backbone.forward_features(images, false)?,
    }
    .detach())
}

/// Write `meta`, the head and (when given) every backbone tensor to `path` atomically (`meta.backbone_included`
/// is set from `backbone`).
pub fn save(path: &Path, meta: &ModelMeta, head: &Head, backbone: Option<&dyn Backbone>) -> Result<()> {
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
    write(path, &meta, tensors)
}

/// Serialise tensors (moved to the CPU) with `meta` in the header, atomically.
pub fn write(path: &Path, meta: &ModelMeta, tensors: Vec<(String, Tensor)>) -> Result<()> {
    write_file(path, meta, tensors)
}

/// Serialise tensors (moved to the CPU) with any metadata under [`META_KEY`], atomically.
fn write_file<M: Serialize>(path: &Path, meta: &M, tensors: Vec<(String, Tensor)>) -> Result<()> {
    let tensors = tensors
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<Vec<_>>>()?;
    let json = serde_json::to_string(meta).map_err(|e| Error::io(path, e))?;
    let info = HashMap::from([(META_KEY.to_string(), json)]);
    let bytes = safetensors::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(info))
        .map_err(|e| Error::io(path, format!("cannot serialise: {e}")))?;
    data::fsutil::write_atomic(path, &bytes)?;
    Ok(())
}

/// The `head.` and `backbone.` tensors of a model file, prefixes stripped.
type SplitTensors = (HashMap<String, Tensor>, HashMap<String, Tensor>);

fn split_tensors(tensors: HashMap<String, Tensor>) -> SplitTensors {
    let mut head_t = HashMap::new();
    let mut backbone_t = HashMap::new();
    for (k, t) in tensors {
        if let Some(n) = k.strip_prefix("head.") {
            head_t.insert(n.to_string(), t);
        } else if let Some(n) = k.strip_prefix("backbone.") {
            backbone_t.insert(n.to_string(), t);
        }
    }
    (head_t, backbone_t)
}

/// The backbone of a model file: its own tensors when `included`, else the recorded (and checked) weights file.
fn file_backbone(
    path: &Path,
    architecture: &str,
    included: bool,
    weights: Option<&WeightsRef>,
    backbone_t: HashMap<String, Tensor>,
    device: &Device,
) -> Result<Box<dyn Backbone>> {
    let backbone_t = if included {
        backbone_t
    } else {
        let w = weights.ok_or_else(|| Error::io(path, "has neither backbone tensors nor a weights file"))?;
        backbones::weights::load_tensors(&check_weights(w)?)?
    };
    backbones::pretrained::build(architecture, backbone_t, device)
        .map_err(|e| Error::io(path, format!("backbone tensors do not fit {architecture}: {e}")))
}

/// Read the metadata and tensors of a classifier's model file (a segmentation or detection file is an error naming
/// its task; see [`load_dense`]).
pub fn read(path: &Path, device: &Device) -> Result<(ModelMeta, HashMap<String, Tensor>)> {
    let (bytes, value) = read_meta_json(path)?;
    if let Some(task) = value.get("task").and_then(|t| t.as_str()) {
        return Err(Error::io(path, format!("is a `{task}` model, not a classifier")));
    }
    let meta: ModelMeta =
        serde_json::from_value(value).map_err(|e| Error::io(path, format!("invalid `{META_KEY}` metadata: {e}")))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| Error::io(path, format!("cannot read the tensors: {e}")))?;
    Ok((meta, tensors))
}

/// Check that the recorded weights file is still there and unchanged (by sha256); its path.
pub fn check_weights(w: &WeightsRef) -> Result<PathBuf> {
    if !w.path.is_file() {
        return Err(Error::Config(format!(
            "the pretrained weights this model was trained on are gone: {} (export the run while they exist)",
            w.path.display()
        )));
    }
    let sha = backbones::weights::file_sha256(&w.path)?;
    if sha != w.sha256 {
        return Err(Error::Config(format!(
            "{} changed since training (sha256 {sha}, expected {})",
            w.path.display(),
            w.sha256
        )));
    }
    Ok(w.path.clone())
}

/// Rebuild the model saved in `path` (a run's `best.safetensors` or an exported file) on `device`.
pub fn load(path: &Path, device: &Device) -> Result<ExportedModel> {
    let (meta, tensors) = read(path, device)?;
    let (head_t, backbone_t) = split_tensors(tensors);
    let backbone = file_backbone(
        path,
        &meta.architecture,
        meta.backbone_included,
        meta.weights.as_ref(),
        backbone_t,
        device,
    )?;
    let head = restore_head(&meta.head, &head_t, device).map_err(|e| Error::io(path, e))?;
    Ok(ExportedModel { meta, backbone, head })
}

/// A head with `config` and the given tensors (names as [`Head::vars`]).
pub fn restore_head(config: &HeadConfig, tensors: &HashMap<String, Tensor>, device: &Device) -> Result<Head> {
    let head = Head::new(config.clone(), device, &mut ChaCha8Rng::seed_from_u64(0))?;
    for (name, var) in head.vars() {
        let t = tensors
            .get(&name)
            .ok_or_else(|| Error::Config(format!("head tensor `{name}` is missing")))?;
        if t.dims() != var.dims() {
            return Err(Error::Config(format!(
                "head tensor `{name}` has shape {:?}, expected {:?}",
                t.dims(),
                var.dims()
            )));
        }
        var.set(&t.to_dtype(DType::F32)?.to_device(device)?)?;
    }
    Ok(head)
}

/// The dense head of a [`DenseModel`].
pub enum DenseHead {
    /// A segmentation decoder.
    Segment(heads::SegHead),
    /// A detector.
    Detect(heads::DetHead),
}

/// What a saved segmentation or detection model needs besides its tensors (the `graft` metadata of its file, with
/// `task` set, which tells it from a classifier's [`ModelMeta`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenseMeta {
    /// `segment` or `detect`.
    pub task: String,
    /// Registry name of the backbone.
    pub model: String,
    /// Architecture built by `backbones::zoo::build`.
    pub architecture: String,
    /// Class names in output order.
    pub classes: Vec<String>,
    /// The backbone's preprocessing (its mean and std normalise the input).
    pub preprocess: PreprocessConfig,
    /// Square input size the model was trained at (evaluation resizes and pads to it).
    pub imgsz: usize,
    /// The head's configuration: a `heads::SegHeadConfig` or a `heads::DetHeadConfig` as JSON.
    pub head: serde_json::Value,
    /// Detection: the post-processing the run chose (`conf`, `iou`, `max_det`); null for segmentation.
    pub post: Option<serde_json::Value>,
    /// `feature-extract` or `fine-tune`.
    pub mode: String,
    /// The pretrained weights the backbone started from.
    pub weights: Option<WeightsRef>,
    /// Whether the file holds the backbone's tensors (else they are read from `weights`).
    pub backbone_included: bool,
}

/// A dense model ready for inference.
pub struct DenseModel {
    /// The metadata it was saved with.
    pub meta: DenseMeta,
    /// The backbone (eval mode).
    pub backbone: Box<dyn Backbone>,
    /// The head.
    pub head: DenseHead,
}

impl std::fmt::Debug for DenseModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DenseModel").field("meta", &self.meta).finish()
    }
}

/// The task recorded in a model file: `classify` for a classifier's [`ModelMeta`], else [`DenseMeta::task`].
pub fn task_of_file(path: &Path) -> Result<String> {
    let (_, meta) = read_meta_json(path)?;
    Ok(meta
        .get("task")
        .and_then(|t| t.as_str())
        .unwrap_or("classify")
        .to_string())
}

/// The file's bytes and its `graft` metadata as JSON.
fn read_meta_json(path: &Path) -> Result<(Vec<u8>, serde_json::Value)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, format!("cannot read model file: {e}")))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::io(path, format!("not a safetensors file ({e})")))?;
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| Error::io(path, format!("not a graft model file (no `{META_KEY}` metadata)")))?;
    let value =
        serde_json::from_str(json).map_err(|e| Error::io(path, format!("invalid `{META_KEY}` metadata: {e}")))?;
    Ok((bytes, value))
}

/// Write a dense model: `meta`, the head's store (`head.<name>`) and, when given, every backbone tensor
/// (`backbone.<timm name>`), atomically (`meta.backbone_included` is set from `backbone`).
pub fn save_dense(
    path: &Path,
    meta: &DenseMeta,
    head: &backbones::ParamStore,
    backbone: Option<&dyn Backbone>,
) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = head
        .state_dict()
        .into_iter()
        .map(|(k, t)| (format!("head.{k}"), t.detach()))
        .collect();
    if let Some(b) = backbone {
        for (k, t) in b.store().state_dict() {
            tensors.push((format!("backbone.{k}"), t));
        }
    }
    let mut meta = meta.clone();
    meta.backbone_included = backbone.is_some();
    write_file(path, &meta, tensors)
}

/// Rebuild the dense model saved in `path` (a run's `best.safetensors` or an exported file) on `device`.
pub fn load_dense(path: &Path, device: &Device) -> Result<DenseModel> {
    let (bytes, value) = read_meta_json(path)?;
    let meta: DenseMeta = serde_json::from_value(value)
        .map_err(|e| Error::io(path, format!("not a segmentation or detection model: {e}")))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| Error::io(path, format!("cannot read the tensors: {e}")))?;
    let (head_t, backbone_t) = split_tensors(tensors);
    let head_t = head_t
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    let backbone = file_backbone(
        path,
        &meta.architecture,
        meta.backbone_included,
        meta.weights.as_ref(),
        backbone_t,
        device,
    )?;
    let bad_head = |e: String| Error::io(path, format!("head: {e}"));
    let head = match meta.task.as_str() {
        "segment" => {
            let cfg: heads::SegHeadConfig =
                serde_json::from_value(meta.head.clone()).map_err(|e| bad_head(e.to_string()))?;
            let head = heads::SegHead::new(cfg, device, 0)?;
            head.store()
                .load_state_dict(&head_t, true)
                .map_err(|e| bad_head(e.to_string()))?;
            DenseHead::Segment(head)
        }
        "detect" => {
            let cfg: heads::DetHeadConfig =
                serde_json::from_value(meta.head.clone()).map_err(|e| bad_head(e.to_string()))?;
            let head = heads::DetHead::new(cfg, device, 0)?;
            head.store()
                .load_state_dict(&head_t, true)
                .map_err(|e| bad_head(e.to_string()))?;
            DenseHead::Detect(head)
        }
        other => return Err(Error::io(path, format!("unknown task `{other}`"))),
    };
    Ok(DenseModel { meta, backbone, head })
}
