//! Training-mode BatchNorm (batch statistics) as two CPU passes with a fused backward, instead of ~10 candle ops
//! (and their full-size temporaries) forward and more backward; the activation after it (ReLU, ReLU6, SiLU,
//! hard-swish, …) runs in the same pass forward, and its derivative, from the pre-activation recomputed per element,
//! in the backward's passes, so the activation costs no pass or tensor of its own.
//!
//! The loops run in f32 over one (image, channel) plane at a time, vectorised (AVX-512F or AVX2+FMA chosen at
//! run time; SiLU and sigmoid through the vectorisable `exp` of `ops::rows`), with per-plane sums accumulated in f64
//! across planes.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Device, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::cpu_slice;
use crate::nhwc::{multiversion, Activation};
use crate::ops::rows::exp_f32;

/// Lanes of the vectorised sums.
const LANES: usize = 16;

/// `Σ v` of one plane, in f32 lanes, returned in f64.
#[inline(always)]
fn sum_body(v: &[f32]) -> f64 {
    let mut acc = [0f32; LANES];
    let chunks = v.chunks_exact(LANES);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for j in 0..LANES {
            acc[j] += c[j];
        }
    }
    acc.iter().map(|&a| a as f64).sum::<f64>() + rest as f64
}

/// `Σ (v − m)²` of one plane, in f32 lanes, returned in f64.
#[inline(always)]
fn centered_sq_body(v: &[f32], m: f32) -> f64 {
    let mut acc = [0f32; LANES];
    let chunks = v.chunks_exact(LANES);
    let rest: f32 = chunks.remainder().iter().map(|&x| (x - m) * (x - m)).sum();
    for c in chunks {
        for j in 0..LANES {
            let d = c[j] - m;
            acc[j] += d * d;
        }
    }
    acc.iter().map(|&a| a as f64).sum::<f64>() + rest as f64
}

multiversion! {
    /// `Σ v` of one plane.
    fn plane_sum(v: &[f32], out: &mut f64) => plane_sum_body
}

#[inline(always)]
fn plane_sum_body(v: &[f32], out: &mut f64) {
    *out = sum_body(v);
}

multiversion! {
    /// `Σ (v − m)²` of one plane.
    fn plane_centered_sq(v: &[f32], m: f32, out: &mut f64) => plane_centered_sq_body
}

#[inline(always)]
fn plane_centered_sq_body(v: &[f32], m: f32, out: &mut f64) {
    *out = centered_sq_body(v, m);
}

/// `act(z)`.
#[inline(always)]
fn act_value(act: Activation, z: f32) -> f32 {
    match act {
        Activation::None => z,
        Activation::Relu => z.max(0.0),
        Activation::Relu6 => z.clamp(0.0, 6.0),
        Activation::Silu => z / (1.0 + exp_f32(-z)),
        Activation::HardSwish => z * (z + 3.0).clamp(0.0, 6.0) / 6.0,
        Activation::HardSigmoid => (z + 3.0).clamp(0.0, 6.0) / 6.0,
        Activation::Sigmoid => 1.0 / (1.0 + exp_f32(-z)),
    }
}

/// `act′(z)` (PyTorch's conventions at the kinks: ReLU′(0) = 0, ReLU6′ = 0 at 0 and 6, hard-swish′(±3) from the
/// inner branch, hard-sigmoid′ = 0 at ±3).
#[inline(always)]
fn act_grad(act: Activation, z: f32) -> f32 {
    match act {
        Activation::None => 1.0,
        Activation::Relu => (z > 0.0) as u8 as f32,
        Activation::Relu6 => (z > 0.0 && z < 6.0) as u8 as f32,
        Activation::Silu => {
            let s = 1.0 / (1.0 + exp_f32(-z));
            s * (1.0 + z * (1.0 - s))
        }
        Activation::HardSwish => {
            if z < -3.0 {
                0.0
            } else if z > 3.0 {
                1.0
            } else {
                (2.0 * z + 3.0) / 6.0
            }
        }
        Activation::HardSigmoid => (z > -3.0 && z < 3.0) as u8 as f32 / 6.0,
        Activation::Sigmoid => {
            let s = 1.0 / (1.0 + exp_f32(-z));
            s * (1.0 - s)
        }
    }
}

