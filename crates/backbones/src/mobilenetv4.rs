//! MobileNetV4-Conv-Small (Qin et al., 2024), as timm's `mobilenetv4_conv_small`: stem 3×3/2 32ch ReLU → five
//! stages of conv-bn-act and universal inverted residual (UIB) blocks → 1×1 conv to 960 → pool → 1×1 conv (no bias)
//! to 1280 → BatchNorm → ReLU → classifier.
//!
//! Frozen inference (eval, CPU f32, nothing trainable) runs the folded NHWC plan of `kernels::plan::MobilePlan`:
//! strided dense 3×3 conv-bn-act blocks as `Step::Dense`, UIBs as `Step::Universal`.

use std::sync::Arc;

use candle_core::Tensor;
use kernels::plan::MobilePlan;

use crate::backbone::{check_out_indices, Backbone, FeatureInfo, Stage};
use crate::blocks::{
    build_stages, forward_mobile_multiscale, forward_stages, mobile_feature_info_with_stem, mobile_stages,
    optional_classifier, Block, BlockArgs, ConvNormAct, MobileConfig, SeWidth,
};
use crate::error::Result;
use crate::fused::conv_bn_act;
use crate::infer::{build_plan, FrozenPrefix, PlanCache};
use crate::layers::{global_avg_pool, Activation, BatchNorm2d, Conv2d, ConvConfig, Linear};
use crate::params::ParamStore;

const RE: Activation = Activation::Relu;

use BlockArgs as A;

/// MobileNetV4-Conv-Small, timm's `arch_def`: `cn` (kernel, stride, channels) and `uir` (repeats, start dw kernel
/// `a`, middle dw kernel `k`, stride, expansion, channels); ReLU everywhere.
pub const CONV_SMALL: &[&[BlockArgs]] = &[
    // stage 0, 112×112 in
    &[
        A::cn(3, 2, 32, RE), // cn_r1_k3_s2_e1_c32
        A::cn(1, 1, 32, RE), // cn_r1_k1_s1_e1_c32
    ],
    // stage 1, 56×56 in
    &[
        A::cn(3, 2, 96, RE), // cn_r1_k3_s2_e1_c96
        A::cn(1, 1, 64, RE), // cn_r1_k1_s1_e1_c64
    ],
    // stage 2, 28×28 in
    &[
        A::uir(1, 5, 5, 2, 3.0, 96, RE), // uir_r1_a5_k5_s2_e3_c96  ExtraDW
        A::uir(4, 0, 3, 1, 2.0, 96, RE), // uir_r4_a0_k3_s1_e2_c96  IR
        A::uir(1, 3, 0, 1, 4.0, 96, RE), // uir_r1_a3_k0_s1_e4_c96  ConvNeXt
    ],
    // stage 3, 14×14 in
    &[
        A::uir(1, 3, 3, 2, 6.0, 128, RE), // uir_r1_a3_k3_s2_e6_c128  ExtraDW
        A::uir(1, 5, 5, 1, 4.0, 128, RE), // uir_r1_a5_k5_s1_e4_c128  ExtraDW
        A::uir(1, 0, 5, 1, 4.0, 128, RE), // uir_r1_a0_k5_s1_e4_c128  IR
        A::uir(1, 0, 5, 1, 3.0, 128, RE), // uir_r1_a0_k5_s1_e3_c128  IR
        A::uir(2, 0, 3, 1, 4.0, 128, RE), // uir_r2_a0_k3_s1_e4_c128  IR
    ],
    // stage 4, 7×7 in
    &[A::cn(1, 1, 960, RE)], // cn_r1_k1_s1_c960
];

const STEM: usize = 32;
const HEAD: usize = 1280;
const CLASSES: usize = 1000;

/// MobileNetV4 with timm's parameter names; the head convolution, its BatchNorm and ReLU run after pooling.
#[derive(Debug)]
pub struct MobileNetV4 {
    name: String,
    store: ParamStore,
    stem: ConvNormAct,
    blocks: Vec<Vec<Block>>,
    conv_head: Conv2d,
    norm_head: BatchNorm2d,
    classifier: Option<Linear>,
    plan: PlanCache,
    prefix: FrozenPrefix,
}

