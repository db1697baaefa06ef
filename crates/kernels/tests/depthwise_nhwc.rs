//! The channels-last depthwise convolution against the NCHW one on permuted tensors (values and both gradients),
//! and against finite differences in f64.

use candle_core::{DType, Device, Tensor, Var};
use kernels::ops::{depthwise_conv2d, depthwise_conv2d_nhwc};
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

fn max_abs(a: &Tensor) -> f64 {
    a.abs()
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

/// The NCHW depthwise convolution of the NHWC `x`, returned NHWC.
fn reference(x: &Tensor, w: &Tensor, stride: usize, pad: [usize; 4]) -> Tensor {
    depthwise_conv2d(&x.permute((0, 3, 1, 2)).unwrap(), w, stride, pad)
        .unwrap()
        .permute((0, 2, 3, 1))
        .unwrap()
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

/// One case: (n, h, w, c, k, stride, pad).
type Case = (usize, usize, usize, usize, usize, usize, [usize; 4]);

/// k 3/5/7, stride 1/2, symmetric, none and asymmetric padding, C below, at and not a multiple of 16, N 1 and 3.
fn grid() -> Vec<Case> {
    let mut cases = Vec::new();
    for (i, &(h, w)) in [(7, 7), (9, 6), (12, 11)].iter().enumerate() {
        for k in [3, 5, 7] {
            for stride in [1, 2] {
                for pad in [[k / 2; 4], [0; 4], [k / 2, k / 2 + 1, k / 2 - 1, k / 2]] {
                    if h + pad[0] + pad[1] < k || w + pad[2] + pad[3] < k {
                        continue;
                    }
                    let c = [5, 16, 37][(i + k + stride) % 3];
                    let n = if (k + stride) % 2 == 0 { 1 } else { 3 };
                    cases.push((n, h, w, c, k, stride, pad));
                }
            }
        }
    }
    cases
}

#[test]
fn forward_matches_nchw_depthwise() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let grid = grid();
    assert!(grid.iter().any(|c| c.0 == 1) && grid.iter().any(|c| c.0 == 3));
    assert!(grid.iter().any(|c| c.3 % 16 != 0 && c.3 > 16));
    assert!(grid.iter().any(|c| c.4 == 7 && c.6[0] != c.6[1]));
    for (n, h, w, c, k, s, pad) in grid {
        let x = randn(&mut rng, &[n, h, w, c], DType::F32);
        let wt = randn(&mut rng, &[c, 1, k, k], DType::F32);
        let got = depthwise_conv2d_nhwc(&x, &wt, s, pad).unwrap();
        let want = reference(&x, &wt, s, pad);
        let d = max_diff(&got, &want);
        assert!(
            d < 1e-5 * (k * k) as f64,
            "n={n} h={h} w={w} c={c} k={k} s={s} pad={pad:?}: max diff {d}"
        );
    }
}

#[test]
fn backward_matches_nchw_depthwise_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for (n, h, w, c, k, s, pad) in grid() {
        let x = randn(&mut rng, &[n, h, w, c], DType::F32);
        let wt = randn(&mut rng, &[c, 1, k, k], DType::F32);
        let out = depthwise_conv2d_nhwc(&x, &wt, s, pad).unwrap();
        let r = randn(&mut rng, out.dims(), DType::F32);
        let (gx, gw) = grads(|x, w| depthwise_conv2d_nhwc(x, w, s, pad).unwrap(), &x, &wt, &r);
        let (rx, rw) = grads(|x, w| reference(x, w, s, pad), &x, &wt, &r);
        assert!(max_abs(&rx) > 0.1 && max_abs(&rw) > 0.1);
        let (dx, dw) = (max_diff(&gx, &rx), max_diff(&gw, &rw));
        assert!(
            dx < 1e-4 && dw < 1e-4 * (n * h * w) as f64,
            "n={n} h={h} w={w} c={c} k={k} s={s} pad={pad:?}: dx {dx} dw {dw}"
        );
    }
}