multiversion! {
    /// `y = act(x · scale + shift)` over one plane.
    fn plane_normalize(x: &[f32], y: &mut [f32], scale: f32, shift: f32, act: Activation) => plane_normalize_body
}

#[inline(always)]
fn plane_normalize_body(x: &[f32], y: &mut [f32], scale: f32, shift: f32, act: Activation) {
    // One loop per activation, so each is vectorised on its own.
    macro_rules! each {
        ($($a:ident),*) => {
            match act {
                $(Activation::$a => y.iter_mut().zip(x).for_each(|(o, &v)| *o = act_value(Activation::$a, v * scale + shift)),)*
            }
        };
    }
    each!(None, Relu, Relu6, Silu, HardSwish, HardSigmoid, Sigmoid);
}

multiversion! {
    /// `(Σ g', Σ g'·x)` over one plane, `g' = g · act′(x · scale + shift)`.
    fn plane_grad_sums(g: &[f32], x: &[f32], affine: (f32, f32), act: Activation, out: &mut (f64, f64)) => plane_grad_sums_body
}

/// One copy of the loop per activation (the activation a constant in each), so each is vectorised on its own.
macro_rules! per_activation {
    ($act:expr, $f:ident($($arg:expr),*)) => {
        match $act {
            Activation::None => $f($($arg,)* Activation::None),
            Activation::Relu => $f($($arg,)* Activation::Relu),
            Activation::Relu6 => $f($($arg,)* Activation::Relu6),
            Activation::Silu => $f($($arg,)* Activation::Silu),
            Activation::HardSwish => $f($($arg,)* Activation::HardSwish),
            Activation::HardSigmoid => $f($($arg,)* Activation::HardSigmoid),
            Activation::Sigmoid => $f($($arg,)* Activation::Sigmoid),
        }
    };
}

#[inline(always)]
fn plane_grad_sums_body(g: &[f32], x: &[f32], affine: (f32, f32), act: Activation, out: &mut (f64, f64)) {
    per_activation!(act, grad_sums_for(g, x, affine, out));
}

#[inline(always)]
fn grad_sums_for(g: &[f32], x: &[f32], affine: (f32, f32), out: &mut (f64, f64), act: Activation) {
    let (scale, shift) = affine;
    let (mut sg, mut sgx) = ([0f32; LANES], [0f32; LANES]);
    // Whole arrays of LANES: no bounds checks in the loop, so all lanes (the activation's `exp` included) vectorise.
    let (mut gc, mut xc) = (g.chunks_exact(LANES), x.chunks_exact(LANES));
    for (gl, xl) in (&mut gc).zip(&mut xc) {
        let gl: &[f32; LANES] = gl.try_into().expect("LANES elements");
        let xl: &[f32; LANES] = xl.try_into().expect("LANES elements");
        let mut gv = [0f32; LANES];
        for j in 0..LANES {
            gv[j] = gl[j] * act_grad(act, xl[j] * scale + shift);
        }
        for j in 0..LANES {
            sg[j] += gv[j];
            sgx[j] += gv[j] * xl[j];
        }
    }
    let (mut a, mut b) = (0f64, 0f64);
    for (&gt, &xt) in gc.remainder().iter().zip(xc.remainder()) {
        let gv = gt * act_grad(act, xt * scale + shift);
        a += gv as f64;
        b += (gv * xt) as f64;
    }
    a += sg.iter().map(|&v| v as f64).sum::<f64>();
    b += sgx.iter().map(|&v| v as f64).sum::<f64>();
    *out = (a, b);
}

