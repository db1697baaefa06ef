//! The row kernels of channels-last layers: the last-dimension bias add against candle's broadcast add (values and
//! gradients), the fused inference linear layer against the plain composition.

use candle_core::{DType, Device, Tensor, Var};
use kernels::ops::{add_bias, linear_rows};
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

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    max_abs(&(a - b).unwrap())
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
fn add_bias_matches_broadcast_add_forward_and_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (shape, dtype, tol) in [
        (vec![600, 37], DType::F32, 1e-4),
        (vec![2, 5, 7, 16], DType::F64, 1e-12),
        (vec![3, 1], DType::F32, 1e-6),
    ] {
        let c = *shape.last().unwrap();
        let x = randn(&mut rng, &shape, dtype);
        let b = randn(&mut rng, &[c], dtype);
        let want = x.broadcast_add(&b).unwrap();
        assert!(max_diff(&add_bias(&x, &b).unwrap(), &want) < tol);
        let r = randn(&mut rng, &shape, dtype);
        let (gx, gb) = grads(|x, b| add_bias(x, b).unwrap(), &x, &b, &r);
        let (rx, rb) = grads(|x, b| x.broadcast_add(b).unwrap(), &x, &b, &r);
        assert!(max_abs(&rb) > 0.1);
        assert!(max_diff(&gx, &rx) < tol && max_diff(&gb, &rb) < tol, "{shape:?}");
    }
    // A strided input and a mismatched bias.
    let x = randn(&mut rng, &[4, 6], DType::F32);
    let b = randn(&mut rng, &[4], DType::F32);
    let xt = x.t().unwrap();
    let want = xt.broadcast_add(&b).unwrap();
    assert!(max_diff(&add_bias(&xt, &b).unwrap(), &want) < 1e-6);
    assert!(add_bias(&x, &b).is_err());
}

#[test]
fn linear_rows_matches_matmul_bias_and_residual() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    // 600 rows: several row blocks and a partial one.
    for (rows, ci, co) in [(600, 40, 160), (7, 3, 5), (256, 33, 17)] {
        let x = randn(&mut rng, &[rows, ci], DType::F32);
        let w = randn(&mut rng, &[co, ci], DType::F32);
        let b = randn(&mut rng, &[co], DType::F32);
        let skip = randn(&mut rng, &[rows, co], DType::F32);
        let plain = x.matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap();
        let tol = 1e-5 * ci as f64;
        assert!(max_diff(&linear_rows(&x, &w, &b, None).unwrap(), &plain) < tol);
        let with_skip = (&plain + &skip).unwrap();
        assert!(max_diff(&linear_rows(&x, &w, &b, Some(&skip)).unwrap(), &with_skip) < tol);
        // A strided weight (the transpose of an in × out tensor) gives the same.
        let wt = w.t().unwrap().contiguous().unwrap().t().unwrap();
        assert!(max_diff(&linear_rows(&x, &wt, &b, None).unwrap(), &plain) < tol);
    }
    // Something to differentiate: the plain composition, with its gradients.
    let x = randn(&mut rng, &[9, 4], DType::F32);
    let w = randn(&mut rng, &[6, 4], DType::F32);
    let b = randn(&mut rng, &[6], DType::F32);
    let skip = randn(&mut rng, &[9, 6], DType::F32);
    let r = randn(&mut rng, &[9, 6], DType::F32);
    let (gx, gw) = grads(|x, w| linear_rows(x, w, &b, Some(&skip)).unwrap(), &x, &w, &r);
    let (rx, rw) = grads(
        |x, w| (x.matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap() + &skip).unwrap(),
        &x,
        &w,
        &r,
    );
    assert!(max_abs(&rx) > 0.1 && max_diff(&gx, &rx) < 1e-5 && max_diff(&gw, &rw) < 1e-5);
    // Mismatched shapes are errors.
    assert!(linear_rows(&x, &w.t().unwrap(), &b, None).is_err());
    assert!(linear_rows(&x, &w, &b, Some(&r.t().unwrap())).is_err());
}
