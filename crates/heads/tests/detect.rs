//! Detection head: box geometry and NMS on hand-made cases, FCOS assignment rules, output shapes, targets,
//! decoding, save/load.

use backbones::FeatureInfo;
use candle_core::{Device, Tensor};
use heads::detect::assign::{assign, centerness, decode, ltrb_target, AssignConfig, Level};
use heads::detect::boxes::{batched_nms, giou, iou, nms};
use heads::{DetHead, DetHeadConfig, DetOutput, PostProcess};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[test]
fn iou_giou_and_nms_on_hand_made_boxes() {
    let a = [0.0, 0.0, 10.0, 10.0];
    let b = [5.0, 0.0, 15.0, 10.0];
    assert!((iou(&a, &b) - 50.0 / 150.0).abs() < 1e-6);
    // Disjoint with a gap: IoU 0, GIoU = −(hull − union)/hull with hull 30×10 and union 200.
    let c = [20.0, 0.0, 30.0, 10.0];
    assert_eq!(iou(&a, &c), 0.0);
    assert!((giou(&a, &c) - (0.0 - (300.0 - 200.0) / 300.0)).abs() < 1e-6);
    assert!((giou(&a, &a) - 1.0).abs() < 1e-6);
    assert_eq!(iou(&[0.0, 0.0, 0.0, 0.0], &[0.0, 0.0, 0.0, 0.0]), 0.0);

    let boxes = [a, [1.0, 1.0, 11.0, 11.0], c, [21.0, 0.0, 31.0, 10.0]];
    let scores = [0.9, 0.95, 0.5, 0.4];
    // Box 1 (0.95) suppresses box 0 (IoU 0.68); box 2 suppresses box 3 (IoU 0.82).
    assert_eq!(nms(&boxes, &scores, 0.5), vec![1, 2]);
    assert_eq!(nms(&boxes, &scores, 0.9), vec![1, 0, 2, 3]);
    // Different classes never suppress each other.
    assert_eq!(batched_nms(&boxes, &scores, &[0, 1, 0, 0], 0.5), vec![1, 0, 2]);
}

#[test]
fn fcos_assignment_follows_centre_sampling_size_ranges_and_smallest_area() {
    let levels = [
        Level { stride: 8, h: 8, w: 8 },
        Level { stride: 16, h: 4, w: 4 },
        Level { stride: 32, h: 2, w: 2 },
    ];
    let cfg = AssignConfig::default();
    // A 20×20 box centred at (28, 28): only P3 (max distance < 64), locations within 1.5·8 = 12 px of the centre
    // and inside the box: centres 20, 28, 36 in x and y → 9 positives.
    let small = [18.0, 18.0, 38.0, 38.0];
    let m = assign(&levels, &[small], &cfg);
    assert_eq!(m.len(), 64 + 16 + 4);
    let pos: Vec<usize> = m
        .iter()
        .enumerate()
        .filter(|(_, g)| g.is_some())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(pos.len(), 9, "{pos:?}");
    assert!(pos.iter().all(|&i| i < 64));
    for &i in &pos {
        let (x, y) = levels[0].center(i);
        assert!((x - 28.0).abs() < 12.0 && (y - 28.0).abs() < 12.0);
    }
    // A 150×150 box: its locations' largest side distance is ≥ 64 on P3 and P4's upper bound is 128 → P4 for
    // locations near the centre with max distance in (64, 128), P5 (last level: no upper bound) for the rest.
    let big = [0.0, 0.0, 150.0, 150.0];
    let m = assign(&levels, &[big], &cfg);
    assert!(m[..64].iter().all(Option::is_none), "P3 must not take a 150 px box");
    assert!(m[64..].iter().any(Option::is_some));
    // Two boxes on the same location: the smaller one wins.
    let inner = [20.0, 20.0, 36.0, 36.0];
    let outer = [12.0, 12.0, 44.0, 44.0];
    let m = assign(&levels, &[outer, inner], &cfg);
    let at = 3 * 8 + 3; // centre (28, 28)
    assert_eq!(m[at], Some(1));
    // No boxes: all background.
    assert!(assign(&levels, &[], &cfg).iter().all(Option::is_none));

    // Targets, centerness and decoding are consistent.
    let t = ltrb_target((28.0, 28.0), &small, 8.0);
    assert_eq!(t, [1.25, 1.25, 1.25, 1.25]);
    assert!((centerness(&t) - 1.0).abs() < 1e-6);
    assert_eq!(decode((28.0, 28.0), &t, 8.0), small);
    let off = ltrb_target((20.0, 28.0), &small, 8.0);
    assert!((centerness(&off) - (2.0f32 / 18.0).sqrt()).abs() < 1e-6);
}

fn info() -> Vec<FeatureInfo> {
    vec![
        FeatureInfo::new("blocks.1", 4, 8),
        FeatureInfo::new("blocks.2", 8, 12),
        FeatureInfo::new("blocks.4", 16, 16),
        FeatureInfo::new("blocks.6", 32, 24),
    ]
}

fn small_config(levels: usize) -> DetHeadConfig {
    DetHeadConfig {
        channels: 32,
        tower_convs: 2,
        ..DetHeadConfig::for_encoder(vec!["ant".into(), "bee".into()], &info(), levels).unwrap()
    }
}

fn maps(cfg: &DetHeadConfig, n: usize, h: usize, w: usize) -> Vec<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    cfg.inputs
        .iter()
        .map(|f| {
            let (fh, fw) = (h.div_ceil(f.reduction), w.div_ceil(f.reduction));
            let v: Vec<f32> = (0..n * f.channels * fh * fw)
                .map(|_| rng.gen_range(-1f32..1.0))
                .collect();
            Tensor::from_vec(v, (n, f.channels, fh, fw), &Device::Cpu).unwrap()
        })
        .collect()
}