impl MobileNetV4 {
    /// timm's `mobilenetv4_conv_small`: BN eps 1e-5, symmetric padding, ReLU, `head_norm=True` (bias-free
    /// `conv_head`, then `norm_head`).
    pub fn conv_small(store: &ParamStore) -> Result<Self> {
        let cfg = MobileConfig {
            eps: 1e-5,
            tf_same: false,
            se_act: None,
            se_gate: Activation::Sigmoid,
            se_width: SeWidth::FromMidDivisible,
        };
        let stem = ConvNormAct::new(store, ("conv_stem", "bn1"), &cfg, (3, STEM, 3, 2), RE)?;
        let (blocks, c) = build_stages(store, &cfg, CONV_SMALL, STEM)?;
        let conv_head = Conv2d::new(
            store,
            "conv_head",
            ConvConfig {
                in_channels: c,
                out_channels: HEAD,
                kernel: 1,
                bias: false,
                ..ConvConfig::default()
            },
        )?;
        let norm_head = BatchNorm2d::new(store, "norm_head", HEAD, cfg.eps)?;
        let classifier = optional_classifier(store, "classifier", HEAD, CLASSES)?;
        Ok(Self {
            name: "mobilenetv4_conv_small".to_string(),
            store: store.clone(),
            stem,
            blocks,
            conv_head,
            norm_head,
            classifier,
            plan: PlanCache::default(),
            prefix: FrozenPrefix::default(),
        })
    }

    /// How many inference plans this model has built: one is reused until a parameter or buffer changes.
    pub fn plan_builds(&self) -> usize {
        self.plan.builds()
    }

    /// How many plans of a frozen leading part (partial fine-tuning) this model has built.
    pub fn prefix_plan_builds(&self) -> usize {
        self.prefix.builds()
    }

    fn inference_plan(&self, x: &Tensor, train: bool) -> Result<Option<Arc<MobilePlan>>> {
        self.plan
            .for_forward(&self.store, x, train, || build_plan(&self.stem, &self.blocks, None))
    }
}

impl Backbone for MobileNetV4 {
    fn name(&self) -> &str {
        &self.name
    }

    fn num_features(&self) -> usize {
        HEAD
    }

    fn stages(&self) -> Vec<Stage> {
        mobile_stages(self.blocks.len(), &["conv_head", "norm_head"])
    }

    fn store(&self) -> &ParamStore {
        &self.store
    }

    /// Whether `forward_features(x, train)` takes the folded NHWC inference path (eval, CPU f32, all frozen).
    fn uses_inference_path(&self, x: &Tensor, train: bool) -> Result<bool> {
        Ok(self.inference_plan(x, train)?.is_some())
    }

    /// The last feature map before the head: N×960×h×w.
    fn forward_features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if let Some(plan) = self.inference_plan(x, train)? {
            return Ok(plan.forward(x)?);
        }
        if let Some(y) = self.prefix.forward(&self.store, &self.stem, &self.blocks, x, train)? {
            return Ok(y);
        }
        let x = self.stem.forward(x, train)?;
        forward_stages(&self.blocks, &x, train)
    }

    /// Pool, then the 1×1 head convolution, its BatchNorm and ReLU: N×1280.
    fn forward_pooled(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let pooled = global_avg_pool(&self.forward_features(x, train)?)?;
        let (n, c) = pooled.dims2()?;
        let y = conv_bn_act(
            &self.conv_head,
            &self.norm_head,
            RE,
            &pooled.reshape((n, c, 1, 1))?,
            train,
        )?;
        Ok(y.reshape((n, HEAD))?)
    }

    /// timm's rule: the stem (`bn1`, 1/2, the first block has a stride), then each stage after which the resolution
    /// halves and the last stage: `bn1`, `blocks.0`, `blocks.1`, `blocks.2`, `blocks.4` (32, 32, 64, 96, 960).
    fn feature_info(&self) -> Vec<FeatureInfo> {
        mobile_feature_info_with_stem(CONV_SMALL, STEM)
    }

    fn forward_multiscale(&self, x: &Tensor, train: bool, out_indices: &[usize]) -> Result<Vec<Tensor>> {
        let info = self.feature_info();
        check_out_indices(&self.name, info.len(), out_indices)?;
        let x = self.stem.forward(x, train)?;
        forward_mobile_multiscale(&self.blocks, &info, &x, train, out_indices)
    }

    fn has_classifier(&self) -> bool {
        self.classifier.is_some()
    }

    fn classify(&self, pooled: &Tensor) -> Result<Option<Tensor>> {
        self.classifier.as_ref().map(|c| c.forward(pooled)).transpose()
    }
}
