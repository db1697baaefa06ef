//! The FPN decoder of segmentation_models_pytorch (Kirillov et al. 2019, Panoptic FPN's semantic branch):
//! a top-down pyramid (1×1 lateral convolutions, nearest ×2 upsampling, sums) over the encoder's 1/4 … 1/32 maps,
//! then per level 3×3 conv + GroupNorm + ReLU blocks upsampling bilinearly to 1/4, summed, channel dropout, and a
//! 1×1 convolution to the classes, upsampled bilinearly to the input.

use backbones::layers::Conv2d;
use backbones::ParamStore;
use candle_core::Tensor;
use rand_chacha::ChaCha8Rng;

use crate::error::Result;
use crate::nn::{conv, dropout2d, match_size, resize_bilinear, upsample_nearest2x, GroupNorm};

/// 3×3 convolution (no bias) + GroupNorm(32) + ReLU, then optionally bilinear ×2 (`align_corners=True`).
#[derive(Debug, Clone)]
struct ConvGnRelu {
    conv: Conv2d,
    gn: GroupNorm,
    upsample: bool,
}

impl ConvGnRelu {
    fn new(store: &ParamStore, prefix: &str, cin: usize, cout: usize, upsample: bool) -> Result<Self> {
        Ok(Self {
            conv: conv(store, &format!("{prefix}.block.0"), (cin, cout, 3, 1), false)?,
            gn: GroupNorm::new(store, &format!("{prefix}.block.1"), 32.min(cout), cout)?,
            upsample,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.gn.forward(&self.conv.forward(x)?)?.relu()?;
        if self.upsample {
            let (_, _, h, w) = y.dims4()?;
            return resize_bilinear(&y, 2 * h, 2 * w, true);
        }
        Ok(y)
    }
}

/// The FPN decoder and its segmentation head (parameter names as segmentation_models_pytorch's `FPN`).
#[derive(Debug, Clone)]
pub struct Fpn {
    p5: Conv2d,
    laterals: Vec<Conv2d>,
    seg_blocks: Vec<Vec<ConvGnRelu>>,
    head: Conv2d,
    dropout: f32,
}

impl Fpn {
    /// An FPN over encoder maps with `channels` (1/4, 1/8, 1/16, 1/32), `pyramid` and `segmentation` widths.
    pub fn new(
        store: &ParamStore,
        channels: &[usize],
        pyramid: usize,
        segmentation: usize,
        classes: usize,
        dropout: f32,
    ) -> Result<Self> {
        if channels.len() != 4 {
            return Err(crate::Error::Config(format!(
                "the FPN decoder reads 4 maps (1/4 … 1/32), got {}",
                channels.len()
            )));
        }
        let p5 = conv(store, "decoder.p5", (channels[3], pyramid, 1, 1), true)?;
        // p4, p3, p2: lateral 1×1 convolutions of the 1/16, 1/8, 1/4 maps.
        let laterals = (0..3)
            .map(|i| {
                let level = 4 - i;
                let name = format!("decoder.p{level}.skip_conv");
                conv(store, &name, (channels[2 - i], pyramid, 1, 1), true)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut seg_blocks = Vec::new();
        for (i, n_up) in [3usize, 2, 1, 0].into_iter().enumerate() {
            let mut blocks = vec![ConvGnRelu::new(
                store,
                &format!("decoder.seg_blocks.{i}.block.0"),
                pyramid,
                segmentation,
                n_up > 0,
            )?];
            for j in 1..n_up {
                blocks.push(ConvGnRelu::new(
                    store,
                    &format!("decoder.seg_blocks.{i}.block.{j}"),
                    segmentation,
                    segmentation,
                    true,
                )?);
            }
            seg_blocks.push(blocks);
        }
        let head = conv(store, "segmentation_head.0", (segmentation, classes, 1, 1), true)?;
        Ok(Self {
            p5,
            laterals,
            seg_blocks,
            head,
            dropout,
        })
    }

    /// Logits N×classes×H×W for the encoder maps `feats` (1/4 … 1/32) of an `h × w` input.
    pub fn forward(&self, feats: &[Tensor], (h, w): (usize, usize), rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let mut p = self.p5.forward(&feats[3])?;
        let mut pyramid = vec![p.clone()];
        for (i, lateral) in self.laterals.iter().enumerate() {
            let skip = &feats[2 - i];
            let (_, _, sh, sw) = skip.dims4()?;
            p = (match_size(&upsample_nearest2x(&p)?, sh, sw)? + lateral.forward(skip)?)?;
            pyramid.push(p.clone());
        }
        let (_, _, h4, w4) = pyramid[3].dims4()?;
        let mut sum: Option<Tensor> = None;
        for (level, blocks) in pyramid.iter().zip(&self.seg_blocks) {
            let mut y = level.clone();
            for b in blocks {
                y = b.forward(&y)?;
            }
            let y = match_size(&y, h4, w4)?;
            sum = Some(match sum {
                None => y,
                Some(s) => (s + y)?,
            });
        }
        let mut y = sum.expect("four pyramid levels");
        if let Some(rng) = rng {
            y = dropout2d(&y, self.dropout, rng)?;
        }
        let logits = self.head.forward(&y)?;
        resize_bilinear(&logits, h, w, true)
    }
}
