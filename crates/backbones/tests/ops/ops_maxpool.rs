//! The CPU max-pool against candle's forward/backward and finite differences.

use backbones::ops::max_pool2d;
use candle_core::{DType, Device, Tensor, Var};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::support::{max_diff, randn};

/// Distinct values (a random permutation of 0..n, scaled): no ties, so the max-pool is differentiable.
fn distinct(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * 0.01 - 1.0).collect();
    v.shuffle(rng);
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// candle's max-pool on a `-inf`-padded input.
fn reference(x: &Tensor, k: usize, s: usize, p: usize) -> Tensor {
    let (n, c, h, w) = x.dims4().unwrap();
    let xp = if p > 0 {
        Tensor::full(f32::NEG_INFINITY, (n, c, h + 2 * p, w + 2 * p), &Device::Cpu)
            .unwrap()
            .to_dtype(x.dtype())
            .unwrap()
            .slice_assign(&[0..n, 0..c, p..p + h, p..p + w], x)
            .unwrap()
    } else {
        x.clone()
    };
    xp.max_pool2d_with_stride(k, s).unwrap()
}

#[test]
fn forward_matches_candle() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for &(h, w) in &[(8, 8), (9, 7), (13, 12), (1, 1)] {
        for &(k, s, p) in &[(3, 2, 1), (2, 2, 0), (3, 1, 1), (3, 3, 0), (5, 2, 2)] {
            if h + 2 * p < k || w + 2 * p < k {
                continue;
            }
            let x = randn(&mut rng, &[2, 3, h, w], DType::F32);
            let got = max_pool2d(&x, k, s, p).unwrap();
            let want = reference(&x, k, s, p);
            assert_eq!(max_diff(&got, &want), 0.0, "h={h} w={w} k={k} s={s} p={p}");
        }
    }
    // All-negative inputs: padded cells must never win.
    let x = (randn(&mut rng, &[1, 2, 5, 5], DType::F32).abs().unwrap() - 2.0).unwrap();
    let got = max_pool2d(&x, 3, 2, 1).unwrap();
    assert!(got
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|&v| v < -0.9));
}

#[test]
fn forward_handles_f64_half_non_contiguous_and_bad_padding() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let x = randn(&mut rng, &[2, 3, 9, 10], DType::F64);
    let want = reference(&x, 3, 2, 1);
    assert_eq!(max_diff(&max_pool2d(&x, 3, 2, 1).unwrap(), &want), 0.0);
    let xt = x
        .transpose(2, 3)
        .unwrap()
        .contiguous()
        .unwrap()
        .transpose(2, 3)
        .unwrap();
    assert!(!xt.is_contiguous());
    assert_eq!(max_diff(&max_pool2d(&xt, 3, 2, 1).unwrap(), &want), 0.0);
    let got = max_pool2d(&x.to_dtype(DType::F16).unwrap(), 3, 2, 1).unwrap();
    assert_eq!(got.dtype(), DType::F16);
    assert!(max_diff(&got.to_dtype(DType::F64).unwrap(), &want) < 1e-2);
    assert!(max_pool2d(&x, 3, 2, 2).is_err(), "padding above half the kernel");
}

fn grad(f: impl Fn(&Tensor) -> Tensor, x: &Tensor, r: &Tensor) -> Tensor {
    let xv = Var::from_tensor(x).unwrap();
    let loss = (f(xv.as_tensor()) * r).unwrap().sum_all().unwrap();
    loss.backward().unwrap().get(xv.as_tensor()).unwrap().clone()
}

#[test]
fn backward_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for &(k, s, p) in &[(3, 2, 1), (3, 1, 1), (2, 2, 0), (5, 2, 2)] {
        let x = distinct(&mut rng, &[2, 2, 7, 6]);
        let r = randn(&mut rng, max_pool2d(&x, k, s, p).unwrap().dims(), DType::F64);
        let g: Vec<f64> = grad(|x| max_pool2d(x, k, s, p).unwrap(), &x, &r)
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let loss = |v: &[f64]| -> f64 {
            let t = Tensor::from_slice(v, x.dims(), &Device::Cpu).unwrap();
            (max_pool2d(&t, k, s, p).unwrap() * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        let v: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
        let eps = 1e-4; // well below the 0.01 gap between distinct values
        let mut nonzero = 0;
        for i in 0..v.len() {
            let mut q = v.clone();
            q[i] += eps;
            let up = loss(&q);
            q[i] -= 2.0 * eps;
            let numeric = (up - loss(&q)) / (2.0 * eps);
            assert!(
                (g[i] - numeric).abs() < 1e-8,
                "k={k} s={s} p={p} [{i}]: analytic {} numeric {numeric}",
                g[i]
            );
            nonzero += usize::from(g[i] != 0.0);
        }
        assert!(nonzero > 0);
        // Overlapping windows accumulate: the gradient sums to the sum of the output gradient.
        let total: f64 = r.sum_all().unwrap().to_scalar().unwrap();
        assert!((g.iter().sum::<f64>() - total).abs() < 1e-9);
    }
}

#[test]
fn backward_2x2_matches_candle() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let x = randn(&mut rng, &[2, 3, 10, 8], DType::F32);
    let r = randn(&mut rng, &[2, 3, 5, 4], DType::F32);
    let got = grad(|x| max_pool2d(x, 2, 2, 0).unwrap(), &x, &r);
    let want = grad(|x| x.max_pool2d_with_stride(2, 2).unwrap(), &x, &r);
    // candle 0.11 multiplies the routed gradient by the window's tie fraction (1/k² for a unique maximum) instead of
    // dividing by the tie count, so its gradient is 1/4 of the true one (the finite-difference test checks ours).
    let want = (want * 4.0).unwrap();
    assert!(max_diff(&got, &want) < 1e-5);
}

#[test]
fn ties_route_to_the_first_maximum() {
    let x = Tensor::from_vec(vec![1f32, 5., 5., 2., 5., 0., 3., 1., 4.], (1, 1, 3, 3), &Device::Cpu).unwrap();
    let r = Tensor::ones((1, 1, 1, 1), DType::F32, &Device::Cpu).unwrap();
    let g = grad(|x| max_pool2d(x, 3, 1, 0).unwrap(), &x, &r);
    assert_eq!(
        g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        [0., 1., 0., 0., 0., 0., 0., 0., 0.]
    );
}
