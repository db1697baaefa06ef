//! BatchNorm folding is exact: conv with the folded parameters equals conv then the eval-mode BatchNorm.

use candle_core::{DType, Device, Tensor};
use kernels::ops::depthwise_conv2d;
use kernels::{fold_bn, BatchNormStats};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn uniform(rng: &mut ChaCha8Rng, shape: &[usize], lo: f64, hi: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.gen_range(lo..hi)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
}

fn randn(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    uniform(rng, shape, -1.0, 1.0)
}

/// Random BatchNorm statistics for `c` channels (positive variances).
fn stats(rng: &mut ChaCha8Rng, c: usize, eps: f64) -> BatchNormStats {
    BatchNormStats {
        gamma: randn(rng, &[c]),
        beta: randn(rng, &[c]),
        mean: randn(rng, &[c]),
        var: uniform(rng, &[c], 0.2, 2.0),
        eps,
    }
}

/// Eval-mode BatchNorm written out: (y − mean) / √(var + ε) · γ + β.
fn batch_norm(y: &Tensor, bn: &BatchNormStats) -> Tensor {
    let c = bn.gamma.dim(0).unwrap();
    let r = |t: &Tensor| t.reshape((1, c, 1, 1)).unwrap();
    let std = (&bn.var + bn.eps).unwrap().sqrt().unwrap();
    y.broadcast_sub(&r(&bn.mean))
        .unwrap()
        .broadcast_div(&r(&std))
        .unwrap()
        .broadcast_mul(&r(&bn.gamma))
        .unwrap()
        .broadcast_add(&r(&bn.beta))
        .unwrap()
}

fn add_bias(y: &Tensor, b: &Tensor) -> Tensor {
    let c = b.dim(0).unwrap();
    y.broadcast_add(&b.reshape((1, c, 1, 1)).unwrap()).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap()
}

#[test]
fn scale_and_shift_follow_the_formula() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let bn = stats(&mut rng, 7, 1e-3);
    let (scale, shift) = bn.scale_shift().unwrap();
    let v = |t: &Tensor| t.to_vec1::<f32>().unwrap();
    let (g, b, m, var) = (v(&bn.gamma), v(&bn.beta), v(&bn.mean), v(&bn.var));
    for (i, (s, t)) in v(&scale).into_iter().zip(v(&shift)).enumerate() {
        let want_s = g[i] as f64 / (var[i] as f64 + 1e-3).sqrt();
        let want_t = b[i] as f64 - m[i] as f64 * want_s;
        assert!((s as f64 - want_s).abs() < 1e-5, "scale {i}: {s} vs {want_s}");
        assert!((t as f64 - want_t).abs() < 1e-5, "shift {i}: {t} vs {want_t}");
    }
}

#[test]
fn folded_conv_equals_conv_then_batchnorm() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = randn(&mut rng, &[2, 4, 9, 9]);
    let w = randn(&mut rng, &[6, 4, 3, 3]);
    let bn = stats(&mut rng, 6, 1e-5);
    for bias in [None, Some(randn(&mut rng, &[6]))] {
        let (fw, fb) = fold_bn(&w, bias.as_ref(), &bn).unwrap();
        let mut y = x.conv2d(&w, 1, 2, 1, 1).unwrap();
        if let Some(b) = &bias {
            y = add_bias(&y, b);
        }
        let want = batch_norm(&y, &bn);
        let got = add_bias(&x.conv2d(&fw, 1, 2, 1, 1).unwrap(), &fb);
        let d = max_diff(&got, &want);
        assert!(d < 1e-4, "max diff {d}");
    }
}

#[test]
fn folding_a_depthwise_conv_and_shape_errors() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let x = randn(&mut rng, &[2, 5, 8, 8]);
    let w = randn(&mut rng, &[5, 1, 5, 5]);
    let bn = stats(&mut rng, 5, 1e-3);
    let (fw, fb) = fold_bn(&w, None, &bn).unwrap();
    let want = batch_norm(&depthwise_conv2d(&x, &w, 2, [1, 2, 1, 2]).unwrap(), &bn);
    let got = add_bias(&depthwise_conv2d(&x, &fw, 2, [1, 2, 1, 2]).unwrap(), &fb);
    assert!(max_diff(&got, &want) < 1e-4);
    let wrong = BatchNormStats {
        gamma: randn(&mut rng, &[4]),
        ..bn.clone()
    };
    assert!(fold_bn(&w, None, &wrong).is_err(), "gamma of the wrong length");
    assert!(
        fold_bn(&w, Some(&randn(&mut rng, &[6])), &bn).is_err(),
        "bias of the wrong length"
    );
}
