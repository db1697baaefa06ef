//! Parameter storage with timm's names: frozen parameters are plain tensors, trainable ones are `Var`s.
//!
//! Layers hold [`Param`] and [`Buffer`] handles into a [`ParamStore`]. Freezing or unfreezing a parameter swaps the
//! handle's content between a constant tensor and a `Var`, so the model never needs rebuilding and frozen parameters
//! cost no gradient memory. Running statistics (BatchNorm) are [`Buffer`]s: never trained, updated in place.
//! Every change of a value or of a trainable state bumps the store's [`ParamStore::version`], so anything derived
//! from the weights (the inference plan of a frozen network) knows when to rebuild.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use candle_core::{DType, Device, Shape, Tensor, Var};

use crate::error::{Error, Result};

#[derive(Debug)]
enum Slot {
    Frozen(Tensor),
    Trainable(Var),
}

/// What a parameter is for, recorded by the layer or model that creates it (optimizers use it to decide weight
/// decay, `train_bn` to find the norm layers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamRole {
    /// A convolution or linear weight (the only role that takes weight decay).
    #[default]
    Weight,
    /// A convolution or linear bias.
    Bias,
    /// The scale or shift of a norm layer (BatchNorm, LayerNorm, GroupNorm).
    Norm,
    /// Position embeddings (ViT `pos_embed`).
    PositionEmbedding,
    /// Learned tokens: class, register and mask tokens.
    Token,
    /// Layer-scale factors (ViT `ls1.gamma` / `ls2.gamma`, ConvNeXt `gamma`).
    LayerScale,
}

impl ParamRole {
    /// Whether weight decay applies to parameters of this role (timm's `no_weight_decay` set: all but weights).
    pub fn decays(self) -> bool {
        self == ParamRole::Weight
    }
}

/// A learnable parameter: frozen (constant tensor) or trainable (`Var`).
#[derive(Debug, Clone)]
pub struct Param {
    name: Arc<str>,
    slot: Arc<RwLock<Slot>>,
    role: Arc<RwLock<ParamRole>>,
    version: Version,
}

/// The version counter shared by a store and every handle it created.
type Version = Arc<AtomicU64>;

/// Record a change of some parameter or buffer.
fn bump(version: &Version) {
    version.fetch_add(1, Ordering::AcqRel);
}

impl Param {
    /// The parameter's timm name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The parameter's role (set where the layer creates it; [`ParamRole::Weight`] unless said otherwise).
    pub fn role(&self) -> ParamRole {
        *self.role.read().expect("param lock")
    }

    /// Record the parameter's role (shared by every handle to it).
    pub fn set_role(&self, role: ParamRole) {
        *self.role.write().expect("param lock") = role;
    }

    /// The rank of the value.
    pub fn rank(&self) -> usize {
        match &*self.slot.read().expect("param lock") {
            Slot::Frozen(t) => t.rank(),
            Slot::Trainable(v) => v.rank(),
        }
    }

    /// The current value; a variable (tracked by autograd) when trainable.
    pub fn tensor(&self) -> Tensor {
        match &*self.slot.read().expect("param lock") {
            Slot::Frozen(t) => t.clone(),
            Slot::Trainable(v) => v.as_tensor().clone(),
        }
    }

    /// The `Var` when the parameter is trainable.
    pub fn var(&self) -> Option<Var> {
        match &*self.slot.read().expect("param lock") {
            Slot::Frozen(_) => None,
            Slot::Trainable(v) => Some(v.clone()),
        }
    }

    /// Whether the parameter is trainable.
    pub fn is_trainable(&self) -> bool {
        matches!(&*self.slot.read().expect("param lock"), Slot::Trainable(_))
    }

