//! The Winograd F(4×4, 3×3) path of the convolution (3×3, stride 1, pad 1, ≥ 32 channels) matches candle's
//! `Tensor::conv2d`, forward (with bias and each epilogue) and backward, and finite differences.
//!
//! Tolerance: max |diff| ≤ 1e-4 · max(1, max |reference|) for values and both gradients (f32 F(4,3) errs by
//! ~1e-6 of the output scale; each test prints the largest relative error it saw).

use candle_core::{Device, Tensor, Var};
use kernels::conv::{conv2d, conv2d_bias_act, winograd_applies, Epilogue};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const TOL: f32 = 1e-4;

fn rand_t(dims: &[usize], rng: &mut ChaCha8Rng) -> Tensor {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// max |ours − reference| / max(1, max |reference|), asserted ≤ [`TOL`].
fn check(what: &str, ours: &Tensor, reference: &Tensor) -> f32 {
    assert_eq!(ours.dims(), reference.dims(), "{what}: shape");
    let rel = max_abs(&(ours - reference).unwrap()) / max_abs(reference).max(1.0);
    assert!(rel <= TOL, "{what}: relative max diff {rel:e} > {TOL:e}");
    rel
}

/// (batch, input channels, output channels, height, width): H, W not multiples of 4, batch 1, 3 and 8, 32–128
/// channels (Winograd's domain starts at 32 channels and 32 tiles; the unit tests in `conv/winograd.rs` cover 5 and
/// 7 channels and single tiles).
const SHAPES: &[[usize; 5]] = &[
    [1, 32, 32, 26, 23],
    [3, 32, 48, 13, 11],
    [3, 64, 128, 14, 14],
    [3, 32, 40, 56, 56],
    [8, 128, 64, 7, 7],
    [1, 64, 32, 56, 56],
    [2, 48, 32, 17, 21],
];

fn reference(x: &Tensor, w: &Tensor) -> Tensor {
    x.conv2d(w, 1, 1, 1, 1).unwrap()
}

#[test]
fn winograd_forward_matches_candle_with_bias_and_epilogues() {
    let mut rng = ChaCha8Rng::seed_from_u64(20);
    let mut worst = 0f32;
    for &[n, c, co, h, w] in SHAPES {
        assert!(winograd_applies(&[n, c, h, w], &[co, c, 3, 3], 1, [1; 4]));
        let x = rand_t(&[n, c, h, w], &mut rng);
        let wt = rand_t(&[co, c, 3, 3], &mut rng);
        let b = rand_t(&[co], &mut rng);
        let plain = reference(&x, &wt);
        let what = format!("{n}×{c}×{h}×{w} → {co}");
        worst = worst.max(check(&what, &conv2d(&x, &wt, 1, [1; 4]).unwrap(), &plain));
        let biased = plain.broadcast_add(&b.reshape((1, co, 1, 1)).unwrap()).unwrap();
        for (act, want) in [
            (Epilogue::None, biased.clone()),
            (Epilogue::Relu, biased.relu().unwrap()),
            (Epilogue::Relu6, (&biased * 0.5).unwrap().clamp(0f32, 6f32).unwrap()),
        ] {
            // ReLU6 on half the scale so that values fall below 0, inside (0, 6) and above 6.
            let (xs, bs) = if act == Epilogue::Relu6 {
                ((&x * 0.5).unwrap(), (&b * 0.5).unwrap())
            } else {
                (x.clone(), b.clone())
            };
            let ours = conv2d_bias_act(&xs, &wt, &bs, 1, [1; 4], act).unwrap();
            worst = worst.max(check(&format!("{what} {act:?}"), &ours, &want));
        }
    }
    println!("forward: worst relative error {worst:e}");
}

#[test]
fn winograd_gradients_match_candle() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let mut worst = 0f32;
    for &[n, c, co, h, w] in SHAPES {
        let x = Var::from_tensor(&rand_t(&[n, c, h, w], &mut rng)).unwrap();
        let wt = Var::from_tensor(&rand_t(&[co, c, 3, 3], &mut rng)).unwrap();
        let r = rand_t(&[n, co, h, w], &mut rng);
        let g = (conv2d(x.as_tensor(), wt.as_tensor(), 1, [1; 4]).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g_ref = (reference(x.as_tensor(), wt.as_tensor()) * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (name, v) in [("dx", &x), ("dw", &wt)] {
            let what = format!("{n}×{c}×{h}×{w} → {co}: {name}");
            let rel = check(&what, g.get(v.as_tensor()).unwrap(), g_ref.get(v.as_tensor()).unwrap());
            worst = worst.max(rel);
        }
    }
    println!("gradients: worst relative error {worst:e}");
}

/// Central differences of the loss Σ r ⊙ conv(x, w) (linear in each argument, so exact up to rounding for any
/// step) against the Winograd gradients on a few entries of x and w.
#[test]
fn winograd_gradients_match_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    let (xd, wd) = ([2, 32, 13, 14], [32, 32, 3, 3]);
    let x = Var::from_tensor(&rand_t(&xd, &mut rng)).unwrap();
    let w = Var::from_tensor(&rand_t(&wd, &mut rng)).unwrap();
    assert!(winograd_applies(&xd, &wd, 1, [1; 4]));
    let r = rand_t(&[2, 32, 13, 14], &mut rng);
    let loss = |x: &Tensor, w: &Tensor| -> f64 {
        let y: Vec<f32> = conv2d(x, w, 1, [1; 4])
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let r: Vec<f32> = r.flatten_all().unwrap().to_vec1().unwrap();
        y.iter().zip(&r).map(|(a, b)| *a as f64 * *b as f64).sum()
    };
    let g = (conv2d(x.as_tensor(), w.as_tensor(), 1, [1; 4]).unwrap() * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let h = 0.5f32;
    for (is_x, var, dims) in [(true, &x, &xd[..]), (false, &w, &wd[..])] {
        let vals: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let grad: Vec<f32> = g
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // Corners, edges and the interior of x; first, middle and last taps of w.
        for i in [0, 5, vals.len() / 2 + 3, vals.len() - 1] {
            let at = |delta: f32| {
                let mut v = vals.clone();
                v[i] += delta;
                let t = Tensor::from_vec(v, dims, &Device::Cpu).unwrap();
                if is_x {
                    loss(&t, w.as_tensor())
                } else {
                    loss(x.as_tensor(), &t)
                }
            };
            let fd = (at(h) - at(-h)) / (2.0 * h as f64);
            let name = if is_x { "dx" } else { "dw" };
            assert!(
                (fd - grad[i] as f64).abs() < 1e-3 * (1.0 + fd.abs()),
                "{name}[{i}] {} vs finite difference {fd}",
                grad[i]
            );
        }
    }
}

/// Shapes outside Winograd's domain keep the im2col path.
#[test]
fn winograd_applies_only_to_3x3_stride_1_pad_1_with_enough_channels() {
    assert!(winograd_applies(&[16, 64, 56, 56], &[64, 64, 3, 3], 1, [1; 4]));
    assert!(!winograd_applies(&[16, 64, 56, 56], &[128, 64, 3, 3], 2, [1; 4]));
    assert!(!winograd_applies(&[16, 3, 224, 224], &[64, 3, 7, 7], 2, [3; 4]));
    assert!(!winograd_applies(&[16, 64, 56, 56], &[64, 64, 1, 1], 1, [0; 4]));
    assert!(!winograd_applies(&[16, 64, 56, 56], &[64, 64, 3, 3], 1, [0; 4]));
    assert!(!winograd_applies(&[2, 3, 9, 11], &[4, 3, 3, 3], 1, [1; 4]));
    assert!(!winograd_applies(&[16, 16, 112, 112], &[16, 16, 3, 3], 1, [1; 4]));
    // Too few tiles to repay the weight transform: 4 and 16 tiles; 32 tiles are enough.
    assert!(!winograd_applies(&[1, 512, 7, 7], &[512, 512, 3, 3], 1, [1; 4]));
    assert!(!winograd_applies(&[1, 256, 14, 14], &[256, 256, 3, 3], 1, [1; 4]));
    assert!(winograd_applies(&[8, 512, 7, 7], &[512, 512, 3, 3], 1, [1; 4]));
    assert!(winograd_applies(&[1, 64, 56, 56], &[64, 64, 3, 3], 1, [1; 4]));
}

/// Maps smaller than one tile (1×1, 2×3, 5×1, 3×6), over batches with enough tiles: values and both gradients.
#[test]
fn winograd_handles_maps_smaller_than_a_tile() {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    for &[n, h, w] in &[[32, 1, 1], [32, 2, 3], [32, 5, 1], [16, 3, 6]] {
        assert!(winograd_applies(&[n, 32, h, w], &[40, 32, 3, 3], 1, [1; 4]));
        let x = Var::from_tensor(&rand_t(&[n, 32, h, w], &mut rng)).unwrap();
        let wt = Var::from_tensor(&rand_t(&[40, 32, 3, 3], &mut rng)).unwrap();
        let r = rand_t(&[n, 40, h, w], &mut rng);
        let ours = conv2d(x.as_tensor(), wt.as_tensor(), 1, [1; 4]).unwrap();
        let want = reference(x.as_tensor(), wt.as_tensor());
        check(&format!("{n}×32×{h}×{w}"), &ours, &want);
        let g = (ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g_ref = (want * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, v) in [("dx", &x), ("dw", &wt)] {
            let what = format!("{n}×32×{h}×{w}: {name}");
            check(&what, g.get(v.as_tensor()).unwrap(), g_ref.get(v.as_tensor()).unwrap());
        }
    }
}
