//! The fast CPU convolution, ReLU6 and training BatchNorm match candle's reference ops, forward and backward.

use candle_core::{DType, Device, Tensor, Var};
use kernels::conv::{add_relu, batch_norm_act_train, batch_norm_train, conv2d, conv2d_bias_act, relu6, Epilogue};
use kernels::Activation;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// max |a − b|.
fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn rand_t(dims: &[usize], rng: &mut ChaCha8Rng) -> Tensor {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

fn reference(x: &Tensor, w: &Tensor, stride: usize, pad: [usize; 4]) -> Tensor {
    x.pad_with_zeros(2, pad[0], pad[1])
        .unwrap()
        .pad_with_zeros(3, pad[2], pad[3])
        .unwrap()
        .conv2d(w, 0, stride, 1, 1)
        .unwrap()
}

/// (input dims, out channels, kernel, stride, padding)
type Case = ([usize; 4], usize, usize, usize, [usize; 4]);

const CASES: &[Case] = &[
    ([2, 3, 9, 11], 4, 3, 1, [1, 1, 1, 1]),
    ([3, 5, 10, 10], 6, 3, 2, [1, 1, 1, 1]),
    ([2, 4, 8, 9], 3, 3, 2, [0, 1, 0, 1]),
    ([2, 3, 13, 12], 5, 7, 2, [3, 3, 3, 3]),
    ([3, 8, 6, 7], 5, 1, 1, [0, 0, 0, 0]),
    ([2, 8, 7, 7], 4, 1, 2, [0, 0, 0, 0]),
    ([1, 2, 5, 5], 3, 5, 1, [2, 2, 2, 2]),
];

#[test]
fn forward_matches_candle() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for &(xd, co, k, s, pad) in CASES {
        let x = rand_t(&xd, &mut rng);
        let w = rand_t(&[co, xd[1], k, k], &mut rng);
        let ours = conv2d(&x, &w, s, pad).unwrap();
        let d = max_abs_diff(&ours, &reference(&x, &w, s, pad));
        assert!(d < 1e-4, "case {xd:?} k{k} s{s} {pad:?}: max diff {d}");
    }
}

#[test]
fn fused_bias_relu_matches_composed_ops() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for &(xd, co, k, s, pad) in CASES {
        let x = rand_t(&xd, &mut rng);
        let w = rand_t(&[co, xd[1], k, k], &mut rng);
        let b = rand_t(&[co], &mut rng);
        let reference = reference(&x, &w, s, pad)
            .broadcast_add(&b.reshape((1, co, 1, 1)).unwrap())
            .unwrap();
        let relu = conv2d_bias_act(&x, &w, &b, s, pad, Epilogue::Relu).unwrap();
        assert!(max_abs_diff(&relu, &reference.relu().unwrap()) < 1e-4);
        let relu6 = conv2d_bias_act(&x, &w, &b, s, pad, Epilogue::Relu6).unwrap();
        assert!(max_abs_diff(&relu6, &reference.clamp(0f32, 6f32).unwrap()) < 1e-4);
    }
}

#[test]
fn backward_matches_candle() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for &(xd, co, k, s, pad) in CASES {
        let x = Var::from_tensor(&rand_t(&xd, &mut rng)).unwrap();
        let w = Var::from_tensor(&rand_t(&[co, xd[1], k, k], &mut rng)).unwrap();
        let y_ref = reference(x.as_tensor(), w.as_tensor(), s, pad);
        let r = rand_t(y_ref.dims(), &mut rng);
        let y = conv2d(x.as_tensor(), w.as_tensor(), s, pad).unwrap();
        let loss = (y * &r).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        // The loss is linear in x and in w: loss = <x, dL/dx> = <w, dL/dw>.
        let l = loss.to_scalar::<f32>().unwrap();
        for v in [&x, &w] {
            let gv = g.get(v.as_tensor()).unwrap();
            let dot = (v.as_tensor() * gv)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                (dot - l).abs() < 1e-3 * l.abs().max(1.0),
                "case {xd:?}: <v, grad> {dot} vs loss {l}"
            );
        }
        // candle's own backward fails on some strided shapes (transposed-conv output size); compare where it works.
        if let Ok(g_ref) = (y_ref * &r).unwrap().sum_all().unwrap().backward() {
            for v in [&x, &w] {
                let d = max_abs_diff(g.get(v.as_tensor()).unwrap(), g_ref.get(v.as_tensor()).unwrap());
                assert!(d < 1e-3, "case {xd:?} k{k} s{s} {pad:?}: grad max diff {d}");
            }
        }
    }
}

