//! Losses against hand-computed values, schedules, the LR finder and metrics on small hand-made examples.

use candle_core::{Device, Tensor, Var};
use training::metrics::{accuracy, confusion_matrix, roc_auc, top_k_accuracy};
use training::schedule::{LrSchedule, Schedule};
use training::{bce_with_logits, class_weights_auto, cross_entropy, lr_find, ClassificationReport, CrossEntropy};
use training::{LrFinderConfig, Result};

fn t2(v: &[[f32; 3]; 2]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_scalar::<f32>().unwrap() as f64
}

fn lse(r: &[f64]) -> f64 {
    r.iter().map(|v| v.exp()).sum::<f64>().ln()
}

#[test]
fn cross_entropy_matches_pytorch_semantics() {
    let rows = [[1.0f64, 2.0, 0.5], [0.1, -1.0, 3.0]];
    let logits = t2(&[[1.0, 2.0, 0.5], [0.1, -1.0, 3.0]]);
    let y = Tensor::new(&[1u32, 0], &Device::Cpu).unwrap();
    let logp = |i: usize, c: usize| rows[i][c] - lse(&rows[i]);
    // Plain mean.
    let want = -(logp(0, 1) + logp(1, 0)) / 2.0;
    assert!((scalar(&cross_entropy(&logits, &y, &CrossEntropy::default()).unwrap()) - want).abs() < 1e-5);
    // Class weights: weighted mean divided by the targets' weights.
    let w = [1.0f64, 2.0, 3.0];
    let want_w = -(w[1] * logp(0, 1) + w[0] * logp(1, 0)) / (w[1] + w[0]);
    let opts = CrossEntropy {
        class_weights: Some(vec![1.0, 2.0, 3.0]),
        label_smoothing: 0.0,
    };
    assert!((scalar(&cross_entropy(&logits, &y, &opts).unwrap()) - want_w).abs() < 1e-5);
    // Label smoothing 0.1 with weights: (1−ε)·nll + ε/C · Σ_i Σ_c −w_c·logp_ic / Σ_i w_{y_i}.
    let eps = 0.1;
    let smooth: f64 = (0..2)
        .map(|i| (0..3).map(|c| -w[c] * logp(i, c)).sum::<f64>())
        .sum::<f64>()
        / (w[1] + w[0]);
    let want_s = (1.0 - eps) * want_w + eps / 3.0 * smooth;
    let opts = CrossEntropy {
        class_weights: Some(vec![1.0, 2.0, 3.0]),
        label_smoothing: eps,
    };
    assert!((scalar(&cross_entropy(&logits, &y, &opts).unwrap()) - want_s).abs() < 1e-5);
    // Bad labels are errors.
    let bad = Tensor::new(&[3u32, 0], &Device::Cpu).unwrap();
    assert!(cross_entropy(&logits, &bad, &CrossEntropy::default()).is_err());
    // Gradient flows: d/dlogits of mean CE = (softmax − onehot)/N.
    let v = Var::from_tensor(&logits).unwrap();
    let g = cross_entropy(v.as_tensor(), &y, &CrossEntropy::default())
        .unwrap()
        .backward()
        .unwrap();
    let g: Vec<Vec<f32>> = g.get(v.as_tensor()).unwrap().to_vec2().unwrap();
    let p01 = logp(0, 1).exp();
    assert!((g[0][1] as f64 - (p01 - 1.0) / 2.0).abs() < 1e-5);
}