#[test]
fn backward_matches_finite_differences_f64() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for (k, s, pad) in [(3, 2, [0, 1, 1, 0]), (3, 1, [1; 4]), (5, 2, [2, 1, 2, 2])] {
        let (n, h, w, c) = (2, 6, 5, 3);
        let x = randn(&mut rng, &[n, h, w, c], DType::F64);
        let wt = randn(&mut rng, &[c, 1, k, k], DType::F64);
        let r = randn(
            &mut rng,
            depthwise_conv2d_nhwc(&x, &wt, s, pad).unwrap().dims(),
            DType::F64,
        );
        let loss = |x: &Tensor, w: &Tensor| -> f64 {
            (depthwise_conv2d_nhwc(x, w, s, pad).unwrap() * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        let (gx, gw) = grads(|x, w| depthwise_conv2d_nhwc(x, w, s, pad).unwrap(), &x, &wt, &r);
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

#[test]
fn only_the_needed_gradient_is_computed() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let x = randn(&mut rng, &[2, 8, 8, 20], DType::F32);
    let wt = randn(&mut rng, &[20, 1, 7, 7], DType::F32);
    let r = randn(&mut rng, &[2, 8, 8, 20], DType::F32);
    let (rx, rw) = grads(|x, w| reference(x, w, 1, [3; 4]), &x, &wt, &r);

    // Frozen weight: the input still gets its gradient.
    let xv = Var::from_tensor(&x).unwrap();
    let g = (depthwise_conv2d_nhwc(xv.as_tensor(), &wt, 1, [3; 4]).unwrap() * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(g.get(&wt).is_none());
    assert!(max_diff(g.get(xv.as_tensor()).unwrap(), &rx) < 1e-4);

    // Constant input: the weight still gets its gradient.
    let wv = Var::from_tensor(&wt).unwrap();
    let g = (depthwise_conv2d_nhwc(&x, wv.as_tensor(), 1, [3; 4]).unwrap() * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(g.get(&x).is_none());
    assert!(max_diff(g.get(wv.as_tensor()).unwrap(), &rw) < 1e-3);
}

#[test]
fn handles_f64_bf16_and_strided_inputs() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let pad = [1, 2, 2, 1];
    let x = randn(&mut rng, &[2, 10, 9, 19], DType::F64);
    let wt = randn(&mut rng, &[19, 1, 5, 5], DType::F64);
    let want = reference(&x, &wt, 2, pad);
    assert!(max_diff(&depthwise_conv2d_nhwc(&x, &wt, 2, pad).unwrap(), &want) < 1e-12);

    // The NHWC view of an NCHW tensor: strided.
    let xt = x
        .permute((0, 3, 1, 2))
        .unwrap()
        .contiguous()
        .unwrap()
        .permute((0, 2, 3, 1))
        .unwrap();
    assert!(!xt.is_contiguous());
    assert!(max_diff(&depthwise_conv2d_nhwc(&xt, &wt, 2, pad).unwrap(), &want) < 1e-12);

    let xh = x.to_dtype(DType::BF16).unwrap();
    let wh = wt.to_dtype(DType::BF16).unwrap();
    let got = depthwise_conv2d_nhwc(&xh, &wh, 2, pad).unwrap();
    assert_eq!(got.dtype(), DType::BF16);
    assert!(max_diff(&got.to_dtype(DType::F64).unwrap(), &want) < 0.1);
}

#[test]
fn bad_shapes_are_errors() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let x = randn(&mut rng, &[1, 6, 6, 3], DType::F32);
    let wt = randn(&mut rng, &[4, 1, 3, 3], DType::F32);
    let e = depthwise_conv2d_nhwc(&x, &wt, 1, [1; 4]).unwrap_err().to_string();
    assert!(e.contains("depthwise_conv2d_nhwc"), "{e}");
    let wt = randn(&mut rng, &[3, 1, 9, 9], DType::F32);
    assert!(
        depthwise_conv2d_nhwc(&x, &wt, 1, [0; 4]).is_err(),
        "kernel larger than the padded input"
    );
    let wt = randn(&mut rng, &[3, 1, 3, 3], DType::F64);
    assert!(depthwise_conv2d_nhwc(&x, &wt, 1, [1; 4]).is_err(), "dtype mismatch");
}
