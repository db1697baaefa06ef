//! EfficientNet-B0 (Tan & Le, 2019) and EfficientNet-Lite0, as timm's `efficientnet_b0` and
//! `tf_efficientnet_lite0`: stem 3×3/2 → seven MBConv stages → 1×1 head conv to 1280 → pool → classifier.

use std::sync::Arc;

use candle_core::Tensor;
use kernels::plan::MobilePlan;

use crate::backbone::{check_out_indices, Backbone, FeatureInfo, Stage};
use crate::blocks::{
    build_stages, forward_mobile_multiscale, forward_stages, mobile_feature_info, mobile_stages, optional_classifier,
    Block, BlockArgs, ConvNormAct, MobileConfig, SeWidth,
};
use crate::error::Result;
use crate::infer::{build_plan, FrozenPrefix, PlanCache};
use crate::layers::{Activation, Linear};
use crate::params::ParamStore;

use BlockArgs as A;

const SILU: Activation = Activation::Silu;
const RELU6: Activation = Activation::Relu6;

/// EfficientNet-B0 (Table 1 of the paper): operator, repeats, kernel, stride, expansion, channels, SE ratio.
pub const B0: &[&[BlockArgs]] = &[
    &[A::ds(3, 1, 16, 0.25, SILU)],          // ds_r1_k3_s1_e1_c16_se0.25
    &[A::ir(2, 3, 2, 6.0, 24, 0.25, SILU)],  // ir_r2_k3_s2_e6_c24_se0.25
    &[A::ir(2, 5, 2, 6.0, 40, 0.25, SILU)],  // ir_r2_k5_s2_e6_c40_se0.25
    &[A::ir(3, 3, 2, 6.0, 80, 0.25, SILU)],  // ir_r3_k3_s2_e6_c80_se0.25
    &[A::ir(3, 5, 1, 6.0, 112, 0.25, SILU)], // ir_r3_k5_s1_e6_c112_se0.25
    &[A::ir(4, 5, 2, 6.0, 192, 0.25, SILU)], // ir_r4_k5_s2_e6_c192_se0.25
    &[A::ir(1, 3, 1, 6.0, 320, 0.25, SILU)], // ir_r1_k3_s1_e6_c320_se0.25
];

/// EfficientNet-Lite0: B0's table without squeeze-excite, with ReLU6.
pub const LITE0: &[&[BlockArgs]] = &[
    &[A::ds(3, 1, 16, 0.0, RELU6)],
    &[A::ir(2, 3, 2, 6.0, 24, 0.0, RELU6)],
    &[A::ir(2, 5, 2, 6.0, 40, 0.0, RELU6)],
    &[A::ir(3, 3, 2, 6.0, 80, 0.0, RELU6)],
    &[A::ir(3, 5, 1, 6.0, 112, 0.0, RELU6)],
    &[A::ir(4, 5, 2, 6.0, 192, 0.0, RELU6)],
    &[A::ir(1, 3, 1, 6.0, 320, 0.0, RELU6)],
];

const STEM: usize = 32;
const HEAD: usize = 1280;
const CLASSES: usize = 1000;

/// An EfficientNet-family network (B0 or Lite0) with timm's parameter names.
#[derive(Debug)]
pub struct EfficientNet {
    name: String,
    store: ParamStore,
    table: &'static [&'static [BlockArgs]],
    stem: ConvNormAct,
    blocks: Vec<Vec<Block>>,
    head: ConvNormAct,
    classifier: Option<Linear>,
    plan: PlanCache,
    prefix: FrozenPrefix,
}

impl EfficientNet {
    /// timm's `efficientnet_b0`: SiLU, squeeze-excite, BN eps 1e-5, symmetric padding.
    pub fn b0(store: &ParamStore) -> Result<Self> {
        let cfg = MobileConfig {
            eps: 1e-5,
            tf_same: false,
            se_act: None,
            se_gate: Activation::Sigmoid,
            se_width: SeWidth::FromBlockInput,
        };
        Self::build("efficientnet_b0", store, &cfg, B0, SILU)
    }

    /// timm's `tf_efficientnet_lite0`: ReLU6, no squeeze-excite, BN eps 1e-3, TF "SAME" padding.
    pub fn lite0(store: &ParamStore) -> Result<Self> {
        let cfg = MobileConfig {
            eps: 1e-3,
            tf_same: true,
            se_act: None,
            se_gate: Activation::Sigmoid,
            se_width: SeWidth::FromBlockInput,
        };
        Self::build("tf_efficientnet_lite0", store, &cfg, LITE0, RELU6)
    }

    fn build(
        name: &str,
        store: &ParamStore,
        cfg: &MobileConfig,
        table: &'static [&'static [BlockArgs]],
        act: Activation,
    ) -> Result<Self> {
        let stem = ConvNormAct::new(store, ("conv_stem", "bn1"), cfg, (3, STEM, 3, 2), act)?;
        let (blocks, c) = build_stages(store, cfg, table, STEM)?;
        let head = ConvNormAct::new(store, ("conv_head", "bn2"), cfg, (c, HEAD, 1, 1), act)?;
        let classifier = optional_classifier(store, "classifier", HEAD, CLASSES)?;
        Ok(Self {
            name: name.to_string(),
            store: store.clone(),
            table,
            stem,
            blocks,
            head,
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
        self.plan.for_forward(&self.store, x, train, || {
            build_plan(&self.stem, &self.blocks, Some(&self.head))
        })
    }
}

impl Backbone for EfficientNet {
    fn name(&self) -> &str {
        &self.name
    }

    fn num_features(&self) -> usize {
        HEAD
    }

    fn stages(&self) -> Vec<Stage> {
        mobile_stages(self.blocks.len(), &["conv_head", "bn2"])
    }

    fn store(&self) -> &ParamStore {
        &self.store
    }

    /// Whether `forward_features(x, train)` takes the folded NHWC inference path (eval, CPU f32, all frozen).
    fn uses_inference_path(&self, x: &Tensor, train: bool) -> Result<bool> {
        Ok(self.inference_plan(x, train)?.is_some())
    }

    fn forward_features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if let Some(plan) = self.inference_plan(x, train)? {
            return Ok(plan.forward(x)?);
        }
        let x = match self.prefix.forward(&self.store, &self.stem, &self.blocks, x, train)? {
            Some(y) => y,
            None => forward_stages(&self.blocks, &self.stem.forward(x, train)?, train)?,
        };
        self.head.forward(&x, train)
    }

    /// The output of each stage after which the resolution halves, and of the last stage (1/2 … 1/32), as timm.
    fn feature_info(&self) -> Vec<FeatureInfo> {
        mobile_feature_info(self.table)
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