    /// Make the parameter trainable (a `Var`) or frozen (a constant), keeping its value.
    pub fn set_trainable(&self, trainable: bool) -> Result<()> {
        let mut slot = self.slot.write().expect("param lock");
        let next = match (&*slot, trainable) {
            (Slot::Frozen(t), true) => Slot::Trainable(Var::from_tensor(&t.copy()?)?),
            (Slot::Trainable(v), false) => Slot::Frozen(v.as_tensor().detach()),
            _ => return Ok(()),
        };
        *slot = next;
        drop(slot);
        bump(&self.version);
        Ok(())
    }

    /// Overwrite the value (shape must match), keeping the trainable state.
    pub fn set(&self, value: &Tensor) -> Result<()> {
        let mut slot = self.slot.write().expect("param lock");
        match &mut *slot {
            Slot::Frozen(t) => {
                check_shape(&self.name, t.shape(), value.shape())?;
                *t = value.to_dtype(t.dtype())?.to_device(t.device())?.detach();
            }
            Slot::Trainable(v) => {
                check_shape(&self.name, v.shape(), value.shape())?;
                v.set(&value.to_dtype(v.dtype())?.to_device(v.device())?)?;
            }
        }
        drop(slot);
        bump(&self.version);
        Ok(())
    }
}

/// A non-learnable state tensor updated in place (BatchNorm running mean and variance).
#[derive(Debug, Clone)]
pub struct Buffer {
    name: Arc<str>,
    value: Arc<RwLock<Tensor>>,
    version: Version,
}

impl Buffer {
    /// The buffer's timm name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current value (never tracked by autograd).
    pub fn tensor(&self) -> Tensor {
        self.value.read().expect("buffer lock").clone()
    }

    /// Replace the value (shape must match); the new value is detached from any graph.
    pub fn set(&self, value: &Tensor) -> Result<()> {
        let mut cur = self.value.write().expect("buffer lock");
        check_shape(&self.name, cur.shape(), value.shape())?;
        *cur = value.to_dtype(cur.dtype())?.detach();
        drop(cur);
        bump(&self.version);
        Ok(())
    }
}