#[test]
fn frozen_weight_gets_no_gradient_but_input_does() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x = Var::from_tensor(&rand_t(&[2, 3, 6, 6], &mut rng)).unwrap();
    let w = rand_t(&[4, 3, 3, 3], &mut rng);
    let g = conv2d(x.as_tensor(), &w, 1, [1; 4])
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(g.get(x.as_tensor()).is_some());
    assert!(g.get(&w).is_none());
}

#[test]
fn relu6_matches_clamp_forward_and_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x = Var::from_tensor(&(rand_t(&[3, 4, 5, 6], &mut rng) * 8.0).unwrap()).unwrap();
    let r = rand_t(&[3, 4, 5, 6], &mut rng);
    let ours = relu6(x.as_tensor()).unwrap();
    let want = x.as_tensor().clamp(0f32, 6f32).unwrap();
    assert!(max_abs_diff(&ours, &want) == 0.0);
    let g = (ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let gx = g.get(x.as_tensor()).unwrap();
    let inside = x
        .as_tensor()
        .gt(0f32)
        .unwrap()
        .mul(&x.as_tensor().lt(6f32).unwrap())
        .unwrap();
    let expected = r.mul(&inside.to_dtype(DType::F32).unwrap()).unwrap();
    assert!(max_abs_diff(gx, &expected) == 0.0);
}

#[test]
fn batch_norm_train_matches_composed_ops_forward_and_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let x = Var::from_tensor(&rand_t(&[3, 4, 5, 6], &mut rng).affine(3.0, 1.0).unwrap()).unwrap();
    let gamma = Var::from_tensor(&rand_t(&[4], &mut rng)).unwrap();
    let beta = Var::from_tensor(&rand_t(&[4], &mut rng)).unwrap();
    let r = rand_t(&[3, 4, 5, 6], &mut rng);
    let eps = 1e-3;
    let (y, mean, var) = batch_norm_train(x.as_tensor(), gamma.as_tensor(), beta.as_tensor(), eps)
        .unwrap()
        .unwrap();
    let xt = x.as_tensor();
    let m = xt
        .mean_keepdim(0)
        .unwrap()
        .mean_keepdim(2)
        .unwrap()
        .mean_keepdim(3)
        .unwrap();
    let cen = xt.broadcast_sub(&m).unwrap();
    let v = cen
        .sqr()
        .unwrap()
        .mean_keepdim(0)
        .unwrap()
        .mean_keepdim(2)
        .unwrap()
        .mean_keepdim(3)
        .unwrap();
    let want = cen
        .broadcast_div(&(v.clone() + eps).unwrap().sqrt().unwrap())
        .unwrap()
        .broadcast_mul(&gamma.as_tensor().reshape((1, 4, 1, 1)).unwrap())
        .unwrap()
        .broadcast_add(&beta.as_tensor().reshape((1, 4, 1, 1)).unwrap())
        .unwrap();
    assert!(max_abs_diff(&y, &want) < 1e-4);
    assert!(max_abs_diff(&mean, &m.flatten_all().unwrap()) < 1e-5);
    assert!(max_abs_diff(&var, &v.flatten_all().unwrap()) < 1e-4);
    let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let gw = (want * &r).unwrap().sum_all().unwrap().backward().unwrap();
    for t in [&x, &gamma, &beta] {
        let d = max_abs_diff(g.get(t.as_tensor()).unwrap(), gw.get(t.as_tensor()).unwrap());
        assert!(d < 1e-3, "gradient max diff {d}");
    }
}

/// BatchNorm (batch statistics) composed of tensor ops, then `act`.
fn composed_bn_act(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64, act: Activation) -> Tensor {
    let c = x.dim(1).unwrap();
    let mean = |t: &Tensor| {
        t.mean_keepdim(0)
            .unwrap()
            .mean_keepdim(2)
            .unwrap()
            .mean_keepdim(3)
            .unwrap()
    };
    let cen = x.broadcast_sub(&mean(x)).unwrap();
    let v = mean(&cen.sqr().unwrap());
    let y = cen
        .broadcast_div(&(v + eps).unwrap().sqrt().unwrap())
        .unwrap()
        .broadcast_mul(&gamma.reshape((1, c, 1, 1)).unwrap())
        .unwrap()
        .broadcast_add(&beta.reshape((1, c, 1, 1)).unwrap())
        .unwrap();
    let hard = |t: &Tensor| ((t + 3.0).unwrap().clamp(0f32, 6f32).unwrap() / 6.0).unwrap();
    let sigmoid = |t: &Tensor| (t.neg().unwrap().exp().unwrap() + 1.0).unwrap().recip().unwrap();
    match act {
        Activation::None => y,
        Activation::Relu => y.relu().unwrap(),
        Activation::Relu6 => y.clamp(0f32, 6f32).unwrap(),
        Activation::Silu => (&y * sigmoid(&y)).unwrap(),
        Activation::HardSwish => (&y * hard(&y)).unwrap(),
        Activation::HardSigmoid => hard(&y),
        Activation::Sigmoid => sigmoid(&y),
    }
}

