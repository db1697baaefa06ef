//! Timings of the custom ops against candle's own (ignored; run with `--ignored --nocapture`). Nothing is asserted
//! about speed, only that both paths agree.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use kernels::ops::{depthwise_conv2d, depthwise_conv2d_nhwc, max_pool2d};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn randn(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Wall-clock time of one run of `f`, in milliseconds (for the slow references).
fn once(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e3
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

fn grouped(x: &Tensor, w: &Tensor, s: usize, p: usize) -> Tensor {
    x.conv2d(w, p, s, 1, x.dim(1).unwrap()).unwrap()
}

#[test]
#[ignore]
fn bench_depthwise_and_maxpool() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for &(n, c, h, k, s) in &[
        (16, 32, 112, 3, 1),
        (16, 144, 56, 3, 1),
        (16, 240, 28, 5, 2),
        (16, 672, 14, 5, 1),
    ] {
        let p = k / 2;
        let x = randn(&mut rng, &[n, c, h, h]);
        let w = randn(&mut rng, &[c, 1, k, k]);
        let ours = depthwise_conv2d(&x, &w, s, [p; 4]).unwrap();
        let theirs = grouped(&x, &w, s, p);
        let d: f32 = (&ours - &theirs)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(d < 1e-4);
        let reps = 5;
        let f_old = once(|| drop(grouped(&x, &w, s, p)));
        let f_new = time(reps, || drop(depthwise_conv2d(&x, &w, s, [p; 4]).unwrap()));
        let (xv, wv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&w).unwrap());
        let r = randn(&mut rng, ours.dims());
        let b_old = once(|| {
            let l = (grouped(xv.as_tensor(), wv.as_tensor(), s, p) * &r)
                .unwrap()
                .sum_all()
                .unwrap();
            drop(l.backward().unwrap());
        });
        let b_new = time(reps, || {
            let y = depthwise_conv2d(xv.as_tensor(), wv.as_tensor(), s, [p; 4]).unwrap();
            drop((y * &r).unwrap().sum_all().unwrap().backward().unwrap());
        });
        // The autograd overhead of the loss itself, with a slice in place of the convolution.
        let (ho, wo) = (ours.dim(2).unwrap(), ours.dim(3).unwrap());
        let base = time(reps, || {
            let y = xv.as_tensor().narrow(2, 0, ho).unwrap().narrow(3, 0, wo).unwrap();
            drop((y * &r).unwrap().sum_all().unwrap().backward().unwrap());
        });
        println!(
            "depthwise {n}x{c}x{h}x{h} k{k} s{s}: forward grouped {f_old:.1} ms -> ours {f_new:.1} ms; \
             forward+backward grouped {b_old:.1} ms -> ours {b_new:.1} ms \
             (loss autograd overhead alone: {base:.1} ms)"
        );
    }
    let x = randn(&mut rng, &[16, 64, 112, 112]);
    let reference = |x: &Tensor| {
        x.pad_with_same(2, 1, 1)
            .unwrap()
            .pad_with_same(3, 1, 1)
            .unwrap()
            .max_pool2d_with_stride(3, 2)
            .unwrap()
    };
    let ours = max_pool2d(&x, 3, 2, 1).unwrap();
    let d: f32 = (&ours - reference(&x))
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(d, 0.0);
    let f_old = time(5, || drop(reference(&x)));
    let f_new = time(5, || drop(max_pool2d(&x, 3, 2, 1).unwrap()));
    let xv = Var::from_tensor(&x).unwrap();
    let r = randn(&mut rng, ours.dims());
    let b_new = time(5, || {
        let y = max_pool2d(xv.as_tensor(), 3, 2, 1).unwrap();
        drop((y * &r).unwrap().sum_all().unwrap().backward().unwrap());
    });
    println!(
        "max_pool 16x64x112x112 3/2/1: forward candle {f_old:.1} ms -> ours {f_new:.1} ms; ours forward+backward \
         {b_new:.1} ms (candle has no backward)"
    );
    let _ = DType::F32;
}

