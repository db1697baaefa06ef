//! Semantic segmentation heads on a backbone's multi-scale features: FPN and U-Net decoders, as
//! segmentation_models_pytorch builds them (any encoder × decoder), with a self-describing configuration.
//!
//! [`SegHeadConfig::for_encoder`] picks the encoder maps a decoder reads from the backbone's `feature_info`
//! (FPN: the 1/4, 1/8, 1/16 and 1/32 maps; U-Net: one map per resolution). A single-scale encoder (a ViT, whose
//! maps are all at 1/patch) gets a simple feature pyramid as ViTDet's: four evenly spaced blocks resampled
//! bilinearly to 1/4 … 1/32.

mod fpn;
mod unet;

pub use fpn::Fpn;
pub use unet::Unet;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use backbones::{FeatureInfo, ParamStore};
use candle_core::{DType, Device, Tensor, Var};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nn::{init_store, resize_bilinear, Init};

/// Which decoder a segmentation head uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decoder {
    /// Panoptic FPN's semantic branch (smp `FPN`): logits at 1/4, upsampled to the input.
    Fpn,
    /// U-Net (smp `Unet`): decoder blocks up to the input resolution.
    Unet,
}

impl std::str::FromStr for Decoder {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fpn" => Ok(Decoder::Fpn),
            "unet" => Ok(Decoder::Unet),
            _ => Err(Error::Config(format!(
                "unknown segmentation head `{s}` (expected fpn or unet)"
            ))),
        }
    }
}

/// Everything needed to rebuild a segmentation head and to use it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegHeadConfig {
    /// The decoder.
    pub decoder: Decoder,
    /// Class names in output order (index = mask value).
    pub class_names: Vec<String>,
    /// Indices into the backbone's `feature_info` of the maps the head reads (`out_indices`).
    pub out_indices: Vec<usize>,
    /// Those maps' descriptions, in order.
    pub inputs: Vec<FeatureInfo>,
    /// Resample a single-scale encoder's maps to 1/4, 1/8, 1/16, 1/32 (ViTDet's simple feature pyramid).
    pub simple_pyramid: bool,
    /// FPN: width of the pyramid (smp: 256).
    pub pyramid_channels: usize,
    /// FPN: width of the segmentation blocks (smp: 128).
    pub segmentation_channels: usize,
    /// U-Net: decoder widths from the deepest block (smp: 256, 128, 64, 32, 16).
    pub decoder_channels: Vec<usize>,
    /// FPN: channel dropout before the classifier (smp: 0.2).
    pub dropout: f32,
}

/// Nominal reductions of the maps an FPN reads.
const FPN_REDUCTIONS: [usize; 4] = [4, 8, 16, 32];

impl SegHeadConfig {
    /// The configuration of `decoder` for an encoder with `info` (its `feature_info`), with smp's default widths.
    pub fn for_encoder(decoder: Decoder, class_names: Vec<String>, info: &[FeatureInfo]) -> Result<Self> {
        if class_names.len() < 2 {
            return Err(Error::Config(format!(
                "segmentation needs at least 2 classes, got {}",
                class_names.len()
            )));
        }
        if info.is_empty() {
            return Err(Error::Config("the backbone has no feature maps".into()));
        }
        let single_scale = info.iter().all(|f| f.reduction == info[0].reduction);
        let out_indices: Vec<usize> = if single_scale {
            // Four evenly spaced blocks, the last one included (ViT: blocks d/4-1, d/2-1, 3d/4-1, d-1).
            let n = info.len();
            let mut idx: Vec<usize> = (1..=4).map(|q| (q * n / 4).max(1) - 1).collect();
            idx.dedup();
            if idx.len() != 4 {
                return Err(Error::Config(format!(
                    "a single-scale encoder needs at least 4 feature maps, got {n}"
                )));
            }
            idx
        } else {
            let mut reductions: Vec<usize> = match decoder {
                Decoder::Fpn => FPN_REDUCTIONS.to_vec(),
                Decoder::Unet => info.iter().map(|f| f.reduction).filter(|&r| r >= 2).collect(),
            };
            reductions.dedup();
            let mut idx = Vec::new();
            for r in reductions {
                match info.iter().rposition(|f| f.reduction == r) {
                    Some(i) => idx.push(i),
                    None => {
                        return Err(Error::Config(format!(
                            "the {decoder:?} decoder needs a feature map at 1/{r}; the backbone has {:?}",
                            info.iter().map(|f| f.reduction).collect::<Vec<_>>()
                        )))
                    }
                }
            }
            idx
        };
        Ok(Self {
            decoder,
            class_names,
            inputs: out_indices.iter().map(|&i| info[i].clone()).collect(),
            out_indices,
            simple_pyramid: single_scale,
            pyramid_channels: 256,
            segmentation_channels: 128,
            decoder_channels: vec![256, 128, 64, 32, 16],
            dropout: 0.2,
        })
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Reductions of the maps the decoder sees (after the simple pyramid, when there is one).
    pub fn decoder_reductions(&self) -> Vec<usize> {
        if self.simple_pyramid {
            FPN_REDUCTIONS.to_vec()
        } else {
            self.inputs.iter().map(|f| f.reduction).collect()
        }
    }

    /// The output stride inputs should be padded to (the deepest reduction the decoder sees).
    pub fn stride(&self) -> usize {
        self.decoder_reductions().into_iter().max().unwrap_or(32)
    }
}

#[derive(Debug, Clone)]
enum Net {
    Fpn(Fpn),
    Unet(Unet),
}

/// A segmentation head: decoder + classifier over the chosen encoder maps; parameters in its own store.
#[derive(Debug, Clone)]
pub struct SegHead {
    config: SegHeadConfig,
    store: ParamStore,
    net: Net,
}

impl SegHead {
    /// A freshly initialised head (smp's init: Kaiming-uniform decoder, Xavier-uniform classifier, zero biases),
    /// every parameter trainable, drawn from `seed`.
    pub fn new(config: SegHeadConfig, device: &Device, seed: u64) -> Result<Self> {
        let head = Self::build(config, ParamStore::empty(DType::F32, device))?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        init_store(&head.store, &mut rng, |name| {
            if name.starts_with("segmentation_head") {
                Init::Xavier
            } else {
                Init::KaimingRelu
            }
        })?;
        Ok(head)
    }

