//! The inference plan's runner against the same network composed of tensor-level kernels, and its shape checks.

use candle_core::{DType, Device, Tensor};
use kernels::conv::Epilogue;
use kernels::fused::conv_bn_act;
use kernels::plan::{FoldedConv, MobilePlan, Step};
use kernels::{Activation, BatchNormStats, Error, Padding};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn uniform(rng: &mut ChaCha8Rng, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(lo..hi)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// A convolution weight and the BatchNorm after it.
fn layer(rng: &mut ChaCha8Rng, shape: &[usize]) -> (Tensor, BatchNormStats) {
    let (co, fan_in) = (shape[0], shape[1..].iter().product::<usize>());
    let a = (3.0 / fan_in as f32).sqrt();
    let bn = BatchNormStats {
        gamma: uniform(rng, &[co], 0.8, 1.2),
        beta: uniform(rng, &[co], -0.1, 0.1),
        mean: uniform(rng, &[co], -0.1, 0.1),
        var: uniform(rng, &[co], 0.8, 1.2),
        eps: 1e-3,
    };
    (uniform(rng, shape, -a, a), bn)
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().max_all().unwrap().to_scalar().unwrap()
}

#[test]
fn plan_matches_the_composed_kernels() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (stem, stem_bn) = layer(&mut rng, &[8, 3, 3, 3]);
    let (pw, pw_bn) = layer(&mut rng, &[24, 8, 1, 1]);
    let (dw, dw_bn) = layer(&mut rng, &[24, 1, 5, 5]);
    let (pwl, pwl_bn) = layer(&mut rng, &[8, 24, 1, 1]);
    let (head, head_bn) = layer(&mut rng, &[16, 8, 1, 1]);
    let same = Padding::TfSame;
    let plan = MobilePlan::new(
        FoldedConv::dense(&stem, None, &stem_bn, 2, same, Activation::Relu6).unwrap(),
        vec![Step::Inverted {
            pw: FoldedConv::dense(&pw, None, &pw_bn, 1, same, Activation::Relu6).unwrap(),
            dw: FoldedConv::depthwise(&dw, None, &dw_bn, 1, same, Activation::Relu6).unwrap(),
            se: None,
            pwl: FoldedConv::dense(&pwl, None, &pwl_bn, 1, same, Activation::None).unwrap(),
            skip: true,
        }],
        Some(FoldedConv::dense(&head, None, &head_bn, 1, same, Activation::Relu).unwrap()),
    )
    .unwrap();
    let x = uniform(&mut rng, &[3, 3, 19, 17], -1.0, 1.0);
    let got = plan.forward(&x).unwrap();

    let conv = |x: &Tensor, w: &Tensor, bn: &BatchNormStats, dw: bool, s: usize, epi: Epilogue| {
        let (_, _, h, wd) = x.dims4().unwrap();
        let pad = same.amounts(h, wd, w.dim(2).unwrap(), s, 1);
        conv_bn_act(x, w, None, bn, dw, s, pad, epi).unwrap()
    };
    let y = conv(&x, &stem, &stem_bn, false, 2, Epilogue::Relu6);
    let e = conv(&y, &pw, &pw_bn, false, 1, Epilogue::Relu6);
    let e = conv(&e, &dw, &dw_bn, true, 1, Epilogue::Relu6);
    let y = (conv(&e, &pwl, &pwl_bn, false, 1, Epilogue::None) + y).unwrap();
    let want = conv(&y, &head, &head_bn, false, 1, Epilogue::Relu);

    assert_eq!(got.dims(), [3, 16, 10, 9]);
    let diff = max_abs(&(&got - &want).unwrap());
    let scale = max_abs(&want);
    assert!(scale > 0.0 && diff <= 1e-5 * scale.max(1.0), "{diff} vs scale {scale}");
    assert_eq!(want.dtype(), DType::F32);
}

#[test]
fn layers_in_the_wrong_role_are_unsupported() {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let (stem, bn8) = layer(&mut rng, &[8, 3, 3, 3]);
    let (dense3, _) = layer(&mut rng, &[8, 8, 3, 3]);
    let (dw, _) = layer(&mut rng, &[8, 1, 3, 3]);
    let p = Padding::Symmetric(1);
    let stem = || FoldedConv::dense(&stem, None, &bn8, 2, p, Activation::Relu).unwrap();
    let dense3 = || FoldedConv::dense(&dense3, None, &bn8, 1, p, Activation::None).unwrap();
    let dw = || FoldedConv::depthwise(&dw, None, &bn8, 1, p, Activation::Relu).unwrap();
    let cases = [
        (
            "a 3×3 projection",
            vec![Step::Separable {
                dw: dw(),
                se: None,
                pw: dense3(),
                skip: false,
            }],
            None,
        ),
        (
            "a dense depthwise layer",
            vec![Step::Separable {
                dw: dense3(),
                se: None,
                pw: dense3(),
                skip: false,
            }],
            None,
        ),
        ("a 3×3 head", vec![], Some(dense3())),
    ];
    for (what, steps, head) in cases {
        match MobilePlan::new(stem(), steps, head) {
            Err(Error::Unsupported(msg)) => println!("{what}: {msg}"),
            other => panic!("{what}: expected Unsupported, got {other:?}"),
        }
    }
    assert!(
        matches!(MobilePlan::new(dw(), vec![], None), Err(Error::Unsupported(_))),
        "a depthwise stem"
    );
    assert!(FoldedConv::depthwise(
        &uniform(&mut rng, &[8, 2, 3, 3], -1.0, 1.0),
        None,
        &bn8,
        1,
        p,
        Activation::None
    )
    .is_err());
}