/// Best-of-`reps` milliseconds of `f(x)` forward and of the backward of `Σ f(x) ⊙ w` alone (the same `⊙ w` and sum
/// backward on both sides of a comparison), and that output.
fn fwd_bwd(reps: usize, x: &Tensor, w: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> (f64, f64, Tensor) {
    let v = Var::from_tensor(x).unwrap();
    let fwd = time(reps, || {
        f(v.as_tensor());
    });
    let bwd = (0..=reps)
        .map(|_| {
            let loss = (f(v.as_tensor()) * w).unwrap().sum_all().unwrap();
            once(|| {
                loss.backward().unwrap();
            })
        })
        .skip(1)
        .fold(f64::INFINITY, f64::min);
    (fwd, bwd, f(v.as_tensor()))
}

#[test]
#[ignore]
fn bench_layer_norm_softmax_gelu() {
    use kernels::ops::{gelu_erf, layer_norm, layer_norm_composed, softmax_last_dim, softmax_last_dim_composed};
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let report = |name: &str, ours: (f64, f64, Tensor), theirs: (f64, f64, Tensor)| {
        let d: f32 = (&ours.2 - &theirs.2)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(d < 1e-4, "{name}: outputs differ by {d}");
        println!(
            "{name:<40} fwd {:7.2} ms vs {:7.2} ms   bwd {:7.2} ms vs {:7.2} ms",
            ours.0, theirs.0, ours.1, theirs.1
        );
    };
    // ViT-Tiny at batch 32: LayerNorm of 192, softmax of 197 keys × 3 heads, GELU of the 768-wide MLP.
    let x = randn(&mut rng, &[32, 197, 192]);
    let g = (randn(&mut rng, &[192]) + 1.0).unwrap();
    let b = randn(&mut rng, &[192]);
    let w = randn(&mut rng, &[32, 197, 192]);
    report(
        "layer_norm 32×197×192",
        fwd_bwd(5, &x, &w, |x| layer_norm(x, &g, &b, 1e-6).unwrap()),
        fwd_bwd(5, &x, &w, |x| layer_norm_composed(x, &g, &b, 1e-6).unwrap()),
    );
    // Inference: candle's no-gradient fused layer norm (`LayerNorm::forward_fused`) is the composition's fast path.
    let fused = time(5, || {
        candle_nn::ops::layer_norm(&x, &g, &b, 1e-6).unwrap();
    });
    let ours = time(5, || {
        layer_norm(&x, &g, &b, 1e-6).unwrap();
    });
    println!(
        "{:<40} fwd {ours:7.2} ms vs {fused:7.2} ms (candle's fused, no gradient)",
        "layer_norm inference"
    );
    let x = (randn(&mut rng, &[32, 3, 197, 197]) * 8.0).unwrap();
    let w = randn(&mut rng, &[32, 3, 197, 197]);
    report(
        "softmax_last_dim 32×3×197×197",
        fwd_bwd(5, &x, &w, |x| softmax_last_dim(x).unwrap()),
        fwd_bwd(5, &x, &w, |x| softmax_last_dim_composed(x).unwrap()),
    );
    let x = (randn(&mut rng, &[32, 197, 768]) * 3.0).unwrap();
    let w = randn(&mut rng, &[32, 197, 768]);
    report(
        "gelu_erf 32×197×768",
        fwd_bwd(5, &x, &w, |x| gelu_erf(x).unwrap()),
        fwd_bwd(5, &x, &w, |x| x.gelu_erf().unwrap()),
    );
    // ConvNeXt-Atto's LayerNorm2d at batch 32: NHWC through the fused op vs plain ops over the channel axis.
    let x = randn(&mut rng, &[32, 40, 56, 56]);
    let g = (randn(&mut rng, &[40]) + 1.0).unwrap();
    let b = randn(&mut rng, &[40]);
    let w = randn(&mut rng, &[32, 40, 56, 56]);
    let nchw_plain = |x: &Tensor| {
        let mean = x.mean_keepdim(1).unwrap();
        let xc = x.broadcast_sub(&mean).unwrap();
        let var = xc.sqr().unwrap().mean_keepdim(1).unwrap();
        let y = xc.broadcast_div(&(var + 1e-6).unwrap().sqrt().unwrap()).unwrap();
        y.broadcast_mul(&g.reshape((1, 40, 1, 1)).unwrap())
            .unwrap()
            .broadcast_add(&b.reshape((1, 40, 1, 1)).unwrap())
            .unwrap()
    };
    let nchw_fused = |x: &Tensor| {
        let y = layer_norm(&x.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap(), &g, &b, 1e-6).unwrap();
        y.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap()
    };
    report(
        "layer_norm2d 32×40×56×56 (permuted)",
        fwd_bwd(5, &x, &w, nchw_fused),
        fwd_bwd(5, &x, &w, nchw_plain),
    );
}

/// ConvNeXt-atto's 7×7 depthwise convolutions at batch 16: the NCHW op against the channels-last one.
#[test]
#[ignore]
fn bench_depthwise_nhwc() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for &(n, c, h) in &[(16, 40, 56), (16, 80, 28), (16, 160, 14), (16, 320, 7)] {
        let x = randn(&mut rng, &[n, c, h, h]);
        let xl = x.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
        let w = randn(&mut rng, &[c, 1, 7, 7]);
        let ours = depthwise_conv2d_nhwc(&xl, &w, 1, [3; 4]).unwrap();
        let theirs = depthwise_conv2d(&x, &w, 1, [3; 4])
            .unwrap()
            .permute((0, 2, 3, 1))
            .unwrap();
        let d: f32 = (&ours - &theirs)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(d < 1e-4);
        let reps = 5;
        let f_nchw = time(reps, || drop(depthwise_conv2d(&x, &w, 1, [3; 4]).unwrap()));
        let f_nhwc = time(reps, || drop(depthwise_conv2d_nhwc(&xl, &w, 1, [3; 4]).unwrap()));
        let wv = Var::from_tensor(&w).unwrap();
        let (xv, xlv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&xl).unwrap());
        let r = randn(&mut rng, &[n, c, h, h]);
        let rl = r.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
        let b_nchw = time(reps, || {
            let y = depthwise_conv2d(xv.as_tensor(), wv.as_tensor(), 1, [3; 4]).unwrap();
            drop((y * &r).unwrap().sum_all().unwrap().backward().unwrap());
        });
        let b_nhwc = time(reps, || {
            let y = depthwise_conv2d_nhwc(xlv.as_tensor(), wv.as_tensor(), 1, [3; 4]).unwrap();
            drop((y * &rl).unwrap().sum_all().unwrap().backward().unwrap());
        });
        println!(
            "depthwise 7x7 {n}x{h}x{h}x{c}: forward NCHW {f_nchw:.1} ms -> NHWC {f_nhwc:.1} ms; \
             forward+backward NCHW {b_nchw:.1} ms -> NHWC {b_nhwc:.1} ms"
        );
    }
}

