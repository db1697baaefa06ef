//! `trainer lr-find`: fastai's learning-rate sweep on a linear head over cached features of the frozen backbone.

use candle_core::Tensor;
use heads::{Head, HeadConfig, Task};
use rand::seq::SliceRandom;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use training::{LossConfig, LrFinderResult, ParamGroup};

use super::inputs::{self, FeatureSpec};
use super::train::{device_of, optimizer, pretrained};
use crate::backend::Context;
use crate::cli::LrFindArgs;
use crate::error::UsageError;

/// The sweep (`training::lr_find`) with the chosen optimizer: each step's rate and raw batch loss, and the
/// library's suggestion.
pub fn lr_find(ctx: Context, args: &LrFindArgs) -> anyhow::Result<LrFinderResult> {
    if args.batch_size == 0 {
        return Err(UsageError("--batch-size must be at least 1".into()).into());
    }
    let device = device_of(ctx.device)?;
    let dataset = data::open(&args.data).map_err(|e| UsageError(format!("--data: {e}")))?;
    dataset
        .check_trainable()
        .map_err(|e| UsageError(format!("--data: {e}")))?;
    let (pretrained, weights) = pretrained(&args.model, args.weights.as_deref(), &device)?;
    let (spec, backbone) = (pretrained.spec, pretrained.backbone);
    let cfg = HeadConfig::linear(Task::MultiClass, dataset.classes.clone(), backbone.num_features());
    let f = inputs::features(
        &inputs::cache_dir(),
        &dataset,
        FeatureSpec {
            backbone: backbone.as_ref(),
            model: &spec.name,
            weights_sha256: &weights.sha256,
            input: cfg.input,
            pipeline_name: "eval".into(),
            pipeline: data::transforms::Pipeline::eval(&spec.preprocess),
            preprocess: &spec.preprocess,
            views: 1,
            batch_size: args.batch_size,
            strict: false,
            seed: 0,
        },
        &device,
        "data",
        &mut |_, _, _| {},
    )?;
    let head = Head::seeded(cfg, &device, ctx.seed)?;
    let mut opt = optimizer(
        args.optimizer,
        args.momentum,
        args.weight_decay,
        vec![ParamGroup::new("head", head.vars(), 1.0)],
    )?;
    let n = f.x.dim(0)?;
    let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed);
    let mut order: Vec<u32> = Vec::new();
    let sweep = training::LrFinderConfig {
        start_lr: args.start_lr,
        end_lr: args.end_lr,
        num_steps: args.steps,
        ..Default::default()
    };
    let loss_cfg = LossConfig::default();
    training::lr_find(&sweep, |lr| {
        if order.len() < args.batch_size.min(n) {
            order = (0..n as u32).collect();
            order.shuffle(&mut rng);
        }
        let take = args.batch_size.min(n);
        let idx: Vec<u32> = order.drain(..take).collect();
        let idx = Tensor::from_vec(idx, take, &device)?;
        let (x, y) = (f.x.index_select(&idx, 0)?, f.labels.index_select(&idx, 0)?);
        opt.set_lr_scale(lr);
        let logits = head.forward(&x, None)?;
        let (loss, _, _) = training::batch_loss(Task::MultiClass, &logits, &y, &loss_cfg)?;
        let l = loss.to_scalar::<f32>()?;
        opt.step(&loss.backward()?)?;
        Ok(l)
    })
    .map_err(Into::into)
}