#[test]
fn head_outputs_targets_and_save_load() {
    let cfg = small_config(3);
    assert_eq!(cfg.out_indices, vec![1, 2, 3]);
    assert_eq!(cfg.strides(), vec![8, 16, 32]);
    let head = DetHead::new(cfg.clone(), &Device::Cpu, 1).unwrap();
    let f = maps(&cfg, 2, 96, 64);
    let out = head.forward(&f, (96, 64)).unwrap();
    let l = 12 * 8 + 6 * 4 + 3 * 2;
    assert_eq!(out.cls.dims(), &[2, l, 2]);
    assert_eq!(out.reg.dims(), &[2, l, 4]);
    assert_eq!(out.ctr.dims(), &[2, l]);
    // The classification prior: sigmoid(bias) ≈ 0.01 everywhere at init (weights ~N(0, 0.01)).
    let p: Vec<f32> = candle_nn::ops::sigmoid(&out.cls)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let mean = p.iter().sum::<f32>() / p.len() as f32;
    assert!((mean - 0.01).abs() < 0.005, "mean prior {mean}");

    let gt = vec![vec![([10.0, 10.0, 40.0, 50.0], 1)], vec![]];
    let t = head.targets(&out.levels, &gt, &Device::Cpu).unwrap();
    assert!(t.num_fg > 0);
    let fg: Vec<f32> = t.fg.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(fg.iter().sum::<f32>() as usize, t.num_fg);
    assert!(fg[l..].iter().all(|&v| v == 0.0), "the second image has no object");
    let cls: Vec<f32> = t.cls.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(cls.iter().sum::<f32>() as usize, t.num_fg);
    assert!(head
        .targets(&out.levels, &[vec![([0.0, 0.0, 5.0, 5.0], 7)]], &Device::Cpu)
        .is_err());

    // P3–P7 adds two levels.
    let cfg5 = small_config(5);
    let head5 = DetHead::new(cfg5.clone(), &Device::Cpu, 1).unwrap();
    let out5 = head5.forward(&maps(&cfg5, 1, 128, 128), (128, 128)).unwrap();
    assert_eq!(
        out5.levels.iter().map(|l| l.stride).collect::<Vec<_>>(),
        vec![8, 16, 32, 64, 128]
    );
    assert_eq!(out5.levels[3].h, 2);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("det.safetensors");
    head.save(&path).unwrap();
    let back = DetHead::load(&path, &Device::Cpu).unwrap();
    assert_eq!(back.config(), head.config());
    let again = back.forward(&f, (96, 64)).unwrap();
    let a: Vec<f32> = out.reg.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = again.reg.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a, b);
    assert!(back.vars().len() == head.vars().len() && !head.vars().is_empty());
}

#[test]
fn postprocess_decodes_scores_boxes_and_suppresses_duplicates() {
    let cfg = small_config(3);
    let head = DetHead::new(cfg, &Device::Cpu, 1).unwrap();
    let levels = vec![
        Level { stride: 8, h: 4, w: 4 },
        Level { stride: 16, h: 2, w: 2 },
        Level { stride: 32, h: 1, w: 1 },
    ];
    let l = 16 + 4 + 1;
    let (mut cls, mut reg, mut ctr) = (vec![-10f32; l * 2], vec![1f32; l * 4], vec![-10f32; l]);
    // Location 5 (centre 12, 12) and its neighbour 6 (centre 20, 12) predict the same class-1 box (4, 4, 20, 20);
    // location 17 (P4) class 0.
    for (at, c, s) in [(5usize, 1usize, 4.0f32), (6, 1, 3.0), (17, 0, 2.0)] {
        cls[at * 2 + c] = s;
        ctr[at] = 5.0;
    }
    reg[6 * 4..6 * 4 + 4].copy_from_slice(&[2.0, 1.0, 0.0, 1.0]);
    let dev = &Device::Cpu;
    let out = DetOutput {
        cls: Tensor::from_vec(cls, (1, l, 2), dev).unwrap(),
        reg: Tensor::from_vec(reg, (1, l, 4), dev).unwrap(),
        ctr: Tensor::from_vec(ctr, (1, l), dev).unwrap(),
        levels,
    };
    let d = head.postprocess(&out, (32, 32), &PostProcess::default()).unwrap();
    assert_eq!(d.len(), 1);
    let d = &d[0];
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(d[0].class, 1);
    assert_eq!(d[0].bbox, [4.0, 4.0, 20.0, 20.0]);
    let want = ((1.0 / (1.0 + (-4.0f32).exp())) * (1.0 / (1.0 + (-5.0f32).exp()))).sqrt();
    assert!((d[0].score - want).abs() < 1e-6);
    assert_eq!(d[1].class, 0);
    // P4 location 1 (of 2×2) has centre (24, 8): box (8, -8, 40, 24) clipped to the 32×32 input.
    assert_eq!(d[1].bbox, [8.0, 0.0, 32.0, 24.0]);
    // A threshold above both scores keeps nothing; max_det caps the list.
    let none = head
        .postprocess(
            &out,
            (32, 32),
            &PostProcess {
                conf: 0.99,
                ..PostProcess::default()
            },
        )
        .unwrap();
    assert!(none[0].is_empty());
    let one = head
        .postprocess(
            &out,
            (32, 32),
            &PostProcess {
                max_det: 1,
                ..PostProcess::default()
            },
        )
        .unwrap();
    assert_eq!(one[0].len(), 1);
}