/// ResNet-18's 3×3 stride-1 convolutions at batch 16 (and near the crossovers: narrower ones, smaller batches):
/// im2col + GEMM against Winograd F(4×4, 3×3), forward, input gradient alone and weight gradient alone.
#[test]
#[ignore]
fn bench_winograd_resnet18() {
    use kernels::conv::{conv2d, conv2d_im2col};
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let reps = 5;
    for &(n, c, h) in &[
        (16, 64, 56),
        (16, 128, 28),
        (16, 256, 14),
        (16, 512, 7),
        (16, 16, 112),
        (16, 32, 56),
        (1, 512, 7),
        (4, 512, 7),
        (1, 256, 14),
        (1, 64, 56),
    ] {
        let x = randn(&mut rng, &[n, c, h, h]);
        let w = (randn(&mut rng, &[c, c, 3, 3]) * 0.05).unwrap();
        let r = randn(&mut rng, &[n, c, h, h]);
        let d: f32 = (conv2d(&x, &w, 1, [1; 4]).unwrap() - conv2d_im2col(&x, &w, 1, [1; 4]).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(d < 1e-3, "outputs differ by {d}");
        type Conv = fn(&Tensor, &Tensor, usize, [usize; 4]) -> candle_core::Result<Tensor>;
        let mut row = Vec::new();
        for f in [conv2d_im2col as Conv, conv2d as Conv] {
            let fwd = time(reps, || drop(f(&x, &w, 1, [1; 4]).unwrap()));
            let (xv, wv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&w).unwrap());
            // Backward alone, one gradient at a time: the loss is built outside the timed closure.
            let bwd = |a: &Tensor, b: &Tensor| {
                (0..=reps)
                    .map(|_| {
                        let loss = (f(a, b, 1, [1; 4]).unwrap() * &r).unwrap().sum_all().unwrap();
                        once(|| drop(loss.backward().unwrap()))
                    })
                    .skip(1)
                    .fold(f64::INFINITY, f64::min)
            };
            row.push((fwd, bwd(xv.as_tensor(), &w), bwd(&x, wv.as_tensor())));
        }
        // The autograd overhead of the loss itself (⊙ r, sum) with the input in place of the convolution.
        let xv = Var::from_tensor(&x).unwrap();
        let base = (0..=reps)
            .map(|_| {
                let loss = (xv.as_tensor() * &r).unwrap().sum_all().unwrap();
                once(|| drop(loss.backward().unwrap()))
            })
            .skip(1)
            .fold(f64::INFINITY, f64::min);
        let ((f0, dx0, dw0), (f1, dx1, dw1)) = (row[0], row[1]);
        println!(
            "conv3x3 {n}x{c}x{h}x{h}: forward im2col {f0:6.1} ms -> winograd {f1:6.1} ms; dx {dx0:6.1} -> {dx1:6.1} ms; \
             dw {dw0:6.1} -> {dw1:6.1} ms (backward times include {base:.1} ms of loss autograd)"
        );
    }
}