/// MobileNetV4's steps: a strided dense 3×3 conv-bn-act on the NHWC map, a universal inverted residual with a
/// strided start depthwise (no activation) and no middle one, and one with both depthwise layers and a residual.
#[test]
fn dense_and_universal_steps_match_the_composed_kernels() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let p = |k: usize| Padding::Symmetric(k / 2);
    let (stem, stem_bn) = layer(&mut rng, &[8, 3, 3, 3]);
    let (d3, d3_bn) = layer(&mut rng, &[12, 8, 3, 3]);
    // UIB 1: start dw 5×5/2 (no act), pw 12→24, pwl 24→16.
    let (s1, s1_bn) = layer(&mut rng, &[12, 1, 5, 5]);
    let (e1, e1_bn) = layer(&mut rng, &[24, 12, 1, 1]);
    let (l1, l1_bn) = layer(&mut rng, &[16, 24, 1, 1]);
    // UIB 2: start dw 3×3, pw 16→32, mid dw 3×3, pwl 32→16, residual.
    let (s2, s2_bn) = layer(&mut rng, &[16, 1, 3, 3]);
    let (e2, e2_bn) = layer(&mut rng, &[32, 16, 1, 1]);
    let (m2, m2_bn) = layer(&mut rng, &[32, 1, 3, 3]);
    let (l2, l2_bn) = layer(&mut rng, &[16, 32, 1, 1]);
    let re = Activation::Relu;
    let none = Activation::None;
    let dense = |w: &Tensor, bn: &BatchNormStats, s: usize, act| {
        FoldedConv::dense(w, None, bn, s, p(w.dim(2).unwrap()), act).unwrap()
    };
    let dw = |w: &Tensor, bn: &BatchNormStats, s: usize, act| {
        FoldedConv::depthwise(w, None, bn, s, p(w.dim(2).unwrap()), act).unwrap()
    };
    let plan = MobilePlan::new(
        dense(&stem, &stem_bn, 2, re),
        vec![
            Step::Dense(dense(&d3, &d3_bn, 2, re)),
            Step::Universal {
                start: Some(dw(&s1, &s1_bn, 2, none)),
                pw: dense(&e1, &e1_bn, 1, re),
                mid: None,
                pwl: dense(&l1, &l1_bn, 1, none),
                skip: false,
            },
            Step::Universal {
                start: Some(dw(&s2, &s2_bn, 1, none)),
                pw: dense(&e2, &e2_bn, 1, re),
                mid: Some(dw(&m2, &m2_bn, 1, re)),
                pwl: dense(&l2, &l2_bn, 1, none),
                skip: true,
            },
        ],
        None,
    )
    .unwrap();
    let x = uniform(&mut rng, &[2, 3, 37, 29], -1.0, 1.0);
    let got = plan.forward(&x).unwrap();

    let conv = |x: &Tensor, w: &Tensor, bn: &BatchNormStats, dw: bool, s: usize, epi: Epilogue| {
        let (_, _, h, wd) = x.dims4().unwrap();
        let pad = p(w.dim(2).unwrap()).amounts(h, wd, w.dim(2).unwrap(), s, 1);
        conv_bn_act(x, w, None, bn, dw, s, pad, epi).unwrap()
    };
    let y = conv(&x, &stem, &stem_bn, false, 2, Epilogue::Relu);
    let y = conv(&y, &d3, &d3_bn, false, 2, Epilogue::Relu);
    let t = conv(&y, &s1, &s1_bn, true, 2, Epilogue::None);
    let t = conv(&t, &e1, &e1_bn, false, 1, Epilogue::Relu);
    let y = conv(&t, &l1, &l1_bn, false, 1, Epilogue::None);
    let t = conv(&y, &s2, &s2_bn, true, 1, Epilogue::None);
    let t = conv(&t, &e2, &e2_bn, false, 1, Epilogue::Relu);
    let t = conv(&t, &m2, &m2_bn, true, 1, Epilogue::Relu);
    let want = (conv(&t, &l2, &l2_bn, false, 1, Epilogue::None) + y).unwrap();

    assert_eq!(got.dims(), want.dims());
    assert_eq!(got.dims(), [2, 16, 5, 4]);
    let diff = max_abs(&(&got - &want).unwrap());
    let scale = max_abs(&want);
    assert!(scale > 0.0 && diff <= 1e-5 * scale.max(1.0), "{diff} vs scale {scale}");
}