multiversion! {
    /// `dx = A·g' + B·x + C` over one plane, `g' = g · act′(x · scale + shift)`.
    fn plane_dx(dx: &mut [f32], g: &[f32], x: &[f32], affine: (f32, f32), act: Activation, abc: (f32, f32, f32)) => plane_dx_body
}

#[inline(always)]
fn plane_dx_body(dx: &mut [f32], g: &[f32], x: &[f32], affine: (f32, f32), act: Activation, abc: (f32, f32, f32)) {
    per_activation!(act, dx_for(dx, g, x, affine, abc));
}

#[inline(always)]
fn dx_for(dx: &mut [f32], g: &[f32], x: &[f32], affine: (f32, f32), abc: (f32, f32, f32), act: Activation) {
    let ((scale, shift), (a, b, c)) = (affine, abc);
    for ((d, &gv), &xv) in dx.iter_mut().zip(g).zip(x) {
        let gv = gv * act_grad(act, xv * scale + shift);
        *d = a * gv + b * xv + c;
    }
}

/// Per-channel `(mean, biased variance)` of `x` (N×C×H×W, contiguous), two passes per channel.
fn channel_stats(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<(f64, f64)> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let planes = (0..n).map(|b| &x[(b * c + ch) * hw..(b * c + ch + 1) * hw]);
            let count = (n * hw) as f64;
            let mean = planes
                .clone()
                .map(|p| {
                    let mut s = 0.0;
                    plane_sum(p, &mut s);
                    s
                })
                .sum::<f64>()
                / count;
            let var = planes
                .map(|p| {
                    let mut s = 0.0;
                    plane_centered_sq(p, mean as f32, &mut s);
                    s
                })
                .sum::<f64>()
                / count;
            (mean, var)
        })
        .collect()
}

struct Stats;

impl CustomOp1 for Stats {
    fn name(&self) -> &'static str {
        "graft-bn-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let st = channel_stats(cpu_slice(s, l, "batch norm: input")?, n, c, h * w);
        let mut out: Vec<f32> = st.iter().map(|s| s.0 as f32).collect();
        out.extend(st.iter().map(|s| s.1 as f32));
        Ok((CpuStorage::F32(out), Shape::from((2, c))))
    }
}

/// `y = act((x − mean) · inv_std · gamma + beta)` with `stats` = [mean; var] and `affine` = [gamma; beta], both 2×C.
struct Normalize {
    eps: f64,
    act: Activation,
}

/// The per-channel `(scale, shift)` of the normalisation: `scale = γ / √(var + ε)`, `shift = β − mean · scale`.
fn channel_affine(st: &[f32], aff: &[f32], c: usize, eps: f64) -> Vec<(f32, f32)> {
    (0..c)
        .map(|ch| {
            let inv = 1.0 / (st[c + ch] as f64 + eps).sqrt() as f32;
            let scale = inv * aff[ch];
            (scale, aff[c + ch] - st[ch] * scale)
        })
        .collect()
}

/// The contiguous f32 values of a CPU tensor, borrowed for `f`.
fn with_values<R>(t: &Tensor, what: &str, f: impl FnOnce(&[f32]) -> candle_core::Result<R>) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("{what} must be on the CPU");
    };
    f(cpu_slice(cpu, layout, what)?)
}

