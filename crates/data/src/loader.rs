//! Batches of decoded, transformed images as candle tensors, reproducible for a seed.
//!
//! - Epoch `e` visits the samples in a permutation drawn from `(seed, e)` (or in dataset order without shuffling).
//! - Sample `i`'s augmentation RNG is derived from `(seed, e, i)`, so batches do not depend on the thread count.
//! - Only the current batch is decoded and transformed (in parallel on the current rayon pool); with
//!   [`LoaderConfig::cache`], decoded (and pre-resized) images are kept in memory across epochs.
//! - The last partial batch is kept. Undecodable files (images, and mask files) are skipped and reported per batch
//!   and per epoch ([`DecodePolicy::Skip`]) or stop the epoch with an error ([`DecodePolicy::Strict`]); nothing is
//!   printed: [`Batch::skipped`] and [`Epoch::skipped`] are the report.
//! - Targets travel with the images ([`Batch::targets`]): class indices, class sets, masks (moved by every geometric
//!   step with nearest neighbour) or boxes, with each sample's [`Placement`] for mapping predictions back.

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
use crate::target::{Affine, Annotated, Placement, TargetKind, Targets};
use crate::transforms::mask::resize_mask;
use crate::transforms::{to_tensor_normalized, Pipeline};

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

/// One batch: images `N×3×H×W` f32, labels and targets on the loader's device.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Preprocessed images, `N×3×H×W`.
    pub images: Tensor,
    /// Class indices, `N`, u32, for class targets ([`TargetKind::Classes`]); empty (length 0) for other targets.
    pub labels: Tensor,
    /// The samples' targets, whatever the task (class indices, class sets, masks or boxes).
    pub targets: Targets,
    /// Per sample, where its original pixels went (original size included), to map predictions back; empty for
    /// class targets, whose pipeline runs on the image alone.
    pub placements: Vec<Placement>,
    /// Dataset indices of the samples in the batch, in batch order.
    pub indices: Vec<usize>,
    /// Files skipped while building this batch (not in `indices`).
    pub skipped: Vec<SkippedFile>,
}

/// What a [`Loader`] loads: image files and, per sample, its target.
///
/// Implemented by [`Dataset`] (class indices), [`crate::segment::SegDataset`] (masks),
/// [`crate::detect::DetDataset`] (boxes) and [`crate::multilabel::MultiLabelDataset`] (class sets).
pub trait SampleSource: Send + Sync + std::fmt::Debug {
    /// Number of samples.
    fn num_samples(&self) -> usize;
    /// The image file of sample `index`.
    fn image_path(&self, index: usize) -> &Path;
    /// The kind of target, which decides the [`Targets`] variant of the batches.
    fn target_kind(&self) -> TargetKind;
    /// Class indices of sample `index` (one for [`TargetKind::Classes`], a set for [`TargetKind::ClassSets`]).
    fn class_ids(&self, _index: usize) -> Vec<u32> {
        Vec::new()
    }
    /// Sample `index`'s decoded image with its mask or boxes attached: `Ok(Err(reason))` when a target file is
    /// unreadable (skipped or fatal per [`DecodePolicy`], as an undecodable image), `Err` for invalid targets.
    fn annotate(&self, _index: usize, image: RgbImage) -> Result<std::result::Result<Annotated, String>> {
        Ok(Ok(Annotated::new(image)))
    }
}

impl SampleSource for Dataset {
    fn num_samples(&self) -> usize {
        self.samples.len()
    }
    fn image_path(&self, index: usize) -> &Path {
        &self.samples[index].path
    }
    fn target_kind(&self) -> TargetKind {
        TargetKind::Classes
    }
    fn class_ids(&self, index: usize) -> Vec<u32> {
        vec![self.samples[index].label as u32]
    }
}

/// A decoded (and pre-resized) sample, or why it is skipped.
type Cached = std::result::Result<Arc<Annotated>, String>;

