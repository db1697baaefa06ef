//! The head itself: linear layers with ReLU and dropout between them, on pooled features or a flattened map.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var, D};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::{HeadConfig, InputKind, Task};
use crate::error::{Error, Result};

/// A classifier head: `hidden.{i}` Linear → ReLU → Dropout layers, then the `out` Linear (float32 `Var`s).
#[derive(Debug, Clone)]
pub struct Head {
    config: HeadConfig,
    /// `(weight out×in, bias out)` per layer, the output layer last.
    layers: Vec<(Var, Var)>,
}

fn layer_names(n_layers: usize) -> Vec<String> {
    (0..n_layers)
        .map(|i| {
            if i + 1 == n_layers {
                "out".to_string()
            } else {
                format!("hidden.{i}")
            }
        })
        .collect()
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Save named tensors to a safetensors file atomically (with [`data::fsutil::write_atomic`]).
pub fn save_safetensors_atomic(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let bytes = safetensors::serialize(tensors, None).map_err(|e| io_err(path, e))?;
    Ok(data::fsutil::write_atomic(path, &bytes)?)
}

impl Head {
    /// A freshly initialised head (PyTorch's Linear init: weights and biases uniform in ±1/√fan_in).
    pub fn new(config: HeadConfig, device: &Device, rng: &mut ChaCha8Rng) -> Result<Self> {
        config.validate()?;
        let mut dims = vec![config.input.dim()];
        dims.extend(&config.hidden);
        dims.push(config.num_outputs());
        let mut layers = Vec::with_capacity(dims.len() - 1);
        for w in dims.windows(2) {
            let (fan_in, fan_out) = (w[0], w[1]);
            // kaiming_uniform(a = √5) gives bound = gain·√(3/fan_in) = √(1/3)·√(3/fan_in) = 1/√fan_in.
            let bound = 1.0 / (fan_in as f32).sqrt();
            let mut uniform = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.gen_range(-bound..bound)).collect() };
            let weight = Tensor::from_vec(uniform(fan_in * fan_out), (fan_out, fan_in), device)?;
            let bias = Tensor::from_vec(uniform(fan_out), fan_out, device)?;
            layers.push((Var::from_tensor(&weight)?, Var::from_tensor(&bias)?));
        }
        Ok(Self { config, layers })
    }

    /// A freshly initialised head from a seed (see [`Head::new`]).
    pub fn seeded(config: HeadConfig, device: &Device, seed: u64) -> Result<Self> {
        Self::new(config, device, &mut ChaCha8Rng::seed_from_u64(seed))
    }

    /// The configuration.
    pub fn config(&self) -> &HeadConfig {
        &self.config
    }

    /// Mutable access to the configuration (to record provenance before saving).
    pub fn config_mut(&mut self) -> &mut HeadConfig {
        &mut self.config
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        self.layers[0].0.device()
    }

    /// Every parameter as `(name, Var)`: `hidden.{i}.weight`, `hidden.{i}.bias`, …, `out.weight`, `out.bias`.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let names = layer_names(self.layers.len());
        let mut out = Vec::with_capacity(2 * self.layers.len());
        for (name, (w, b)) in names.iter().zip(&self.layers) {
            out.push((format!("{name}.weight"), w.clone()));
            out.push((format!("{name}.bias"), b.clone()));
        }
        out
    }

    fn flatten_input(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let ok = match self.config.input {
            InputKind::Pooled { features } => dims.len() == 2 && dims[1] == features,
            InputKind::FeatureMap {
                channels,
                height,
                width,
            } => dims.len() == 4 && dims[1..] == [channels, height, width],
        };
        if !ok {
            let expected = match self.config.input {
                InputKind::Pooled { features } => format!("N×{features}"),
                InputKind::FeatureMap {
                    channels,
                    height,
                    width,
                } => format!("N×{channels}×{height}×{width}"),
            };
            return Err(Error::InputShape { got: dims, expected });
        }
        let x = if dims.len() == 4 { x.flatten_from(1)? } else { x.clone() };
        Ok(x.to_dtype(DType::F32)?)
    }

    /// Logits, N×outputs (N×1 for binary). Training mode (dropout active) when `dropout_rng` is given: the masks
    /// are drawn from it, so a seeded RNG makes training reproducible.
    pub fn forward(&self, x: &Tensor, mut dropout_rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let mut h = self.flatten_input(x)?;
        let last = self.layers.len() - 1;
        for (i, (w, b)) in self.layers.iter().enumerate() {
            h = h.matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor())?;
            if i == last {
                break;
            }
            h = h.relu()?;
            let p = self.config.dropout;
            if let (Some(rng), true) = (dropout_rng.as_deref_mut(), p > 0.0) {
                let (n, f) = h.dims2()?;
                let scale = 1.0 / (1.0 - p);
                let mask: Vec<f32> = (0..n * f)
                    .map(|_| if rng.gen::<f32>() < p { 0.0 } else { scale })
                    .collect();
                h = h.mul(&Tensor::from_vec(mask, (n, f), h.device())?)?;
            }
        }
        Ok(h)
    }

    /// Probabilities, N×classes, in eval mode: softmax (multi-class), per-label sigmoid (multi-label), and for a
    /// binary head the two columns `[1 − p, p]` so that the argmax is the predicted class for every task.
    pub fn predict_proba(&self, x: &Tensor) -> Result<Tensor> {
        let logits = self.forward(x, None)?;
        Ok(match self.config.task {
            Task::MultiClass => candle_nn::ops::softmax(&logits, D::Minus1)?,
            Task::MultiLabel => candle_nn::ops::sigmoid(&logits)?,
            Task::Binary => {
                let p = candle_nn::ops::sigmoid(&logits)?;
                Tensor::cat(&[(1.0 - &p)?, p], 1)?
            }
        })
    }

    /// Save the weights to `path` (safetensors) and the config beside it (`path` with extension `json`), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: HashMap<String, Tensor> = self
            .vars()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().detach()))
            .collect();
        save_safetensors_atomic(&tensors, path)?;
        let json = serde_json::to_vec_pretty(&self.config).map_err(|e| io_err(path, e))?;
        Ok(data::fsutil::write_atomic(&Self::config_path(path), &json)?)
    }

    /// The config file that goes with weights at `path`.
    pub fn config_path(path: &Path) -> PathBuf {
        path.with_extension("json")
    }

    /// Load a head saved by [`Head::save`] onto `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let cfg_path = Self::config_path(path);
        let bytes = std::fs::read(&cfg_path).map_err(|e| io_err(&cfg_path, e))?;
        let config: HeadConfig = serde_json::from_slice(&bytes).map_err(|e| io_err(&cfg_path, e))?;
        config.validate().map_err(|e| io_err(&cfg_path, e))?;
        let tensors = candle_core::safetensors::load(path, device).map_err(|e| io_err(path, e))?;
        let head = Self::new(config, device, &mut ChaCha8Rng::seed_from_u64(0))?;
        for (name, var) in head.vars() {
            let t = tensors
                .get(&name)
                .ok_or_else(|| io_err(path, format!("tensor `{name}` is missing")))?;
            if t.dims() != var.dims() {
                return Err(io_err(
                    path,
                    format!("tensor `{name}` has shape {:?}, expected {:?}", t.dims(), var.dims()),
                ));
            }
            var.set(&t.to_dtype(DType::F32)?)?;
        }
        if tensors.len() != 2 * head.layers.len() {
            return Err(io_err(path, "the file holds tensors that are not part of the head"));
        }
        Ok(head)
    }
}
