//! Batches of decoded, transformed images as candle tensors, reproducible for a seed.
//!
//! - Epoch `e` visits the samples in a permutation drawn from `(seed, e)` (or in dataset order without shuffling).
//! - Sample `i`'s augmentation RNG is derived from `(seed, e, i)`, so batches do not depend on the thread count.
//! - Only the current batch is decoded and transformed (in parallel on the current rayon pool); with
//!   [`LoaderConfig::cache`], decoded (and pre-resized) images are kept in memory across epochs.
//! - The last partial batch is kept. Undecodable files are skipped and reported per batch and per epoch
//!   ([`DecodePolicy::Skip`]) or stop the epoch with an error ([`DecodePolicy::Strict`]).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use image::RgbImage;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::dataset::Dataset;
use crate::decode::{decode_image, DecodePolicy, SkippedFile};
use crate::error::{DataError, Result};
use crate::transforms::Pipeline;

/// How a [`Loader`] batches, orders and decodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Samples per batch (the last batch may be smaller).
    pub batch_size: usize,
    /// Visit samples in a seeded random order per epoch (training) or in dataset order (evaluation).
    pub shuffle: bool,
    /// Seed of the shuffles and of the augmentation RNGs.
    pub seed: u64,
    /// Skip or fail on undecodable files.
    pub policy: DecodePolicy,
    /// Keep decoded images in memory across epochs.
    pub cache: bool,
    /// Shrink decoded images so that their shorter side is this many pixels (never enlarges; bilinear, deterministic),
    /// before caching and before the pipeline. Applied with and without `cache`, so both give the same batches.
    pub pre_resize_shorter: Option<u32>,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            shuffle: true,
            seed: 0,
            policy: DecodePolicy::Skip,
            cache: false,
            pre_resize_shorter: None,
        }
    }
}

/// One batch: images `N×3×H×W` f32 and labels `N` u32 on the loader's device.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Preprocessed images, `N×3×H×W`.
    pub images: Tensor,
    /// Class indices, `N`, u32.
    pub labels: Tensor,
    /// Dataset indices of the samples in the batch, in batch order.
    pub indices: Vec<usize>,
    /// Files skipped while building this batch (not in `indices`).
    pub skipped: Vec<SkippedFile>,
}

type Cached = std::result::Result<Arc<RgbImage>, String>;

/// Turns a [`Dataset`] and a [`Pipeline`] into epochs of [`Batch`]es.
#[derive(Debug)]
pub struct Loader {
    dataset: Dataset,
    pipeline: Pipeline,
    config: LoaderConfig,
    device: Device,
    cache: Option<Vec<OnceLock<Cached>>>,
}

fn derived_rng(seed: u64, epoch: u64, index: u64, tag: &[u8; 8]) -> ChaCha8Rng {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&epoch.to_le_bytes());
    bytes[16..24].copy_from_slice(&index.to_le_bytes());
    bytes[24..].copy_from_slice(tag);
    ChaCha8Rng::from_seed(bytes)
}

/// The RNG of sample `index`'s augmentations in `epoch`.
pub fn sample_rng(seed: u64, epoch: u64, index: usize) -> ChaCha8Rng {
    derived_rng(seed, epoch, index as u64, b"sample\0\0")
}

/// Shrinks `img` so that its shorter side is `shorter` (never enlarges), with a bilinear filter.
pub fn pre_resize(img: RgbImage, shorter: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let side = w.min(h);
    if side <= shorter || shorter == 0 {
        return img;
    }
    let scale = shorter as f64 / side as f64;
    let (nw, nh) = if w <= h {
        (shorter, ((h as f64 * scale).round() as u32).max(1))
    } else {
        (((w as f64 * scale).round() as u32).max(1), shorter)
    };
    image::imageops::resize(&img, nw, nh, FilterType::Triangle)
}

