//! The fused LayerNorm, softmax, GELU and attention custom ops against their plain-op compositions (values and
//! gradients), against f64 references, and against finite differences in f64.

use candle_core::{DType, Device, Tensor, Var};
use kernels::ops::{
    attention_composed, fused_attention, gelu_erf, layer_norm, layer_norm_composed, softmax_last_dim,
    softmax_last_dim_composed,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn uniform(rng: &mut ChaCha8Rng, shape: &[usize], lo: f64, hi: f64, dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.gen_range(lo..hi)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn to_f64(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Largest `|a − b| / (1 + |b|)`.
fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    to_f64(a)
        .iter()
        .zip(to_f64(b))
        .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
        .fold(0.0, f64::max)
}

/// Shapes: rows not a multiple of the 16 Ki-element chunk, last dims not a multiple of 16, one-element rows.
const SHAPES: &[&[usize]] = &[
    &[3, 5, 37],
    &[1000, 24],
    &[2, 197, 192],
    &[7, 1],
    &[50, 1000],
    &[33, 3, 17],
];

/// Outputs and gradients (of `Σ y ⊙ w` for a random `w`) of `f` at the given inputs.
fn value_and_grads(inputs: &[Tensor], w: &Tensor, f: impl Fn(&[Tensor]) -> Tensor) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts);
    let loss = (&y * w).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let g = ts.iter().map(|t| grads.get(t).expect("gradient").clone()).collect();
    (y, g)
}

#[test]
fn layer_norm_matches_composition() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for shape in SHAPES {
        let d = *shape.last().unwrap();
        let x = (uniform(&mut rng, shape, -2.0, 2.0, DType::F32) + 0.7).unwrap();
        let g = uniform(&mut rng, &[d], 0.5, 1.5, DType::F32);
        let b = uniform(&mut rng, &[d], -0.5, 0.5, DType::F32);
        let w = uniform(&mut rng, shape, -1.0, 1.0, DType::F32);
        let eps = 1e-6;
        let (y, gr) = value_and_grads(&[x.clone(), g.clone(), b.clone()], &w, |t| {
            layer_norm(&t[0], &t[1], &t[2], eps).unwrap()
        });
        let (y_ref, gr_ref) = value_and_grads(&[x, g, b], &w, |t| {
            layer_norm_composed(&t[0], &t[1], &t[2], eps).unwrap()
        });
        assert!(rel_diff(&y, &y_ref) < 1e-5, "y {shape:?}: {}", rel_diff(&y, &y_ref));
        for (name, (a, r)) in ["dx", "dγ", "dβ"].iter().zip(gr.iter().zip(&gr_ref)) {
            // dγ/dβ sum over up to 50 000 rows: compare relative to their scale.
            let scale = to_f64(r).iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let diff = rel_diff(a, r) * (1.0 + 1.0 / scale);
            assert!(diff < 2e-4, "{name} {shape:?}: {diff}");
        }
    }
}

#[test]
fn layer_norm_handles_f64_bf16_strides_and_bad_shapes() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let x = uniform(&mut rng, &[4, 6, 21], -3.0, 3.0, DType::F64);
    let g = uniform(&mut rng, &[21], 0.5, 1.5, DType::F64);
    let b = uniform(&mut rng, &[21], -0.5, 0.5, DType::F64);
    let want = layer_norm_composed(&x, &g, &b, 1e-5).unwrap();
    assert!(rel_diff(&layer_norm(&x, &g, &b, 1e-5).unwrap(), &want) < 1e-12);
    // A transposed (non-contiguous) input.
    let xt = x.transpose(0, 1).unwrap();
    let want_t = layer_norm_composed(&xt, &g, &b, 1e-5).unwrap();
    assert!(rel_diff(&layer_norm(&xt, &g, &b, 1e-5).unwrap(), &want_t) < 1e-12);
    // bf16 goes through f32 and comes back as bf16.
    let (xh, gh, bh) = (
        x.to_dtype(DType::BF16).unwrap(),
        g.to_dtype(DType::BF16).unwrap(),
        b.to_dtype(DType::BF16).unwrap(),
    );
    let yh = layer_norm(&xh, &gh, &bh, 1e-5).unwrap();
    assert_eq!(yh.dtype(), DType::BF16);
    assert!(rel_diff(&yh, &want) < 0.05);
    // A weight of the wrong length, or of another dtype, is an error naming the op.
    let short = uniform(&mut rng, &[20], 0.5, 1.5, DType::F64);
    let err = layer_norm(&x, &short, &b, 1e-5).unwrap_err().to_string();
    assert!(err.contains("layer_norm") && err.contains("[21]"), "{err}");
    assert!(layer_norm(&x, &g.to_dtype(DType::F32).unwrap(), &b, 1e-5).is_err());
}

