//! The U-Net decoder of segmentation_models_pytorch (Ronneberger et al. 2015 on a pretrained encoder): from the
//! deepest map, blocks of nearest ×2 upsampling, concatenation with the encoder map of that resolution (when there
//! is one), and two 3×3 conv + BatchNorm + ReLU, down to the input resolution; a 3×3 convolution to the classes.

use backbones::layers::{Activation, BatchNorm2d, Conv2d};
use backbones::ParamStore;
use candle_core::Tensor;

use crate::error::Result;
use crate::nn::{conv, match_size, resize_bilinear, upsample_nearest2x};

#[derive(Debug, Clone)]
struct ConvBnRelu {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl ConvBnRelu {
    fn new(store: &ParamStore, prefix: &str, cin: usize, cout: usize) -> Result<Self> {
        Ok(Self {
            conv: conv(store, &format!("{prefix}.0"), (cin, cout, 3, 1), false)?,
            bn: BatchNorm2d::new(store, &format!("{prefix}.1"), cout, 1e-5)?,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(backbones::fused::conv_bn_act(
            &self.conv,
            &self.bn,
            Activation::Relu,
            x,
            train,
        )?)
    }
}

#[derive(Debug, Clone)]
struct DecoderBlock {
    conv1: ConvBnRelu,
    conv2: ConvBnRelu,
    /// Index into the encoder maps of the skip connection at this block's resolution.
    skip: Option<usize>,
}

/// The U-Net decoder and its segmentation head (parameter names as segmentation_models_pytorch's `Unet`).
#[derive(Debug, Clone)]
pub struct Unet {
    blocks: Vec<DecoderBlock>,
    head: Conv2d,
}

impl Unet {
    /// A U-Net over encoder maps with `channels` at `reductions` (increasing powers of two), `decoder` widths (one
    /// per ×2 step from the deepest reduction to 1; missing ones repeat the last).
    pub fn new(
        store: &ParamStore,
        channels: &[usize],
        reductions: &[usize],
        decoder: &[usize],
        classes: usize,
    ) -> Result<Self> {
        let deepest = *reductions
            .last()
            .ok_or_else(|| crate::Error::Config("U-Net: no encoder map".into()))?;
        if !deepest.is_power_of_two() || reductions.iter().any(|r| !r.is_power_of_two()) {
            return Err(crate::Error::Config(format!(
                "U-Net needs encoder maps at power-of-two reductions, got {reductions:?}"
            )));
        }
        let steps = deepest.trailing_zeros() as usize;
        let mut blocks = Vec::with_capacity(steps);
        let mut cin = channels[channels.len() - 1];
        for i in 0..steps {
            let r = deepest >> (i + 1);
            let skip = reductions.iter().rposition(|&x| x == r);
            let cout = decoder.get(i).or(decoder.last()).copied().unwrap_or(16);
            let skip_ch = skip.map(|s| channels[s]).unwrap_or(0);
            blocks.push(DecoderBlock {
                conv1: ConvBnRelu::new(store, &format!("decoder.blocks.{i}.conv1"), cin + skip_ch, cout)?,
                conv2: ConvBnRelu::new(store, &format!("decoder.blocks.{i}.conv2"), cout, cout)?,
                skip,
            });
            cin = cout;
        }
        let head = conv(store, "segmentation_head.0", (cin, classes, 3, 1), true)?;
        Ok(Self { blocks, head })
    }

    /// Logits N×classes×H×W for the encoder maps `feats` of an `h × w` input.
    pub fn forward(&self, feats: &[Tensor], (h, w): (usize, usize), train: bool) -> Result<Tensor> {
        let mut x = feats[feats.len() - 1].clone();
        for b in &self.blocks {
            x = upsample_nearest2x(&x)?;
            if let Some(s) = b.skip {
                let (_, _, sh, sw) = feats[s].dims4()?;
                x = Tensor::cat(&[&match_size(&x, sh, sw)?, &feats[s]], 1)?;
            }
            x = b.conv2.forward(&b.conv1.forward(&x, train)?, train)?;
        }
        let logits = self.head.forward(&x)?;
        let (_, _, lh, lw) = logits.dims4()?;
        if lh.abs_diff(h) <= 1 && lw.abs_diff(w) <= 1 {
            return match_size(&logits, h, w);
        }
        resize_bilinear(&logits, h, w, false)
    }
}
