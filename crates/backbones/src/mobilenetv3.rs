//! MobileNetV3-Large 1.0 (Howard et al., 2019), as timm's `mobilenetv3_large_100`: stem 3×3/2 16ch hard-swish →
//! seven stages of bottlenecks → 1×1 conv to 960 → pool → 1×1 conv (bias) to 1280 → hard-swish → classifier.

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
use crate::layers::{global_avg_pool, Activation, Conv2d, ConvConfig, Linear};
use crate::params::ParamStore;

const RE: Activation = Activation::Relu;
const HS: Activation = Activation::HardSwish;

use BlockArgs as A;

/// MobileNetV3-Large (Table 1 of the paper): kind, repeats, kernel, stride, expansion, channels, SE ratio, activation
/// (`nre`: ReLU, otherwise hard-swish).
pub const LARGE: &[&[BlockArgs]] = &[
    &[A::ds(3, 1, 16, 0.0, RE)], // ds_r1_k3_s1_e1_c16_nre
    &[
        A::ir(1, 3, 2, 4.0, 24, 0.0, RE), // ir_r1_k3_s2_e4_c24_nre
        A::ir(1, 3, 1, 3.0, 24, 0.0, RE), // ir_r1_k3_s1_e3_c24_nre
    ],
    &[A::ir(3, 5, 2, 3.0, 40, 0.25, RE)], // ir_r3_k5_s2_e3_c40_se0.25_nre
    &[
        A::ir(1, 3, 2, 6.0, 80, 0.0, HS), // ir_r1_k3_s2_e6_c80
        A::ir(1, 3, 1, 2.5, 80, 0.0, HS), // ir_r1_k3_s1_e2.5_c80
        A::ir(2, 3, 1, 2.3, 80, 0.0, HS), // ir_r2_k3_s1_e2.3_c80
    ],
    &[A::ir(2, 3, 1, 6.0, 112, 0.25, HS)], // ir_r2_k3_s1_e6_c112_se0.25
    &[A::ir(3, 5, 2, 6.0, 160, 0.25, HS)], // ir_r3_k5_s2_e6_c160_se0.25
    &[A::cn(1, 1, 960, HS)],               // cn_r1_k1_s1_c960
];

const STEM: usize = 16;
const HEAD: usize = 1280;
const CLASSES: usize = 1000;

/// MobileNetV3 with timm's parameter names; the head convolution runs after pooling.
#[derive(Debug)]
pub struct MobileNetV3 {
    name: String,
    store: ParamStore,
    stem: ConvNormAct,
    blocks: Vec<Vec<Block>>,
    conv_head: Conv2d,
    classifier: Option<Linear>,
    plan: PlanCache,
    prefix: FrozenPrefix,
}

impl MobileNetV3 {
    /// timm's `mobilenetv3_large_100`: BN eps 1e-5, SE with ReLU and hard-sigmoid gate.
    pub fn large_100(store: &ParamStore) -> Result<Self> {
        let cfg = MobileConfig {
            eps: 1e-5,
            tf_same: false,
            se_act: Some(Activation::Relu),
            se_gate: Activation::HardSigmoid,
            se_width: SeWidth::FromMidDivisible,
        };
        let stem = ConvNormAct::new(store, ("conv_stem", "bn1"), &cfg, (3, STEM, 3, 2), HS)?;
        let (blocks, c) = build_stages(store, &cfg, LARGE, STEM)?;
        let conv_head = Conv2d::new(
            store,
            "conv_head",
            ConvConfig {
                in_channels: c,
                out_channels: HEAD,
                kernel: 1,
                bias: true,
                ..ConvConfig::default()
            },
        )?;
        let classifier = optional_classifier(store, "classifier", HEAD, CLASSES)?;
        Ok(Self {
            name: "mobilenetv3_large_100".to_string(),
            store: store.clone(),
            stem,
            blocks,
            conv_head,
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

impl Backbone for MobileNetV3 {
    fn name(&self) -> &str {
        &self.name
    }

    fn num_features(&self) -> usize {
        HEAD
    }

    fn stages(&self) -> Vec<Stage> {
        mobile_stages(self.blocks.len(), &["conv_head"])
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

    /// Pool, then the 1×1 head convolution (with bias) and hard-swish: N×1280.
    fn forward_pooled(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let pooled = global_avg_pool(&self.forward_features(x, train)?)?;
        let (n, c) = pooled.dims2()?;
        let y = self.conv_head.forward(&pooled.reshape((n, c, 1, 1))?)?;
        HS.forward(&y.reshape((n, HEAD))?)
    }

    /// The output of each stage after which the resolution halves, and of the last stage (1/2 … 1/32), as timm.
    fn feature_info(&self) -> Vec<FeatureInfo> {
        mobile_feature_info(LARGE)
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