#[test]
fn layer_norm_weight_gradients_are_deterministic() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x = uniform(&mut rng, &[4000, 40], -2.0, 2.0, DType::F32);
    let g = uniform(&mut rng, &[40], 0.5, 1.5, DType::F32);
    let b = uniform(&mut rng, &[40], -0.5, 0.5, DType::F32);
    let w = uniform(&mut rng, &[4000, 40], -1.0, 1.0, DType::F32);
    let run = || {
        let (_, gr) = value_and_grads(&[x.clone(), g.clone(), b.clone()], &w, |t| {
            layer_norm(&t[0], &t[1], &t[2], 1e-6).unwrap()
        });
        (to_f64(&gr[1]), to_f64(&gr[2]))
    };
    let first = run();
    for _ in 0..3 {
        assert_eq!(run(), first);
    }
}

#[test]
fn softmax_matches_composition() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for shape in SHAPES {
        for magnitude in [1.0, 30.0, 1e4] {
            let x = uniform(&mut rng, shape, -magnitude, magnitude, DType::F32);
            let w = uniform(&mut rng, shape, -1.0, 1.0, DType::F32);
            let (y, gr) = value_and_grads(std::slice::from_ref(&x), &w, |t| softmax_last_dim(&t[0]).unwrap());
            let (y_ref, gr_ref) = value_and_grads(&[x], &w, |t| softmax_last_dim_composed(&t[0]).unwrap());
            assert!(
                rel_diff(&y, &y_ref) < 1e-6,
                "y {shape:?} ×{magnitude}: {}",
                rel_diff(&y, &y_ref)
            );
            let dg = rel_diff(&gr[0], &gr_ref[0]);
            assert!(dg < 1e-6, "dx {shape:?} ×{magnitude}: {dg}");
            // Rows sum to one.
            let d = *shape.last().unwrap();
            for row in to_f64(&y).chunks(d) {
                assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-5);
            }
        }
    }
}

#[test]
fn softmax_handles_masks_f64_and_strides() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // -inf entries (a mask) get exactly zero probability and zero gradient.
    let mut v: Vec<f32> = (0..6 * 19).map(|_| rng.gen_range(-3.0..3.0)).collect();
    for i in (0..v.len()).step_by(3) {
        v[i] = f32::NEG_INFINITY;
    }
    let x = Tensor::from_vec(v, (6, 19), &Device::Cpu).unwrap();
    let y = to_f64(&softmax_last_dim(&x).unwrap());
    let want = to_f64(&softmax_last_dim_composed(&x).unwrap());
    for (i, (a, b)) in y.iter().zip(&want).enumerate() {
        if i % 3 == 0 {
            assert_eq!(*a, 0.0);
        }
        assert!((a - b).abs() < 1e-6, "{i}: {a} vs {b}");
    }
    let x = uniform(&mut rng, &[3, 8, 29], -5.0, 5.0, DType::F64)
        .transpose(0, 1)
        .unwrap();
    let d = rel_diff(&softmax_last_dim(&x).unwrap(), &softmax_last_dim_composed(&x).unwrap());
    assert!(d < 1e-14, "{d}");
}

#[test]
fn gelu_matches_candle_and_f64() {
    // A dense grid over the interesting range plus extremes.
    let mut v: Vec<f64> = (-40_000..=40_000).map(|i| i as f64 * 2.5e-4).collect();
    v.extend([-1e30, -1e6, -50.0, -12.0, 12.0, 50.0, 1e6, 1e30]);
    let x64 = Tensor::new(v.as_slice(), &Device::Cpu).unwrap();
    let x32 = x64.to_dtype(DType::F32).unwrap();
    let xs = to_f64(&x32);
    let w = Tensor::ones(xs.len(), DType::F32, &Device::Cpu).unwrap();
    let (y, gr) = value_and_grads(std::slice::from_ref(&x32), &w, |t| gelu_erf(&t[0]).unwrap());
    let (y_ref, gr_ref) = value_and_grads(std::slice::from_ref(&x32), &w, |t| t[0].gelu_erf().unwrap());
    // Against candle (libm's erff): the same precision.
    assert!(rel_diff(&y, &y_ref) < 2e-6, "y: {}", rel_diff(&y, &y_ref));
    // candle's backward rounds 1/√(2π) to 0.398942.
    assert!(
        rel_diff(&gr[0], &gr_ref[0]) < 5e-6,
        "dx: {}",
        rel_diff(&gr[0], &gr_ref[0])
    );
    // Against exact f64 at the f32 inputs: Φ within 1e-6 (the erf error bound), gradient likewise.
    let (y, g) = (to_f64(&y), to_f64(&gr[0]));
    let x64 = Tensor::new(xs.as_slice(), &Device::Cpu).unwrap();
    let (y64, g64) = value_and_grads(
        &[x64],
        &Tensor::ones(xs.len(), DType::F64, &Device::Cpu).unwrap(),
        |t| gelu_erf(&t[0]).unwrap(),
    );
    let (y64, g64) = (to_f64(&y64), to_f64(&g64[0]));
    for i in 0..xs.len() {
        let x = xs[i];
        let tol = 1e-6 * (1.0 + x.abs()) + 1e-7 * y64[i].abs();
        assert!((y[i] - y64[i]).abs() <= tol, "gelu({x}) = {} vs {}", y[i], y64[i]);
        assert!(
            (g[i] - g64[i]).abs() <= 2e-6 * (1.0 + x.abs()),
            "gelu'({x}) = {} vs {}",
            g[i],
            g64[i]
        );
    }
    // The f64 path is exact: x·Φ(x) with Φ(1) = 0.841344746068543.
    let one = gelu_erf(&Tensor::new(&[1.0f64], &Device::Cpu).unwrap()).unwrap();
    assert!((to_f64(&one)[0] - 0.841_344_746_068_543).abs() < 1e-15);
}