    fn build(config: SegHeadConfig, store: ParamStore) -> Result<Self> {
        if config.out_indices.len() != config.inputs.len() {
            return Err(Error::Config("out_indices and inputs differ in length".into()));
        }
        let channels: Vec<usize> = config.inputs.iter().map(|f| f.channels).collect();
        let k = config.num_classes();
        let net = match config.decoder {
            Decoder::Fpn => Net::Fpn(Fpn::new(
                &store,
                &channels,
                config.pyramid_channels,
                config.segmentation_channels,
                k,
                config.dropout,
            )?),
            Decoder::Unet => Net::Unet(Unet::new(
                &store,
                &channels,
                &config.decoder_reductions(),
                &config.decoder_channels,
                k,
            )?),
        };
        Ok(Self { config, store, net })
    }

    /// The configuration.
    pub fn config(&self) -> &SegHeadConfig {
        &self.config
    }

    /// The store holding the head's parameters and BatchNorm statistics.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The trainable variables by name.
    pub fn vars(&self) -> Vec<(String, Var)> {
        self.store.trainable_vars()
    }

    /// Logits N×classes×H×W for an `input_hw` input whose encoder maps at the configured `out_indices` are `feats`.
    /// Training mode (batch statistics, dropout from `rng`) when `rng` is given.
    pub fn forward(&self, feats: &[Tensor], input_hw: (usize, usize), rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        if feats.len() != self.config.inputs.len() {
            return Err(Error::InputShape {
                got: vec![feats.len()],
                expected: format!("{} encoder maps", self.config.inputs.len()),
            });
        }
        for (f, info) in feats.iter().zip(&self.config.inputs) {
            let c = f.dims4()?.1;
            if c != info.channels {
                return Err(Error::InputShape {
                    got: f.dims().to_vec(),
                    expected: format!("{} channels for {}", info.channels, info.module),
                });
            }
        }
        let pyramid;
        let feats = if self.config.simple_pyramid {
            let (h, w) = input_hw;
            pyramid = feats
                .iter()
                .zip(FPN_REDUCTIONS)
                .map(|(f, r)| resize_bilinear(f, h.div_ceil(r), w.div_ceil(r), false))
                .collect::<Result<Vec<_>>>()?;
            &pyramid[..]
        } else {
            feats
        };
        let train = rng.is_some();
        match &self.net {
            Net::Fpn(n) => n.forward(feats, input_hw, rng),
            Net::Unet(n) => n.forward(feats, input_hw, train),
        }
    }

    /// The JSON configuration written beside `path`.
    pub fn config_path(path: &Path) -> PathBuf {
        crate::nn::config_path(path)
    }

    /// Save the weights and statistics (safetensors at `path`) and the configuration (`path.json`), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::nn::save_store(&self.store, &self.config, path)
    }

    /// Load a head saved with [`SegHead::save`]; its parameters are trainable.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let (config, tensors) = crate::nn::load_store::<SegHeadConfig>(path, "segmentation head", device)?;
        Self::from_tensors(config, tensors, device)
    }

    /// A head over saved tensors (every parameter must be present); parameters are made trainable.
    pub fn from_tensors(config: SegHeadConfig, tensors: HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        Ok(crate::nn::trainable_store(tensors, device, |store| Self::build(config, store))?.0)
    }
}