/// BatchNorm with each activation fused into its passes against BatchNorm then the activation in tensor ops:
/// values, the three gradients, on planes that are and are not a multiple of the vector width; and finite
/// differences.
#[test]
fn batch_norm_with_fused_activation_matches_composed_ops() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for (shape, act) in [
        ([3, 4, 5, 6], Activation::Relu),
        ([2, 3, 17, 19], Activation::Relu6),
        ([2, 5, 8, 8], Activation::Relu6),
        ([1, 2, 4, 4], Activation::None),
        ([2, 3, 7, 9], Activation::Silu),
        ([2, 4, 6, 6], Activation::HardSwish),
        ([1, 3, 5, 7], Activation::HardSigmoid),
        ([2, 2, 5, 5], Activation::Sigmoid),
    ] {
        let x = Var::from_tensor(&rand_t(&shape, &mut rng).affine(3.0, 1.0).unwrap()).unwrap();
        // γ up to ±8 so that ReLU6 clips at both ends.
        let gamma = Var::from_tensor(&rand_t(&shape[1..2], &mut rng).affine(8.0, 0.0).unwrap()).unwrap();
        let beta = Var::from_tensor(&rand_t(&shape[1..2], &mut rng).affine(2.0, 1.0).unwrap()).unwrap();
        let r = rand_t(&shape, &mut rng);
        let eps = 1e-3;
        let (y, _, _) = batch_norm_act_train(x.as_tensor(), gamma.as_tensor(), beta.as_tensor(), eps, act)
            .unwrap()
            .unwrap();
        let want = composed_bn_act(x.as_tensor(), gamma.as_tensor(), beta.as_tensor(), eps, act);
        let d = max_abs_diff(&y, &want);
        assert!(d < 1e-4, "{act:?} {shape:?}: forward differs by {d}");
        if act == Activation::Relu6 {
            let clipped = |t: &Tensor| t.ge(6f32).unwrap().to_dtype(DType::F32).unwrap().sum_all().unwrap();
            assert!(
                clipped(&want).to_scalar::<f32>().unwrap() > 0.0,
                "some outputs clip at 6"
            );
        }
        let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gw = (&want * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, t) in [("x", &x), ("gamma", &gamma), ("beta", &beta)] {
            let d = max_abs_diff(g.get(t.as_tensor()).unwrap(), gw.get(t.as_tensor()).unwrap());
            assert!(d < 1e-3, "{act:?} {shape:?}: d{name} differs by {d}");
        }
        // Finite differences of L = Σ r ⊙ y on a few inputs (f32, central, h = 1e-2).
        let loss = |xt: &Tensor| {
            let (y, _, _) = batch_norm_act_train(xt, gamma.as_tensor(), beta.as_tensor(), eps, act)
                .unwrap()
                .unwrap();
            (y * &r).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64
        };
        let dx: Vec<f32> = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let xs: Vec<f32> = x.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        for i in [0, xs.len() / 3, xs.len() - 1] {
            let h = 1e-2f32;
            let at = |delta: f32| {
                let mut v = xs.clone();
                v[i] += delta;
                loss(&Tensor::from_vec(v, &shape, &Device::Cpu).unwrap())
            };
            let fd = (at(h) - at(-h)) / (2.0 * h as f64);
            assert!(
                (fd - dx[i] as f64).abs() < 2e-2 * (1.0 + fd.abs()),
                "{act:?} {shape:?}: dx[{i}] {} vs finite difference {fd}",
                dx[i]
            );
        }
    }
}

/// The residual add + ReLU against `(a + b).relu()`: values and both gradients.
#[test]
fn add_relu_matches_composed_ops() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let a = Var::from_tensor(&rand_t(&[2, 3, 9, 11], &mut rng)).unwrap();
    let b = Var::from_tensor(&rand_t(&[2, 3, 9, 11], &mut rng)).unwrap();
    let r = rand_t(&[2, 3, 9, 11], &mut rng);
    let y = add_relu(a.as_tensor(), b.as_tensor()).unwrap();
    let want = (a.as_tensor() + b.as_tensor()).unwrap().relu().unwrap();
    assert_eq!(max_abs_diff(&y, &want), 0.0);
    let zeros = want.eq(0f32).unwrap().to_dtype(DType::F32).unwrap().sum_all().unwrap();
    assert!(zeros.to_scalar::<f32>().unwrap() > 10.0, "the ReLU clips some values");
    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let gw = (&want * &r).unwrap().sum_all().unwrap().backward().unwrap();
    for t in [&a, &b] {
        assert_eq!(
            max_abs_diff(g.get(t.as_tensor()).unwrap(), gw.get(t.as_tensor()).unwrap()),
            0.0
        );
    }
}
