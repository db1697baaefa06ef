//! Per-epoch checkpoints for exact resume: `last.safetensors` (model, best weights, optimizer tensors) and
//! `last.json` (epoch, schedule step, RNG state, best metric, history, optimizer scalars), written atomically.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fit::EpochRecord;

/// The state of a seeded ChaCha8 RNG: seed, stream and word position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte seed, hex.
    pub seed: String,
    /// The stream number.
    pub stream: u64,
    /// The word position (a u128, as a decimal string).
    pub word_pos: String,
}

impl RngState {
    /// Capture `rng`'s state.
    pub fn capture(rng: &ChaCha8Rng) -> Self {
        Self {
            seed: hex::encode(rng.get_seed()),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    /// An RNG in exactly this state.
    pub fn restore(&self) -> Result<ChaCha8Rng> {
        let bad = |what: &str| Error::Config(format!("checkpoint RNG state has an invalid {what}"));
        let seed: [u8; 32] = hex::decode(&self.seed)
            .map_err(|_| bad("seed"))?
            .try_into()
            .map_err(|_| bad("seed"))?;
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos.parse().map_err(|_| bad("word position"))?);
        Ok(rng)
    }
}

/// Everything about a run's progress except tensors (the JSON sidecar).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps taken (the schedule's position).
    pub schedule_step: usize,
    /// The training RNG (dropout masks) after the last completed epoch.
    pub rng: RngState,
    /// Best task score so far (validation accuracy for classification).
    pub best_metric: Option<f64>,
    /// Epoch (0-based) of the best validation accuracy.
    pub best_epoch: Option<usize>,
    /// Epochs since the last improvement (early stopping).
    pub epochs_without_improvement: usize,
    /// One record per completed epoch.
    pub history: Vec<EpochRecord>,
    /// The optimizer's scalars (step counts, LR scale).
    pub optimizer_scalars: HashMap<String, f64>,
}

/// The tensors and sidecar of a checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Tensors, by name: `model/…`, `best/…`, `optim/…`.
    pub tensors: HashMap<String, Tensor>,
    /// Progress.
    pub meta: CheckpointMeta,
}

const EXACT: &str = "meta/exact_floats";

fn exact_floats(meta: &CheckpointMeta) -> Vec<f64> {
    let mut out: Vec<f64> = meta
        .history
        .iter()
        .flat_map(|r| [r.train_loss, r.train_acc, r.val_loss, r.val_acc, r.lr, r.seconds])
        .collect();
    out.extend(meta.best_metric);
    out
}

/// The tensor file of the checkpoint in `dir`.
pub fn weights_path(dir: &Path) -> PathBuf {
    dir.join("last.safetensors")
}

/// The JSON sidecar of the checkpoint in `dir`.
pub fn meta_path(dir: &Path) -> PathBuf {
    dir.join("last.json")
}

impl Checkpoint {
    /// Write atomically into `dir` (created if needed): tensors first, then the sidecar that makes them current.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        // JSON parsing may be off by an ulp: the floats of the sidecar are also stored exactly, as f64 tensors.
        let mut tensors = self.tensors.clone();
        let floats = exact_floats(&self.meta);
        let n = floats.len();
        tensors.insert(EXACT.to_string(), Tensor::from_vec(floats, n, &Device::Cpu)?);
        heads::save_safetensors_atomic(&tensors, &weights_path(dir))?;
        let json = serde_json::to_vec_pretty(&self.meta).map_err(|e| Error::io(&meta_path(dir), e))?;
        data::fsutil::write_atomic(&meta_path(dir), &json)?;
        Ok(())
    }

    /// Read the checkpoint in `dir`, or `None` when there is none.
    pub fn load(dir: &Path, device: &Device) -> Result<Option<Self>> {
        let (wp, mp) = (weights_path(dir), meta_path(dir));
        if !mp.exists() {
            return Ok(None);
        }
        let bytes = std::fs::read(&mp).map_err(|e| Error::io(&mp, e))?;
        let meta: CheckpointMeta = serde_json::from_slice(&bytes).map_err(|e| Error::io(&mp, e))?;
        let mut meta = meta;
        let mut tensors = candle_core::safetensors::load(&wp, device).map_err(|e| Error::io(&wp, e))?;
        let exact = tensors
            .remove(EXACT)
            .ok_or_else(|| Error::io(&wp, format!("`{EXACT}` is missing")))?;
        let exact: Vec<f64> = exact.to_dtype(DType::F64)?.to_vec1()?;
        if exact.len() != exact_floats(&meta).len() {
            return Err(Error::io(&wp, "does not match its sidecar last.json"));
        }
        let mut it = exact.into_iter();
        let mut next = || it.next().unwrap_or_default();
        for r in &mut meta.history {
            for f in [
                &mut r.train_loss,
                &mut r.train_acc,
                &mut r.val_loss,
                &mut r.val_acc,
                &mut r.lr,
                &mut r.seconds,
            ] {
                *f = next();
            }
        }
        if let Some(b) = &mut meta.best_metric {
            *b = next();
        }
        Ok(Some(Self { tensors, meta }))
    }
}