fn check_shape(name: &str, expected: &Shape, got: &Shape) -> Result<()> {
    if expected != got {
        return Err(Error::ShapeMismatch {
            name: name.to_string(),
            expected: expected.dims().to_vec(),
            got: got.dims().to_vec(),
        });
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Inner {
    params: BTreeMap<String, Param>,
    buffers: BTreeMap<String, Buffer>,
}

/// Where a model's tensors come from, and the registry of every parameter and buffer it created.
///
/// Built from a checkpoint (`from_tensors`, `from_safetensors`) or empty (`zeros`, for random init and tests).
/// Every tensor a model asks for is recorded, so [`ParamStore::unused`] lists checkpoint tensors the model ignored.
#[derive(Debug, Clone)]
pub struct ParamStore {
    source: Arc<HashMap<String, Tensor>>,
    inner: Arc<RwLock<Inner>>,
    device: Device,
    dtype: DType,
    /// When the checkpoint lacks a tensor: `true` creates zeros/ones, `false` is an error.
    allow_missing: bool,
    /// Whether BatchNorm layers may use batch statistics in training (false: BN stays in eval mode).
    bn_train: Arc<AtomicBool>,
    /// Bumped whenever a parameter or buffer is set or loaded, or a parameter's trainable state changes.
    version: Version,
}

impl ParamStore {
    /// A store over already-loaded tensors (converted to `dtype` on `device` when taken).
    pub fn from_tensors(tensors: HashMap<String, Tensor>, dtype: DType, device: &Device) -> Self {
        Self {
            source: Arc::new(tensors),
            inner: Arc::default(),
            device: device.clone(),
            dtype,
            allow_missing: false,
            bn_train: Arc::new(AtomicBool::new(true)),
            version: Version::default(),
        }
    }

    /// A store reading a safetensors file (any float dtype; converted to `dtype`).
    pub fn from_safetensors(path: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| Error::Weights {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self::from_tensors(tensors, dtype, device))
    }

    /// A store with no checkpoint: weights are created with default values (zeros; ones for norm scales and
    /// running variances). Used to build a model before loading or for shape checks.
    pub fn empty(dtype: DType, device: &Device) -> Self {
        let mut s = Self::from_tensors(HashMap::new(), dtype, device);
        s.allow_missing = true;
        s
    }

    /// Allow or forbid BatchNorm layers to use batch statistics when training (`false` keeps BN in eval mode).
    pub fn set_batchnorm_train(&self, on: bool) {
        self.bn_train.store(on, Ordering::Relaxed);
    }

    /// The shared flag read by BatchNorm layers (see [`ParamStore::set_batchnorm_train`]).
    pub fn batchnorm_train_flag(&self) -> Arc<AtomicBool> {
        self.bn_train.clone()
    }

    /// A counter that changes whenever any parameter or buffer of the store is set or loaded, or a parameter's
    /// trainable state changes (values equal to the last one read mean nothing changed in between).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The compute device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The compute dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    fn take(&self, name: &str, shape: &Shape, default_one: bool) -> Result<Tensor> {
        match self.source.get(name) {
            Some(t) => {
                check_shape(name, shape, t.shape())?;
                Ok(t.to_dtype(self.dtype)?.to_device(&self.device)?)
            }
            None if self.allow_missing => {
                let t = if default_one {
                    Tensor::ones(shape, self.dtype, &self.device)?
                } else {
                    Tensor::zeros(shape, self.dtype, &self.device)?
                };
                Ok(t)
            }
            None => Err(Error::MissingTensor(name.to_string())),
        }
    }

    /// The parameter `name` with `shape`, created frozen with role [`ParamRole::Weight`]; asking twice returns the
    /// same handle.
    pub fn param<S: Into<Shape>>(&self, name: &str, shape: S) -> Result<Param> {
        self.param_init(name, shape, false, None)
    }

    /// Like [`ParamStore::param`], defaulting to ones when the checkpoint lacks it and the store allows that.
    pub fn param_ones<S: Into<Shape>>(&self, name: &str, shape: S) -> Result<Param> {
        self.param_init(name, shape, true, None)
    }

    /// Like [`ParamStore::param`] with `role` recorded (defaulting to ones when `ones` and the checkpoint lacks it
    /// in a store that allows that). Asking again with a role sets it on the existing handle.
    pub fn param_with_role<S: Into<Shape>>(&self, name: &str, shape: S, role: ParamRole, ones: bool) -> Result<Param> {
        self.param_init(name, shape, ones, Some(role))
    }

    /// Record `role` for the already-created parameter `name`; `false` when the store has no such parameter.
    pub fn set_role(&self, name: &str, role: ParamRole) -> bool {
        match self.inner.read().expect("store lock").params.get(name) {
            Some(p) => {
                p.set_role(role);
                true
            }
            None => false,
        }
    }

    /// Every parameter's role, by name.
    pub fn roles(&self) -> HashMap<String, ParamRole> {
        self.inner
            .read()
            .expect("store lock")
            .params
            .iter()
            .map(|(k, p)| (k.clone(), p.role()))
            .collect()
    }

    fn param_init<S: Into<Shape>>(
        &self,
        name: &str,
        shape: S,
        default_one: bool,
        role: Option<ParamRole>,
    ) -> Result<Param> {
        let shape = shape.into();
        if let Some(p) = self.inner.read().expect("store lock").params.get(name) {
            if let Some(r) = role {
                p.set_role(r);
            }
            return Ok(p.clone());
        }
        let t = self.take(name, &shape, default_one)?;
        let p = Param {
            name: Arc::from(name),
            slot: Arc::new(RwLock::new(Slot::Frozen(t))),
            role: Arc::new(RwLock::new(role.unwrap_or_default())),
            version: self.version.clone(),
        };
        self.inner
            .write()
            .expect("store lock")
            .params
            .insert(name.to_string(), p.clone());
        Ok(p)
    }

    /// The buffer `name` with `shape` (running statistics); asking twice returns the same handle.
    pub fn buffer<S: Into<Shape>>(&self, name: &str, shape: S, default_one: bool) -> Result<Buffer> {
        let shape = shape.into();
        if let Some(b) = self.inner.read().expect("store lock").buffers.get(name) {
            return Ok(b.clone());
        }
        let t = self.take(name, &shape, default_one)?;
        let b = Buffer {
            name: Arc::from(name),
            value: Arc::new(RwLock::new(t)),
            version: self.version.clone(),
        };
        self.inner
            .write()
            .expect("store lock")
            .buffers
            .insert(name.to_string(), b.clone());
        Ok(b)
    }

    /// Whether the store can provide `name`: the checkpoint holds it, or the store is empty (creates defaults).
    pub fn contains(&self, name: &str) -> bool {
        self.allow_missing || self.source.contains_key(name)
    }

    /// Every parameter created so far, by name.
    pub fn params(&self) -> Vec<Param> {
        self.inner
            .read()
            .expect("store lock")
            .params
            .values()
            .cloned()
            .collect()
    }

    /// Every buffer created so far, by name.
    pub fn buffers(&self) -> Vec<Buffer> {
        self.inner
            .read()
            .expect("store lock")
            .buffers
            .values()
            .cloned()
            .collect()
    }

    /// The trainable parameters as `(name, Var)`, in name order.
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        self.params()
            .into_iter()
            .filter_map(|p| p.var().map(|v| (p.name().to_string(), v)))
            .collect()
    }

    /// Set every parameter whose name starts with one of `prefixes` to `trainable`.
    pub fn set_trainable_prefixes(&self, prefixes: &[String], trainable: bool) -> Result<usize> {
        let mut n = 0;
        for p in self.params() {
            if prefixes.iter().any(|pre| name_has_prefix(p.name(), pre)) {
                p.set_trainable(trainable)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Freeze every parameter.
    pub fn freeze_all(&self) -> Result<()> {
        for p in self.params() {
            p.set_trainable(false)?;
        }
        Ok(())
    }

    /// Checkpoint tensors that no layer asked for.
    pub fn unused(&self) -> Vec<String> {
        let inner = self.inner.read().expect("store lock");
        let used: BTreeSet<&String> = inner.params.keys().chain(inner.buffers.keys()).collect();
        let mut out: Vec<String> = self.source.keys().filter(|k| !used.contains(k)).cloned().collect();
        out.sort();
        out
    }

    /// Every parameter and buffer's current value, by timm name (for saving).
    pub fn state_dict(&self) -> BTreeMap<String, Tensor> {
        let inner = self.inner.read().expect("store lock");
        let mut out = BTreeMap::new();
        for (k, p) in &inner.params {
            out.insert(k.clone(), p.tensor().detach());
        }
        for (k, b) in &inner.buffers {
            out.insert(k.clone(), b.tensor());
        }
        out
    }

    /// Overwrite parameters and buffers from `tensors` (names not in the model are an error when `strict`).
    pub fn load_state_dict(&self, tensors: &HashMap<String, Tensor>, strict: bool) -> Result<()> {
        let inner = self.inner.read().expect("store lock");
        for (k, t) in tensors {
            if let Some(p) = inner.params.get(k) {
                p.set(t)?;
            } else if let Some(b) = inner.buffers.get(k) {
                b.set(t)?;
            } else if strict {
                return Err(Error::UnexpectedTensor(k.clone()));
            }
        }
        if strict {
            for k in inner.params.keys().chain(inner.buffers.keys()) {
                if !tensors.contains_key(k) {
                    return Err(Error::MissingTensor(k.clone()));
                }
            }
        }
        Ok(())
    }
}

/// Whether `name` is `prefix` itself or lies under it (`layer4` matches `layer4.0.conv1.weight`, not `layer40.x`).
pub fn name_has_prefix(name: &str, prefix: &str) -> bool {
    name == prefix || (name.starts_with(prefix) && name.as_bytes().get(prefix.len()) == Some(&b'.'))
}
