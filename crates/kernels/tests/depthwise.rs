//! The CPU depthwise convolution against candle's grouped convolution (forward and backward) and finite differences.

use candle_core::{DType, Device, Tensor, Var};
use kernels::ops::depthwise_conv2d;
use kernels::Padding;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn randn(rng: &mut ChaCha8Rng, shape: &[usize], dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// candle's grouped convolution on an explicitly zero-padded input.
fn reference(x: &Tensor, w: &Tensor, stride: usize, pad: [usize; 4]) -> Tensor {
    let c = x.dim(1).unwrap();
    x.pad_with_zeros(2, pad[0], pad[1])
        .unwrap()
        .pad_with_zeros(3, pad[2], pad[3])
        .unwrap()
        .conv2d(w, 0, stride, 1, c)
        .unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// One case: (n, c, h, w, k, stride, pad).
type Case = (usize, usize, usize, usize, usize, usize, [usize; 4]);

/// Every configuration of the grid.
fn grid() -> Vec<Case> {
    let mut cases = Vec::new();
    // Widths past 16 and 32 reach the forward's full register blocks as well as its tails.
    for &(h, w) in &[(7, 7), (8, 8), (9, 6), (12, 11), (6, 37), (5, 70)] {
        for k in [3, 5] {
            for stride in [1, 2] {
                for padding in [Padding::Symmetric(k / 2), Padding::Symmetric(0), Padding::TfSame] {
                    let pad = padding.amounts(h, w, k, stride, 1);
                    cases.push((2, 3, h, w, k, stride, pad));
                }
            }
        }
    }
    cases
}

#[test]
fn forward_matches_grouped_conv() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut asymmetric = 0;
    for (n, c, h, w, k, s, pad) in grid() {
        asymmetric += usize::from(pad[0] != pad[1] || pad[2] != pad[3]);
        let x = randn(&mut rng, &[n, c, h, w], DType::F32);
        let wt = randn(&mut rng, &[c, 1, k, k], DType::F32);
        let got = depthwise_conv2d(&x, &wt, s, pad).unwrap();
        let want = reference(&x, &wt, s, pad);
        let d = max_diff(&got, &want);
        assert!(d < 1e-4, "h={h} w={w} k={k} s={s} pad={pad:?}: max diff {d}");
    }
    assert!(asymmetric > 0, "the grid must exercise asymmetric (TF-SAME) padding");
}

#[test]
fn forward_handles_f64_half_and_non_contiguous_inputs() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let pad = Padding::TfSame.amounts(10, 9, 5, 2, 1);
    let x = randn(&mut rng, &[2, 4, 10, 9], DType::F64);
    let wt = randn(&mut rng, &[4, 1, 5, 5], DType::F64);
    let want = reference(&x, &wt, 2, pad);
    assert!(max_diff(&depthwise_conv2d(&x, &wt, 2, pad).unwrap(), &want) < 1e-12);

    // N×C×W×H transposed to N×C×H×W: a strided view.
    let xt = x
        .transpose(2, 3)
        .unwrap()
        .contiguous()
        .unwrap()
        .transpose(2, 3)
        .unwrap();
    assert!(!xt.is_contiguous());
    assert!(max_diff(&depthwise_conv2d(&xt, &wt, 2, pad).unwrap(), &want) < 1e-12);

    let xh = x.to_dtype(DType::BF16).unwrap();
    let wh = wt.to_dtype(DType::BF16).unwrap();
    let got = depthwise_conv2d(&xh, &wh, 2, pad).unwrap();
    assert_eq!(got.dtype(), DType::BF16);
    assert!(max_diff(&got.to_dtype(DType::F64).unwrap(), &want) < 0.1);
}

#[test]
fn bad_weight_shape_is_an_error() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x = randn(&mut rng, &[1, 3, 6, 6], DType::F32);
    let wt = randn(&mut rng, &[4, 1, 3, 3], DType::F32);
    assert!(depthwise_conv2d(&x, &wt, 1, [1; 4]).is_err());
    let wt = randn(&mut rng, &[3, 1, 9, 9], DType::F32);
    assert!(
        depthwise_conv2d(&x, &wt, 1, [0; 4]).is_err(),
        "kernel larger than the padded input"
    );
}

