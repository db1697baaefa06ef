//! Dense-task measurements of `cargo xtask bench`: segmentation (FPN / U-Net decoder) and detection (FCOS) forward
//! passes and training steps on random input, backbone frozen for the forward and fully trained for the step.

use backbones::{freeze_all_but_last, unfreeze_all, Backbone};
use candle_core::{Device, Tensor};
use heads::{Decoder, DetHead, DetHeadConfig, SegHead, SegHeadConfig};
use rand_chacha::rand_core::SeedableRng;
use training::{fcos_loss, segmentation_loss, Optimizer, ParamGroup, SegLoss, Sgd, SgdConfig};

use super::measure::{random_tensor, time_reps, Timed};
use super::{Measure, OneArgs};

/// The decoder of the segmentation measurements: U-Net for ResNets (as the resnet18 + U-Net), FPN otherwise.
fn decoder_for(model: &str) -> Decoder {
    if model.starts_with("resnet") {
        Decoder::Unet
    } else {
        Decoder::Fpn
    }
}

/// Segmentation or detection forward / training step for `args.measure`.
pub fn measure(model: &dyn Backbone, args: &OneArgs, note: String) -> anyhow::Result<Timed> {
    let (n, s) = (args.batch, args.size);
    let x = random_tensor(&[n, 3, s, s], 1, 1.0)?;
    let train = matches!(args.measure, Measure::SegTrain | Measure::DetTrain);
    if train {
        unfreeze_all(model)?;
    } else {
        freeze_all_but_last(model, 0)?;
    }
    let info = model.feature_info();
    let sgd = |vars| Sgd::new(vec![ParamGroup::new("all", vars, 0.01)], SgdConfig::default());
    match args.measure {
        Measure::SegForward | Measure::SegTrain => {
            let decoder = decoder_for(model.name());
            let cfg = SegHeadConfig::for_encoder(decoder, vec!["a".into(), "b".into(), "c".into()], &info)?;
            let head = SegHead::new(cfg, &Device::Cpu, 0)?;
            let idx = head.config().out_indices.clone();
            let mask = Tensor::from_vec(
                (0..n * s * s).map(|i| (i % 3) as u32).collect::<Vec<_>>(),
                (n, s, s),
                &Device::Cpu,
            )?;
            let mut vars = model.store().trainable_vars();
            vars.extend(head.vars());
            let mut opt = sgd(vars)?;
            let t = time_reps(args.warmup, args.reps, || {
                let feats = model.forward_multiscale(&x, train, &idx)?;
                if train {
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
                    let logits = head.forward(&feats, (s, s), Some(&mut rng))?;
                    let loss = segmentation_loss(&logits, &mask, &SegLoss::default())?;
                    opt.step(&loss.backward()?)?;
                } else {
                    head.forward(&feats, (s, s), None)?;
                }
                Ok(())
            })?;
            Ok((n, t, format!("{note}; {decoder:?} decoder, 3 classes, graft SGD")))
        }
        _ => {
            let cfg = DetHeadConfig::for_encoder(vec!["a".into(), "b".into()], &info, 3)?;
            let head = DetHead::new(cfg, &Device::Cpu, 0)?;
            let idx = head.config().out_indices.clone();
            let q = s as f32 / 4.0;
            let gt: Vec<Vec<([f32; 4], usize)>> = (0..n)
                .map(|i| vec![([q, q, 2.0 * q, 3.0 * q], i % 2), ([2.5 * q, q, 3.5 * q, 2.0 * q], 1)])
                .collect();
            let mut vars = model.store().trainable_vars();
            vars.extend(head.vars());
            let mut opt = sgd(vars)?;
            let t = time_reps(args.warmup, args.reps, || {
                let feats = model.forward_multiscale(&x, train, &idx)?;
                let out = head.forward(&feats, (s, s))?;
                if train {
                    let targets = head.targets(&out.levels, &gt, &Device::Cpu)?;
                    let (loss, _) = fcos_loss(&out, &targets)?;
                    opt.step(&loss.backward()?)?;
                } else {
                    head.postprocess(&out, (s, s), &heads::PostProcess::default())?;
                }
                Ok(())
            })?;
            Ok((
                n,
                t,
                format!("{note}; FCOS P3-P5 (256 wide, 4-conv towers), 2 classes, graft SGD"),
            ))
        }
    }
}