#[test]
fn bce_with_logits_is_stable_and_weighted() {
    let logits = t2(&[[0.5, -2.0, 100.0], [-100.0, 3.0, 0.0]]);
    let y = t2(&[[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]);
    let x = [[0.5f64, -2.0, 100.0], [-100.0, 3.0, 0.0]];
    let yy = [[1.0f64, 0.0, 0.0], [1.0, 1.0, 0.0]];
    let sp = |v: f64| v.max(0.0) + (1.0 + (-v.abs()).exp()).ln(); // log(1 + e^v), stably
    let pw = [2.0f64, 1.0, 0.5];
    let (mut plain, mut weighted) = (0.0, 0.0);
    for i in 0..2 {
        for c in 0..3 {
            let (v, t) = (x[i][c], yy[i][c]);
            plain += t * sp(-v) + (1.0 - t) * sp(v);
            weighted += pw[c] * t * sp(-v) + (1.0 - t) * sp(v);
        }
    }
    let got = scalar(&bce_with_logits(&logits, &y, None, None).unwrap());
    assert!(
        got.is_finite() && (got - plain / 6.0).abs() < 1e-4,
        "{got} vs {}",
        plain / 6.0
    );
    let got = scalar(&bce_with_logits(&logits, &y, Some(&[2.0, 1.0, 0.5]), None).unwrap());
    assert!((got - weighted / 6.0).abs() < 1e-4);
    let got_w = scalar(&bce_with_logits(&logits, &y, None, Some(&[0.0, 0.0, 0.0])).unwrap());
    assert_eq!(got_w, 0.0);
}

#[test]
fn balanced_class_weights() {
    assert_eq!(class_weights_auto(&[10, 30]), vec![2.0, 40.0 / 60.0]);
    assert_eq!(class_weights_auto(&[5, 0, 5]), vec![10.0 / 15.0, 0.0, 10.0 / 15.0]);
}

#[test]
fn schedules() {
    let s = Schedule::Step {
        step_epochs: 7,
        gamma: 0.1,
        steps_per_epoch: 10,
    };
    assert_eq!(s.multiplier(69), 1.0);
    assert!((s.multiplier(70) - 0.1).abs() < 1e-12);
    assert!((s.multiplier(140) - 0.01).abs() < 1e-12);
    let c = Schedule::WarmupCosine {
        warmup_steps: 10,
        total_steps: 110,
        min_factor: 0.0,
    };
    assert!((c.multiplier(0) - 0.1).abs() < 1e-12);
    assert!((c.multiplier(9) - 1.0).abs() < 1e-12);
    assert!((c.multiplier(60) - 0.5).abs() < 1e-12);
    assert!(c.multiplier(110).abs() < 1e-12);
    // OneCycleLR(max_lr=1, total_steps=100): PyTorch gives 0.04 at step 0, 1.0 at step 29, 4e-6 at step 99.
    let o = Schedule::one_cycle(100);
    assert!((o.multiplier(0) - 0.04).abs() < 1e-12);
    assert!((o.multiplier(29) - 1.0).abs() < 1e-12);
    assert!((o.multiplier(99) - 4e-6).abs() < 1e-12);
    assert!(o.multiplier(14) > 0.04 && o.multiplier(14) < 1.0);
    assert_eq!(Schedule::Constant.multiplier(1234), 1.0);
}

#[test]
fn lr_finder_on_a_typical_curve() {
    // A typical curve: flat at 2 for tiny rates, falling to 0.5 around 1e-4 (steepest there), exploding above 1.
    let curve = |lr: f64| {
        let d = lr.log10();
        2.0 - 1.5 / (1.0 + (-2.0 * (d + 4.0)).exp()) + (6.0 * d).exp()
    };
    let mut calls = 0;
    let res = lr_find(&LrFinderConfig::default(), |lr| -> Result<f32> {
        calls += 1;
        Ok(curve(lr) as f32)
    })
    .unwrap();
    assert!(calls < 100, "the sweep stops when the loss diverges");
    assert_eq!(res.lrs.len(), res.losses.len());
    let steepest = res.steepest.unwrap();
    assert!(steepest > 1e-5 && steepest < 1e-2, "{res:?}");
    assert_eq!(res.suggested, steepest);
    assert!(res.min_div10 > 1e-3 && res.min_div10 < 1.0, "{res:?}");
    assert!(res.lrs.windows(2).all(|p| p[1] > p[0]));
}

#[test]
fn metrics_on_hand_made_examples() {
    assert_eq!(accuracy(&[0, 1, 1, 2], &[0, 1, 2, 2]), 0.75);
    let cm = confusion_matrix(&[0, 1, 1, 2], &[0, 1, 2, 2], 3);
    assert_eq!(cm, vec![vec![1, 0, 0], vec![0, 1, 0], vec![0, 1, 1]]);
    let scores = vec![vec![0.1, 0.5, 0.4], vec![0.7, 0.2, 0.1]];
    assert_eq!(top_k_accuracy(&scores, &[2, 2], 1), 0.0);
    assert_eq!(top_k_accuracy(&scores, &[2, 2], 2), 0.5);
    // AUC: positives 0.8, 0.4; negatives 0.4, 0.1 → pairs: (0.8>0.4)=1, (0.8>0.1)=1, (0.4=0.4)=0.5, (0.4>0.1)=1.
    assert_eq!(
        roc_auc(&[0.8, 0.4, 0.4, 0.1], &[true, true, false, false]),
        Some(3.5 / 4.0)
    );
    assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
    let names: Vec<String> = vec!["ants".into(), "bees".into()];
    let s = vec![vec![0.9, 0.1], vec![0.4, 0.6], vec![0.3, 0.7], vec![0.8, 0.2]];
    let r = ClassificationReport::from_scores(&s, &[0, 0, 1, 1], &names);
    assert_eq!(r.accuracy, 0.5);
    assert_eq!(r.confusion, vec![vec![1, 1], vec![1, 1]]);
    assert_eq!(r.per_class[1].precision, 0.5);
    assert_eq!(r.per_class[1].support, 2);
    assert_eq!(r.roc_auc, Some(0.75)); // pos 0.7, 0.2 vs neg 0.1, 0.6 → (1 + 1 + 1 + 0)/4
    let json = serde_json::to_string(&r).unwrap();
    assert_eq!(serde_json::from_str::<ClassificationReport>(&json).unwrap(), r);
}

mod segmentation_loss {
    use candle_core::{Device, Tensor};
    use training::{cross_entropy, segmentation_loss, CrossEntropy, SegLoss};

    /// Logits 1×3×2×2 and a mask with one ignored pixel.
    fn case() -> (Tensor, Tensor) {
        #[rustfmt::skip]
        let l = vec![
            2.0f32, 0.5, -1.0, 0.0,   // class 0 over the 4 pixels
            0.1, 1.5, 0.3, 0.2,       // class 1
            -0.5, 0.0, 2.0, 0.1,      // class 2
        ];
        let logits = Tensor::from_vec(l, (1, 3, 2, 2), &Device::Cpu).unwrap();
        let mask = Tensor::from_vec(vec![0u32, 1, 2, 255], (1, 2, 2), &Device::Cpu).unwrap();
        (logits, mask)
    }

    fn scalar(t: &Tensor) -> f32 {
        t.to_scalar::<f32>().unwrap()
    }

    #[test]
    fn cross_entropy_term_is_pytorchs_with_ignore_index() {
        let (logits, mask) = case();
        let seg = scalar(&segmentation_loss(&logits, &mask, &SegLoss::default()).unwrap());
        // The three valid pixels as rows of a classification problem.
        let rows = Tensor::from_vec(
            vec![2.0f32, 0.1, -0.5, 0.5, 1.5, 0.0, -1.0, 0.3, 2.0],
            (3, 3),
            &Device::Cpu,
        )
        .unwrap();
        let y = Tensor::from_vec(vec![0u32, 1, 2], 3, &Device::Cpu).unwrap();
        let want = scalar(&cross_entropy(&rows, &y, &CrossEntropy::default()).unwrap());
        assert!((seg - want).abs() < 1e-6, "{seg} vs {want}");
        // Class weights: the weighted mean of PyTorch.
        let w = vec![1.0f32, 2.0, 0.5];
        let opts = SegLoss {
            class_weights: Some(w.clone()),
            ..SegLoss::default()
        };
        let seg = scalar(&segmentation_loss(&logits, &mask, &opts).unwrap());
        let want = scalar(
            &cross_entropy(
                &rows,
                &y,
                &CrossEntropy {
                    class_weights: Some(w),
                    ..CrossEntropy::default()
                },
            )
            .unwrap(),
        );
        assert!((seg - want).abs() < 1e-6, "{seg} vs {want}");
    }

    #[test]
    fn dice_term_matches_a_hand_computation_and_is_zero_when_perfect() {
        let (logits, mask) = case();
        let opts = SegLoss {
            ce: 0.0,
            dice: 1.0,
            ..SegLoss::default()
        };
        let got = scalar(&segmentation_loss(&logits, &mask, &opts).unwrap());
        // By hand: softmax per valid pixel, per class 1 − 2·p_true / (Σ_valid p + 1), mean over the 3 classes.
        let px = [[2.0f32, 0.1, -0.5], [0.5, 1.5, 0.0], [-1.0, 0.3, 2.0]];
        let soft: Vec<Vec<f32>> = px
            .iter()
            .map(|r| {
                let e: Vec<f32> = r.iter().map(|v| v.exp()).collect();
                let s: f32 = e.iter().sum();
                e.iter().map(|v| v / s).collect()
            })
            .collect();
        let mut want = 0.0;
        for c in 0..3 {
            let sum_p: f32 = soft.iter().map(|p| p[c]).sum();
            want += 1.0 - 2.0 * soft[c][c] / (sum_p + 1.0);
        }
        want /= 3.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // Confident, correct logits: Dice and CE near 0.
        let perfect = Tensor::from_vec(
            vec![20.0f32, 0., 0., 0., 0., 20., 0., 0., 0., 0., 20., 0.],
            (1, 3, 2, 2),
            &Device::Cpu,
        )
        .unwrap();
        let both = SegLoss {
            dice: 1.0,
            ..SegLoss::default()
        };
        assert!(scalar(&segmentation_loss(&perfect, &mask, &both).unwrap()) < 1e-4);
    }

    #[test]
    fn ignored_batches_are_zero_and_bad_values_are_errors() {
        let (logits, _) = case();
        let all_ignored = Tensor::from_vec(vec![255u32; 4], (1, 2, 2), &Device::Cpu).unwrap();
        let l = segmentation_loss(&logits, &all_ignored, &SegLoss::default()).unwrap();
        assert_eq!(scalar(&l), 0.0);
        let bad = Tensor::from_vec(vec![0u32, 1, 7, 0], (1, 2, 2), &Device::Cpu).unwrap();
        let e = segmentation_loss(&logits, &bad, &SegLoss::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("mask value 7"), "{e}");
        let short = Tensor::from_vec(vec![0u32, 1], (1, 1, 2), &Device::Cpu).unwrap();
        assert!(segmentation_loss(&logits, &short, &SegLoss::default()).is_err());
        // Gradients flow to the logits through both terms.
        let var = candle_core::Var::from_tensor(&logits).unwrap();
        let (_, mask) = case();
        let opts = SegLoss {
            dice: 0.5,
            ..SegLoss::default()
        };
        let g = segmentation_loss(var.as_tensor(), &mask, &opts)
            .unwrap()
            .backward()
            .unwrap();
        let gs = g
            .get(&var)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(gs > 0.0);
    }
}

mod detection_loss {
    use backbones::FeatureInfo;
    use candle_core::{Device, Tensor};
    use heads::{DetHead, DetHeadConfig, PostProcess};
    use training::{fcos_loss, giou_loss, sigmoid_focal_loss, Adam, AdamConfig, Optimizer, ParamGroup};

    fn scalar(t: &Tensor) -> f64 {
        t.to_scalar::<f32>().unwrap() as f64
    }

    #[test]
    fn focal_and_giou_losses_match_hand_computations() {
        let x = Tensor::new(&[2.0f32, -1.0, 0.5], &Device::Cpu).unwrap();
        let t = Tensor::new(&[1.0f32, 0.0, 0.0], &Device::Cpu).unwrap();
        let got = scalar(&sigmoid_focal_loss(&x, &t, 0.25, 2.0).unwrap());
        let mut want = 0.0;
        for (xv, tv) in [(2.0f64, 1.0f64), (-1.0, 0.0), (0.5, 0.0)] {
            let p = 1.0 / (1.0 + (-xv).exp());
            let ce = -(tv * p.ln() + (1.0 - tv) * (1.0 - p).ln());
            let pt = p * tv + (1.0 - p) * (1.0 - tv);
            let at = 0.25 * tv + 0.75 * (1.0 - tv);
            want += at * (1.0 - pt).powi(2) * ce;
        }
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        let pred = Tensor::new(&[[0.0f32, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]], &Device::Cpu).unwrap();
        let target = Tensor::new(&[[0.0f32, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]], &Device::Cpu).unwrap();
        let l: Vec<f32> = giou_loss(&pred, &target).unwrap().to_vec1().unwrap();
        assert!(l[0].abs() < 1e-6);
        assert!((l[1] - (1.0 + 100.0 / 300.0)).abs() < 1e-5, "{l:?}");
    }

    /// Fixed "encoder" maps of a 64×64 image: its 3 channels average-pooled to 1/8, 1/16, 1/32.
    fn encoder_maps(img: &Tensor) -> Vec<Tensor> {
        [8usize, 16, 32].iter().map(|&r| img.avg_pool2d(r).unwrap()).collect()
    }

    #[test]
    fn an_fcos_head_learns_to_find_a_box() {
        // A bright square (class 1) on a dark image.
        let (h, w) = (64usize, 64usize);
        let bx = [16.0f32, 24.0, 40.0, 48.0];
        let mut v = vec![0f32; 3 * h * w];
        for c in 0..3 {
            for y in 24..48 {
                for x in 16..40 {
                    v[(c * h + y) * w + x] = 1.0;
                }
            }
        }
        let img = Tensor::from_vec(v, (1, 3, h, w), &Device::Cpu).unwrap();
        let info: Vec<FeatureInfo> = [8usize, 16, 32]
            .iter()
            .map(|&r| FeatureInfo::new(format!("p{r}"), r, 3))
            .collect();
        let cfg = DetHeadConfig {
            channels: 32,
            tower_convs: 2,
            ..DetHeadConfig::for_encoder(vec!["bg_thing".into(), "square".into()], &info, 3).unwrap()
        };
        let head = DetHead::new(cfg, &Device::Cpu, 0).unwrap();
        let feats = encoder_maps(&img);
        let gt = vec![vec![(bx, 1usize)]];
        let mut opt = Adam::new(vec![ParamGroup::new("head", head.vars(), 3e-3)], AdamConfig::adam()).unwrap();
        let mut losses = Vec::new();
        for _ in 0..120 {
            let out = head.forward(&feats, (h, w)).unwrap();
            let t = head.targets(&out.levels, &gt, &Device::Cpu).unwrap();
            assert!(t.num_fg > 0);
            let (loss, parts) = fcos_loss(&out, &t).unwrap();
            assert!(parts.cls > 0.0 && parts.bbox > 0.0 && parts.ctr > 0.0);
            losses.push(scalar(&loss));
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        assert!(losses.iter().all(|l| l.is_finite()));
        assert!(losses[119] < 0.5 * losses[0], "loss {} -> {}", losses[0], losses[119]);
        let out = head.forward(&feats, (h, w)).unwrap();
        let dets = head.postprocess(&out, (h, w), &PostProcess::default()).unwrap();
        let best = &dets[0][0];
        assert_eq!(best.class, 1, "{:?}", &dets[0][..3.min(dets[0].len())]);
        let iou = heads::detect::boxes::iou(&best.bbox, &bx);
        assert!(iou > 0.6, "best box {:?} IoU {iou}", best.bbox);
    }
}