/// Gradients of `sum(f(x, w) · r)` for x and w.
fn grads(f: impl Fn(&Tensor, &Tensor) -> Tensor, x: &Tensor, w: &Tensor, r: &Tensor) -> (Tensor, Tensor) {
    let xv = Var::from_tensor(x).unwrap();
    let wv = Var::from_tensor(w).unwrap();
    let loss = (f(xv.as_tensor(), wv.as_tensor()) * r).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    (
        g.get(xv.as_tensor()).unwrap().clone(),
        g.get(wv.as_tensor()).unwrap().clone(),
    )
}

#[test]
fn backward_matches_grouped_conv_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut compared = 0;
    for (n, c, h, w, k, s, pad) in grid() {
        // candle's conv2d backward derives the output padding of both axes from the height alone, so it fails on
        // non-square padded inputs; those cases are covered by the finite-difference test.
        if h + pad[0] + pad[1] != w + pad[2] + pad[3] {
            continue;
        }
        compared += 1;
        let x = randn(&mut rng, &[n, c, h, w], DType::F32);
        let wt = randn(&mut rng, &[c, 1, k, k], DType::F32);
        let out = reference(&x, &wt, s, pad);
        let r = randn(&mut rng, out.dims(), DType::F32);
        let (gx, gw) = grads(|x, w| depthwise_conv2d(x, w, s, pad).unwrap(), &x, &wt, &r);
        let (rx, rw) = grads(|x, w| reference(x, w, s, pad), &x, &wt, &r);
        let (dx, dw) = (max_diff(&gx, &rx), max_diff(&gw, &rw));
        assert!(
            dx < 1e-4 && dw < 1e-3,
            "h={h} w={w} k={k} s={s} pad={pad:?}: dx {dx} dw {dw}"
        );
    }
    assert!(compared >= 12, "only {compared} cases compared");
}

#[test]
fn backward_matches_finite_differences_f64() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (k, s, padding) in [
        (3, 2, Padding::TfSame),
        (3, 1, Padding::Symmetric(1)),
        (5, 2, Padding::Symmetric(2)),
    ] {
        let (h, w) = (6, 5);
        let pad = padding.amounts(h, w, k, s, 1);
        let x = randn(&mut rng, &[2, 2, h, w], DType::F64);
        let wt = randn(&mut rng, &[2, 1, k, k], DType::F64);
        let r = randn(&mut rng, depthwise_conv2d(&x, &wt, s, pad).unwrap().dims(), DType::F64);
        let loss = |x: &Tensor, w: &Tensor| -> f64 {
            (depthwise_conv2d(x, w, s, pad).unwrap() * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        let (gx, gw) = grads(|x, w| depthwise_conv2d(x, w, s, pad).unwrap(), &x, &wt, &r);
        let eps = 1e-6;
        let numeric = |t: &Tensor, perturb: &dyn Fn(&Tensor) -> f64| -> Vec<f64> {
            let v: Vec<f64> = t.flatten_all().unwrap().to_vec1().unwrap();
            (0..v.len())
                .map(|i| {
                    let mut p = v.clone();
                    p[i] += eps;
                    let up = perturb(&Tensor::from_vec(p.clone(), t.dims(), &Device::Cpu).unwrap());
                    p[i] -= 2.0 * eps;
                    let down = perturb(&Tensor::from_vec(p, t.dims(), &Device::Cpu).unwrap());
                    (up - down) / (2.0 * eps)
                })
                .collect()
        };
        let nx = numeric(&x, &|xp| loss(xp, &wt));
        let nw = numeric(&wt, &|wp| loss(&x, wp));
        for (analytic, numeric, what) in [(gx, nx, "x"), (gw, nw, "w")] {
            let a: Vec<f64> = analytic.flatten_all().unwrap().to_vec1().unwrap();
            assert!(
                a.iter().any(|v| v.abs() > 1e-3),
                "gradient for {what} is trivially zero"
            );
            for (i, (a, n)) in a.iter().zip(&numeric).enumerate() {
                assert!(
                    (a - n).abs() < 1e-6,
                    "k={k} s={s} grad {what}[{i}]: analytic {a} numeric {n}"
                );
            }
        }
    }
}