/// Central differences of `Σ f(inputs) ⊙ w` in f64 against the op's own gradients.
fn check_finite_differences(inputs: &[Tensor], w: &Tensor, f: impl Fn(&[Tensor]) -> Tensor, what: &str) {
    let (_, grads) = value_and_grads(inputs, w, &f);
    let loss = |ts: &[Tensor]| -> f64 { (f(ts) * w).unwrap().sum_all().unwrap().to_scalar().unwrap() };
    let h = 1e-6;
    for (k, input) in inputs.iter().enumerate() {
        let base = to_f64(input);
        let g = to_f64(&grads[k]);
        for i in 0..base.len() {
            let at = |delta: f64| {
                let mut v = base.clone();
                v[i] += delta;
                let mut ts = inputs.to_vec();
                ts[k] = Tensor::from_vec(v, input.shape(), &Device::Cpu).unwrap();
                loss(&ts)
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            assert!(
                (fd - g[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                "{what} input {k}[{i}]: fd {fd} vs {}",
                g[i]
            );
        }
    }
}

#[test]
fn finite_differences_in_f64() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let x = uniform(&mut rng, &[3, 7], -2.0, 2.0, DType::F64);
    let g = uniform(&mut rng, &[7], 0.5, 1.5, DType::F64);
    let b = uniform(&mut rng, &[7], -0.5, 0.5, DType::F64);
    let w = uniform(&mut rng, &[3, 7], -1.0, 1.0, DType::F64);
    check_finite_differences(
        &[x.clone(), g, b],
        &w,
        |t| layer_norm(&t[0], &t[1], &t[2], 1e-5).unwrap(),
        "layer_norm",
    );
    let xs = (x.clone() * 3.0).unwrap();
    check_finite_differences(&[xs], &w, |t| softmax_last_dim(&t[0]).unwrap(), "softmax");
    let xg = (x * 2.0).unwrap();
    check_finite_differences(&[xg], &w, |t| gelu_erf(&t[0]).unwrap(), "gelu");
}

/// The fused attention (f32) against the plain composition in f64: output and the `qkv` gradient, for ViT-like
/// shapes (token counts that are not multiples of 16, one head, several, an image of one token).
#[test]
fn fused_attention_matches_composition_with_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for &(b, n, heads, hd) in &[(2, 197, 3, 64), (1, 5, 1, 8), (3, 17, 4, 6), (2, 1, 2, 4)] {
        let c = heads * hd;
        let scale = (hd as f64).powf(-0.5);
        let qkv = uniform(&mut rng, &[b, n, 3 * c], -2.0, 2.0, DType::F64);
        let w = uniform(&mut rng, &[b, n, c], -1.0, 1.0, DType::F64);
        let (y_ref, g_ref) = value_and_grads(std::slice::from_ref(&qkv), &w, |t| {
            attention_composed(&t[0], heads, scale).unwrap()
        });
        let q32 = qkv.to_dtype(DType::F32).unwrap();
        let w32 = w.to_dtype(DType::F32).unwrap();
        let (y, g) = value_and_grads(&[q32], &w32, |t| fused_attention(&t[0], heads, scale).unwrap());
        let (dy, dg) = (rel_diff(&y, &y_ref), rel_diff(&g[0], &g_ref[0]));
        println!("attention {b}×{n}, {heads}×{hd}: output {dy:.1e}, gradient {dg:.1e}");
        assert!(dy < 1e-5, "output differs by {dy}");
        assert!(dg < 1e-5, "qkv gradient differs by {dg}");
    }
    // Bad shapes are errors, not panics.
    let bad = Tensor::zeros((1, 4, 10), DType::F32, &Device::Cpu).unwrap();
    assert!(fused_attention(&bad, 3, 1.0).is_err());
    assert!(attention_composed(&bad, 3, 1.0).is_err());
    assert!(fused_attention(&bad.to_dtype(DType::F64).unwrap(), 1, 1.0).is_err());
}