/// Turns a [`Dataset`] (or any [`SampleSource`]) and a [`Pipeline`] into epochs of [`Batch`]es.
#[derive(Debug)]
pub struct Loader<S: SampleSource = Dataset> {
    dataset: S,
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

/// The pre-resized size of an `h × w` image (`None` when it is kept as it is).
fn pre_resize_hw(h: u32, w: u32, shorter: u32) -> Option<(u32, u32)> {
    let side = w.min(h);
    if side <= shorter || shorter == 0 {
        return None;
    }
    let scale = shorter as f64 / side as f64;
    Some(if w <= h {
        (((h as f64 * scale).round() as u32).max(1), shorter)
    } else {
        (shorter, ((w as f64 * scale).round() as u32).max(1))
    })
}

/// Shrinks `img` so that its shorter side is `shorter` (never enlarges), with a bilinear filter.
pub fn pre_resize(img: RgbImage, shorter: u32) -> RgbImage {
    match pre_resize_hw(img.height(), img.width(), shorter) {
        Some((nh, nw)) => image::imageops::resize(&img, nw, nh, FilterType::Triangle),
        None => img,
    }
}

/// [`pre_resize`] of an image with its targets (mask nearest, boxes scaled, placement recorded).
pub fn pre_resize_annotated(a: Annotated, shorter: u32) -> Annotated {
    let (h, w) = (a.image.height(), a.image.width());
    let Some((nh, nw)) = pre_resize_hw(h, w, shorter) else {
        return a;
    };
    let step = Affine::scale_translate(nw as f64 / w as f64, nh as f64 / h as f64, 0.0, 0.0);
    a.moved(
        &step,
        |img| pre_resize(img, shorter),
        |m| resize_mask(&m, nh as usize, nw as usize),
    )
}

/// One transformed sample: CHW values, their size, and (for spatial targets) the moved targets.
struct Prepared {
    values: Vec<f32>,
    hw: (usize, usize),
    targets: Option<Annotated>,
}

impl<S: SampleSource> Loader<S> {
    /// A loader over `dataset`; `config.batch_size` must be positive.
    ///
    /// Class targets must end at `pipeline.output_hw`; masks and boxes may end at any size shared by the samples of
    /// a batch (e.g. [`crate::transforms::ResizeShorterPad`] with batch size 1).
    pub fn new(dataset: S, pipeline: Pipeline, config: LoaderConfig, device: Device) -> Result<Self> {
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
            .then(|| (0..dataset.num_samples()).map(|_| OnceLock::new()).collect());
        Ok(Self {
            dataset,
            pipeline,
            config,
            device,
            cache,
        })
    }

    /// The dataset.
    pub fn dataset(&self) -> &S {
        &self.dataset
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Batches per epoch (counting the last partial one; fewer if whole batches are skipped).
    pub fn num_batches(&self) -> usize {
        self.dataset.num_samples().div_ceil(self.config.batch_size)
    }

    /// The order in which `epoch` visits dataset indices.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.num_samples()).collect();
        if self.config.shuffle {
            order.shuffle(&mut derived_rng(self.config.seed, epoch, u64::MAX, b"shuffle\0"));
        }
        order
    }

    /// The batches of `epoch`.
    pub fn epoch(&self, epoch: u64) -> Epoch<'_, S> {
        Epoch {
            loader: self,
            epoch,
            order: self.order(epoch),
            pos: 0,
            skipped: Vec::new(),
            failed: false,
        }
    }

    fn decode_fresh(&self, index: usize) -> Result<Cached> {
        let path = self.dataset.image_path(index);
        let img = match decode_image(path) {
            Ok(img) => img,
            Err(DataError::Decode { reason, .. }) => return Ok(Err(reason)),
            Err(other) => return Ok(Err(other.to_string())),
        };
        let annotated = match self.dataset.annotate(index, img)? {
            Ok(a) => a,
            Err(reason) => return Ok(Err(reason)),
        };
        Ok(Ok(Arc::new(match self.config.pre_resize_shorter {
            Some(s) => pre_resize_annotated(annotated, s),
            None => annotated,
        })))
    }

    fn image(&self, index: usize) -> Result<Cached> {
        let Some(cache) = &self.cache else {
            return self.decode_fresh(index);
        };
        if let Some(hit) = cache[index].get() {
            return Ok(hit.clone());
        }
        // Invalid targets are errors, not cached: only decoded samples and skip reasons are.
        let fresh = self.decode_fresh(index)?;
        Ok(cache[index].get_or_init(|| fresh).clone())
    }

    /// Decodes and transforms sample `index` for `epoch`: `Ok(Err(reason))` when the file is undecodable.
    fn sample(&self, epoch: u64, index: usize) -> Result<std::result::Result<Prepared, String>> {
        let a = match self.image(index)? {
            Ok(a) => a,
            Err(reason) => return Ok(Err(reason)),
        };
        let a = Arc::try_unwrap(a).unwrap_or_else(|shared| (*shared).clone());
        let mut rng = sample_rng(self.config.seed, epoch, index);
        let path = || self.dataset.image_path(index).to_path_buf();
        let spatial = matches!(self.dataset.target_kind(), TargetKind::Masks | TargetKind::Boxes);
        if !spatial {
            let values = self.pipeline.apply(a.image, &mut rng);
            let (h, w) = self.pipeline.output_hw;
            if values.len() != 3 * h * w {
                return Err(DataError::PipelineOutput {
                    path: path(),
                    got: values.len(),
                    expected: 3 * h * w,
                });
            }
            return Ok(Ok(Prepared {
                values,
                hw: (h, w),
                targets: None,
            }));
        }
        let mut a = self
            .pipeline
            .apply_annotated(a, &mut rng)
            .map_err(|e| DataError::Transform {
                path: path(),
                message: e.to_string(),
            })?;
        let hw = (a.image.height() as usize, a.image.width() as usize);
        let values = to_tensor_normalized(&a.image, self.pipeline.mean, self.pipeline.std);
        a.image = RgbImage::new(0, 0);
        Ok(Ok(Prepared {
            values,
            hw,
            targets: Some(a),
        }))
    }