impl Loader {
    /// A loader over `dataset`; `config.batch_size` must be positive.
    pub fn new(dataset: Dataset, pipeline: Pipeline, config: LoaderConfig, device: Device) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(DataError::InvalidOption {
                name: "batch_size",
                message: "must be at least 1".into(),
            });
        }
        let (h, w) = pipeline.output_hw;
        if h == 0 || w == 0 {
            return Err(DataError::InvalidOption {
                name: "output_hw",
                message: format!("{h}×{w} is empty"),
            });
        }
        let cache = config
            .cache
            .then(|| (0..dataset.len()).map(|_| OnceLock::new()).collect());
        Ok(Self {
            dataset,
            pipeline,
            config,
            device,
            cache,
        })
    }

    /// The dataset.
    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Batches per epoch (counting the last partial one; fewer if whole batches are skipped).
    pub fn num_batches(&self) -> usize {
        self.dataset.len().div_ceil(self.config.batch_size)
    }

    /// The order in which `epoch` visits dataset indices.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.config.shuffle {
            order.shuffle(&mut derived_rng(self.config.seed, epoch, u64::MAX, b"shuffle\0"));
        }
        order
    }

    /// The batches of `epoch`.
    pub fn epoch(&self, epoch: u64) -> Epoch<'_> {
        Epoch {
            loader: self,
            epoch,
            order: self.order(epoch),
            pos: 0,
            skipped: Vec::new(),
            failed: false,
        }
    }

    fn decode_fresh(&self, path: &Path) -> Cached {
        let img = decode_image(path).map_err(|e| match e {
            DataError::Decode { reason, .. } => reason,
            other => other.to_string(),
        })?;
        Ok(Arc::new(match self.config.pre_resize_shorter {
            Some(s) => pre_resize(img, s),
            None => img,
        }))
    }

    fn image(&self, index: usize) -> Cached {
        let path = &self.dataset.samples[index].path;
        match &self.cache {
            Some(cache) => cache[index].get_or_init(|| self.decode_fresh(path)).clone(),
            None => self.decode_fresh(path),
        }
    }

    /// Decodes and transforms sample `index` for `epoch`: `Ok(Err(reason))` when the file is undecodable.
    fn sample(&self, epoch: u64, index: usize) -> Result<std::result::Result<Vec<f32>, String>> {
        let img = match self.image(index) {
            Ok(img) => img,
            Err(reason) => return Ok(Err(reason)),
        };
        let img = Arc::try_unwrap(img).unwrap_or_else(|shared| (*shared).clone());
        let mut rng = sample_rng(self.config.seed, epoch, index);
        let values = self.pipeline.apply(img, &mut rng);
        let (h, w) = self.pipeline.output_hw;
        if values.len() != 3 * h * w {
            let path = self.dataset.samples[index].path.clone();
            return Err(DataError::PipelineOutput {
                path,
                got: values.len(),
                expected: 3 * h * w,
            });
        }
        Ok(Ok(values))
    }

    /// Builds the batch of the given dataset indices for `epoch` (parallel decode and transform).
    ///
    /// `N` is 0 when every file was skipped; [`Epoch`] never yields such a batch.
    pub fn batch(&self, epoch: u64, indices: &[usize]) -> Result<Batch> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.dataset.len()) {
            let message = format!("sample index {bad} out of range (dataset has {})", self.dataset.len());
            return Err(DataError::InvalidOption {
                name: "indices",
                message,
            });
        }
        let results: Vec<_> = indices.par_iter().map(|&i| self.sample(epoch, i)).collect();
        let (h, w) = self.pipeline.output_hw;
        let mut data = Vec::with_capacity(indices.len() * 3 * h * w);
        let (mut kept, mut labels, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
        for (&i, result) in indices.iter().zip(results) {
            let path = &self.dataset.samples[i].path;
            match result? {
                Ok(values) => {
                    data.extend_from_slice(&values);
                    kept.push(i);
                    labels.push(self.dataset.samples[i].label as u32);
                }
                Err(reason) if self.config.policy == DecodePolicy::Skip => {
                    eprintln!("warning: skipping {}: {reason}", path.display());
                    skipped.push(SkippedFile {
                        path: path.clone(),
                        reason,
                    });
                }
                Err(reason) => {
                    return Err(DataError::Decode {
                        path: path.clone(),
                        reason,
                    })
                }
            }
        }
        let n = kept.len();
        let images = Tensor::from_vec(data, (n, 3, h, w), &self.device)?;
        let labels = Tensor::from_vec(labels, n, &self.device)?;
        Ok(Batch {
            images,
            labels,
            indices: kept,
            skipped,
        })
    }
}

/// The batches of one epoch; an iterator of `Result<Batch>`, with the files skipped so far.
#[derive(Debug)]
pub struct Epoch<'a> {
    loader: &'a Loader,
    epoch: u64,
    order: Vec<usize>,
    pos: usize,
    skipped: Vec<SkippedFile>,
    failed: bool,
}

impl Epoch<'_> {
    /// Files skipped so far in this epoch (all of them once the iterator is exhausted).
    pub fn skipped(&self) -> &[SkippedFile] {
        &self.skipped
    }
}

impl Iterator for Epoch<'_> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut carried = Vec::new();
        while !self.failed && self.pos < self.order.len() {
            let end = (self.pos + self.loader.config.batch_size).min(self.order.len());
            let indices = &self.order[self.pos..end];
            self.pos = end;
            match self.loader.batch(self.epoch, indices) {
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
                Ok(batch) if batch.indices.is_empty() => {
                    // Every file of this batch was skipped: report them with the next batch that has samples.
                    self.skipped.extend(batch.skipped.iter().cloned());
                    carried.extend(batch.skipped);
                }
                Ok(mut batch) => {
                    self.skipped.extend(batch.skipped.iter().cloned());
                    carried.append(&mut batch.skipped);
                    batch.skipped = carried;
                    return Some(Ok(batch));
                }
            }
        }
        None
    }
}
