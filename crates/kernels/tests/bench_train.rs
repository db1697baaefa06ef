//! Timings of the training ops of MBConv blocks at EfficientNet-B0's shapes (batch 16): BatchNorm + SiLU forward and
//! backward, and the NCHW depthwise convolution forward and backward (ignored; run with `--ignored --nocapture`).
//! Nothing about speed is asserted, only that the backward produced gradients of the right shapes.

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use kernels::conv::batch_norm_act_train;
use kernels::ops::depthwise_conv2d;
use kernels::Activation;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn randn(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Best of `reps` wall-clock runs of `f` after a warm-up, in milliseconds.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

/// Forward and forward+backward times of `f` on `x` (a variable), with a random output weighting.
fn fwd_bwd(x: &Tensor, params: &[&Tensor], f: impl Fn(&Tensor) -> Tensor) -> (f64, f64) {
    let xv = Var::from_tensor(x).unwrap();
    let y = f(xv.as_tensor());
    let w = randn(&mut ChaCha8Rng::seed_from_u64(9), y.dims());
    let fwd = time(5, || {
        f(&x.detach());
    });
    let both = time(5, || {
        let y = f(xv.as_tensor());
        let grads = (y * &w).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(grads.get(xv.as_tensor()).unwrap().dims(), x.dims());
        for p in params {
            assert_eq!(grads.get(p).unwrap().dims(), p.dims());
        }
    });
    (fwd, both)
}

#[test]
#[ignore]
fn bench_mbconv_training_ops() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    println!("op (batch 16)                      forward ms   fwd+bwd ms");
    for &(c, hw) in &[(96usize, 112usize), (144, 56), (240, 28), (672, 14)] {
        let x = randn(&mut rng, &[16, c, hw, hw]);
        let gamma = Var::from_tensor(&randn(&mut rng, &[c])).unwrap();
        let beta = Var::from_tensor(&randn(&mut rng, &[c])).unwrap();
        let (g, b) = (gamma.as_tensor().clone(), beta.as_tensor().clone());
        let (f, fb) = fwd_bwd(&x, &[&g, &b], |x| {
            batch_norm_act_train(x, &g, &b, 1e-5, Activation::Silu)
                .unwrap()
                .unwrap()
                .0
        });
        println!("bn+silu {c:>4}×{hw:>3}²                   {f:>8.2}   {fb:>8.2}");
    }
    for &(c, hw, k, s) in &[
        (96usize, 112usize, 3usize, 2usize),
        (144, 56, 3, 1),
        (144, 56, 5, 2),
        (240, 28, 5, 1),
        (672, 14, 5, 1),
    ] {
        let x = randn(&mut rng, &[16, c, hw, hw]);
        let w = Var::from_tensor(&randn(&mut rng, &[c, 1, k, k])).unwrap();
        let wt = w.as_tensor().clone();
        let p = k / 2;
        let (f, fb) = fwd_bwd(&x, &[&wt], |x| depthwise_conv2d(x, &wt, s, [p, p, p, p]).unwrap());
        println!("depthwise {c:>4}×{hw:>3}² k{k} s{s}            {f:>8.2}   {fb:>8.2}");
    }
}