    /// Builds the batch of the given dataset indices for `epoch` (parallel decode and transform).
    ///
    /// `N` is 0 when every file was skipped; [`Epoch`] never yields such a batch.
    pub fn batch(&self, epoch: u64, indices: &[usize]) -> Result<Batch> {
        let len = self.dataset.num_samples();
        if let Some(&bad) = indices.iter().find(|&&i| i >= len) {
            let message = format!("sample index {bad} out of range (dataset has {len})");
            return Err(DataError::InvalidOption {
                name: "indices",
                message,
            });
        }
        let results: Vec<_> = indices.par_iter().map(|&i| self.sample(epoch, i)).collect();
        let mut hw: Option<(usize, usize)> = None;
        let mut data = Vec::new();
        let (mut kept, mut prepared, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
        for (&i, result) in indices.iter().zip(results) {
            let path = self.dataset.image_path(i);
            match result? {
                Ok(mut p) => {
                    match hw {
                        None => hw = Some(p.hw),
                        Some(first) if first != p.hw => {
                            return Err(DataError::Transform {
                                path: path.to_path_buf(),
                                message: format!(
                                    "pipeline output is {}×{} but the batch's first image is {}×{} (batch such a pipeline one image at a time)",
                                    p.hw.0, p.hw.1, first.0, first.1
                                ),
                            })
                        }
                        Some(_) => {}
                    }
                    data.append(&mut p.values);
                    kept.push(i);
                    prepared.push(p.targets);
                }
                Err(reason) if self.config.policy == DecodePolicy::Skip => skipped.push(SkippedFile {
                    path: path.to_path_buf(),
                    reason,
                }),
                Err(reason) => {
                    return Err(DataError::Decode {
                        path: path.to_path_buf(),
                        reason,
                    })
                }
            }
        }
        let n = kept.len();
        let (h, w) = hw.unwrap_or(self.pipeline.output_hw);
        let images = Tensor::from_vec(data, (n, 3, h, w), &self.device)?;
        let empty = || Tensor::from_vec(Vec::<u32>::new(), 0, &self.device);
        let mut placements = Vec::new();
        let (labels, targets) = match self.dataset.target_kind() {
            TargetKind::Classes => {
                let ids: Vec<u32> = kept.iter().map(|&i| self.dataset.class_ids(i)[0]).collect();
                let labels = Tensor::from_vec(ids, n, &self.device)?;
                (labels.clone(), Targets::Classes(labels))
            }
            TargetKind::ClassSets { num_classes } => {
                let mut hot = vec![0f32; n * num_classes];
                for (row, &i) in kept.iter().enumerate() {
                    for c in self.dataset.class_ids(i) {
                        if (c as usize) < num_classes {
                            hot[row * num_classes + c as usize] = 1.0;
                        }
                    }
                }
                let hot = Tensor::from_vec(hot, (n, num_classes), &self.device)?;
                (empty()?, Targets::ClassSets(hot))
            }
            TargetKind::Masks => {
                let mut values = Vec::with_capacity(n * h * w);
                for (a, &i) in prepared.into_iter().zip(&kept) {
                    let a = a.expect("spatial targets are prepared");
                    let Some(mask) = a.mask else {
                        return Err(DataError::Transform {
                            path: self.dataset.image_path(i).to_path_buf(),
                            message: "the sample has no mask".into(),
                        });
                    };
                    values.extend(mask.as_raw().iter().map(|&v| v as u32));
                    placements.push(a.placement);
                }
                let masks = Tensor::from_vec(values, (n, h, w), &self.device)?;
                (empty()?, Targets::Masks(masks))
            }
            TargetKind::Boxes => {
                let mut boxes = Vec::with_capacity(n);
                for a in prepared {
                    let a = a.expect("spatial targets are prepared");
                    boxes.push(a.boxes);
                    placements.push(a.placement);
                }
                (empty()?, Targets::Boxes(boxes))
            }
        };
        Ok(Batch {
            images,
            labels,
            targets,
            placements,
            indices: kept,
            skipped,
        })
    }
}

/// The batches of one epoch; an iterator of `Result<Batch>`, with the files skipped so far.
#[derive(Debug)]
pub struct Epoch<'a, S: SampleSource = Dataset> {
    loader: &'a Loader<S>,
    epoch: u64,
    order: Vec<usize>,
    pos: usize,
    skipped: Vec<SkippedFile>,
    failed: bool,
}

impl<S: SampleSource> Epoch<'_, S> {
    /// Files skipped so far in this epoch (all of them once the iterator is exhausted).
    pub fn skipped(&self) -> &[SkippedFile] {
        &self.skipped
    }
}

impl<S: SampleSource> Iterator for Epoch<'_, S> {
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