impl CustomOp3 for Normalize {
    fn name(&self) -> &'static str {
        "graft-bn-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, c, h, w) = l1.shape().dims4()?;
        let x = cpu_slice(s1, l1, "batch norm: input")?;
        let (st, aff) = (
            cpu_slice(s2, l2, "batch norm: stats")?,
            cpu_slice(s3, l3, "batch norm: affine")?,
        );
        let hw = h * w;
        let affine = channel_affine(st, aff, c, self.eps);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(hw)
            .zip(x.par_chunks(hw))
            .enumerate()
            .for_each(|(i, (yo, xi))| {
                let (scale, shift) = affine[i % c];
                plane_normalize(xi, yo, scale, shift, self.act);
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        stats: &Tensor,
        affine: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = x.dims4()?;
        let hw = h * w;
        let count = (n * hw) as f64;
        let (st, aff) = (
            stats.flatten_all()?.to_vec1::<f32>()?,
            affine.flatten_all()?.to_vec1::<f32>()?,
        );
        let inv: Vec<f64> = (0..c).map(|ch| 1.0 / (st[c + ch] as f64 + self.eps).sqrt()).collect();
        let act = self.act;
        let affine_of = channel_affine(&st, &aff, c, self.eps);
        with_values(x, "batch norm backward: input", |xv| {
            with_values(grad, "batch norm backward: gradient", |g| {
                // Per channel: Σ g' and Σ g'·x̂ = inv · (Σ g'·x − mean · Σ g').
                let sums: Vec<(f64, f64)> = (0..c)
                    .into_par_iter()
                    .map(|ch| {
                        let (mut sg, mut sgx) = (0f64, 0f64);
                        for b in 0..n {
                            let o = (b * c + ch) * hw;
                            let mut s = (0.0, 0.0);
                            plane_grad_sums(&g[o..o + hw], &xv[o..o + hw], affine_of[ch], act, &mut s);
                            sg += s.0;
                            sgx += s.1;
                        }
                        (sg, inv[ch] * (sgx - st[ch] as f64 * sg))
                    })
                    .collect();
                let d_affine = if affine.track_op() {
                    let mut d: Vec<f32> = sums.iter().map(|s| s.1 as f32).collect();
                    d.extend(sums.iter().map(|s| s.0 as f32));
                    Some(Tensor::from_vec(d, (2, c), &Device::Cpu)?)
                } else {
                    None
                };
                let dx = if x.track_op() {
                    // dx = γ·inv·(g' − Σg'/count − x̂·Σg'x̂/count) = A·g' + B·x + C per channel.
                    let abc: Vec<(f32, f32, f32)> = (0..c)
                        .map(|ch| {
                            let (m, iv, gm) = (st[ch] as f64, inv[ch], aff[ch] as f64);
                            let (sdy, sdyx) = sums[ch];
                            let a = gm * iv;
                            let b = -gm * iv * iv * sdyx / count;
                            let cc = -gm * iv * sdy / count - b * m;
                            (a as f32, b as f32, cc as f32)
                        })
                        .collect();
                    let mut dx = vec![0f32; xv.len()];
                    dx.par_chunks_mut(hw).enumerate().for_each(|(i, d)| {
                        let o = i * hw;
                        let r = o..o + hw;
                        plane_dx(d, &g[r.clone()], &xv[r], affine_of[i % c], act, abc[i % c]);
                    });
                    Some(Tensor::from_vec(dx, x.dims(), &Device::Cpu)?)
                } else {
                    None
                };
                Ok((dx, None, d_affine))
            })
        })
    }
}

/// Training-mode BatchNorm on the CPU in f32: `(y, batch mean, biased batch variance)`, differentiable in `x`,
/// `gamma` and `beta`; `None` on other devices or dtypes (callers use composed ops then).
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> candle_core::Result<Option<(Tensor, Tensor, Tensor)>> {
    batch_norm_act_train(x, gamma, beta, eps, Activation::None)
}

/// [`batch_norm_train`] followed by `act` in the same passes: `(act(y), mean, variance)`; the backward takes the
/// activation's derivative at the pre-activation it recomputes, so the activation needs no pass or tensor of its own.
pub fn batch_norm_act_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    act: Activation,
) -> candle_core::Result<Option<(Tensor, Tensor, Tensor)>> {
    if !matches!(x.device(), Device::Cpu) || x.dtype() != DType::F32 || x.rank() != 4 {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let stats = x.apply_op1_no_bwd(&Stats)?;
    let affine = Tensor::stack(&[gamma, beta], 0)?;
    let y = x.apply_op3(&stats, &affine, Normalize { eps, act })?;
    Ok(Some((y, stats.get(0)?, stats.get(1)?)))
}
