//! LayerNorm over the last dimension (`F.layer_norm`: biased variance, affine) as a CPU custom op of
//! (x, γ, β) with a hand-written backward.
//!
//! Forward: per row, mean and variance in two lane-split passes, then one pass writing `(x − μ)·r·γ + β`.
//! Backward: mean and `r = 1/√(var + ε)` recomputed per row (nothing saved), then
//! `dx = r·(g − mean(g) − x̂·mean(g·x̂))` with `g = dy·γ`, and `dγ = Σ dy·x̂`, `dβ = Σ dy` from per-chunk partial
//! sums added in chunk order (deterministic). Both passes run over chunks of rows in parallel.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::plane::contiguous;
use super::rows::{rows_per_chunk, sum_map, sum_zip, sum_zip3};
use crate::nhwc::multiversion;

const NAME: &str = "layer_norm";

/// LayerNorm of the last dimension of `x` with scale `γ` and shift `β` (both of that dimension's length).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerNorm {
    /// Added to the variance.
    pub eps: f64,
}

/// `(rows, d)` of `x` after checking that `γ` (and `β`) hold `d` elements.
fn shape(x: &Layout, params: &[&Layout]) -> Result<(usize, usize)> {
    let Some(&d) = x.dims().last() else {
        bail!("{NAME}: input must have at least one dimension");
    };
    for p in params {
        if p.dims() != [d] {
            bail!(
                "{NAME}: weight/bias of shape {:?}, expected [{d}] (the input's last dimension)",
                p.dims()
            );
        }
    }
    Ok((x.shape().elem_count() / d.max(1), d))
}

/// Mean and `1/√(var + ε)` of one row.
#[inline(always)]
fn stats<T: WithDType>(x: &[T], eps: f64) -> (T, T) {
    let n = T::from_f64(x.len() as f64);
    let mean = sum_map(x, |v| v) / n;
    let var = sum_map(x, |v| (v - mean) * (v - mean)) / n;
    (mean, T::from_f64(1.0 / (var.to_f64() + eps).sqrt()))
}

#[inline(always)]
fn fwd_body<T: WithDType>(x: &[T], g: &[T], b: &[T], eps: f64, y: &mut [T]) {
    let d = g.len();
    for (x, y) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let (mean, r) = stats(x, eps);
        for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(g).zip(b) {
            *y = (x - mean) * r * g + b;
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn bwd_body<T: WithDType>(x: &[T], g: &[T], dy: &[T], eps: f64, dx: &mut [T], dg: &mut [T], db: &mut [T]) {
    let d = g.len();
    let inv_d = T::from_f64(1.0 / d as f64);
    for ((x, dy), dx) in x.chunks_exact(d).zip(dy.chunks_exact(d)).zip(dx.chunks_exact_mut(d)) {
        let (mean, r) = stats(x, eps);
        // mean(g) and mean(g·x̂) with g = dy·γ, x̂ = (x − μ)·r.
        let m1 = sum_zip(dy, g, |dy, g| dy * g) * inv_d;
        let m2 = sum_zip3(dy, g, x, |dy, g, x| dy * g * (x - mean)) * r * inv_d;
        for (((dx, &x), &dy), &g) in dx.iter_mut().zip(x).zip(dy).zip(g) {
            let xh = (x - mean) * r;
            *dx = r * (dy * g - m1 - xh * m2);
        }
        for (((dg, db), &x), &dy) in dg.iter_mut().zip(db.iter_mut()).zip(x).zip(dy) {
            *dg += dy * (x - mean) * r;
            *db += dy;
        }
    }
}

multiversion! {
    /// Forward over whole rows of `g.len()` elements (f32).
    fn fwd_f32(x: &[f32], g: &[f32], b: &[f32], eps: f64, y: &mut [f32]) => fwd_body
}
multiversion! {
    /// Forward over whole rows of `g.len()` elements (f64).
    fn fwd_f64(x: &[f64], g: &[f64], b: &[f64], eps: f64, y: &mut [f64]) => fwd_body
}
multiversion! {
    /// Backward over whole rows, adding into the partial `dg`/`db` (f32).
    #[allow(clippy::too_many_arguments)]
    fn bwd_f32(x: &[f32], g: &[f32], dy: &[f32], eps: f64, dx: &mut [f32], dg: &mut [f32], db: &mut [f32])
        => bwd_body
}
multiversion! {
    /// Backward over whole rows, adding into the partial `dg`/`db` (f64).
    #[allow(clippy::too_many_arguments)]
    fn bwd_f64(x: &[f64], g: &[f64], dy: &[f64], eps: f64, dx: &mut [f64], dg: &mut [f64], db: &mut [f64])
        => bwd_body
}

type FwdKernel<T> = fn(&[T], &[T], &[T], f64, &mut [T]);
type BwdKernel<T> = fn(&[T], &[T], &[T], f64, &mut [T], &mut [T], &mut [T]);

fn fwd<T: WithDType>(x: &[T], g: &[T], b: &[T], eps: f64, kernel: FwdKernel<T>) -> Vec<T> {
    let d = g.len();
    let mut y = vec![T::zero(); x.len()];
    if d == 0 {
        return y;
    }
    let chunk = rows_per_chunk(d) * d;
    y.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .for_each(|(y, x)| kernel(x, g, b, eps, y));
    y
}

/// `[dx | dγ | dβ]` in one buffer.
fn bwd<T: WithDType>(x: &[T], g: &[T], dy: &[T], eps: f64, kernel: BwdKernel<T>) -> Vec<T> {
    let d = g.len();
    let n = x.len();
    let mut out = vec![T::zero(); n + 2 * d];
    if d == 0 {
        return out;
    }
    let chunk = rows_per_chunk(d) * d;
    let chunks = n.div_ceil(chunk);
    let mut partial = vec![T::zero(); chunks * 2 * d];
    let (dx, dgb) = out.split_at_mut(n);
    dx.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .zip(dy.par_chunks(chunk))
        .zip(partial.par_chunks_mut(2 * d))
        .for_each(|(((dx, x), dy), p)| {
            let (pg, pb) = p.split_at_mut(d);
            kernel(x, g, dy, eps, dx, pg, pb);
        });
    for p in partial.chunks_exact(2 * d) {
        for (o, &v) in dgb.iter_mut().zip(p) {
            *o += v;
        }
    }
    out
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        shape(l1, &[l2, l3])?;
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(g), CpuStorage::F32(b)) => CpuStorage::F32(fwd(
                contiguous(NAME, x, l1)?,
                contiguous(NAME, g, l2)?,
                contiguous(NAME, b, l3)?,
                self.eps,
                fwd_f32,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(g), CpuStorage::F64(b)) => CpuStorage::F64(fwd(
                contiguous(NAME, x, l1)?,
                contiguous(NAME, g, l2)?,
                contiguous(NAME, b, l3)?,
                self.eps,
                fwd_f64,
            )),
            _ => bail!(
                "{NAME}: input, weight and bias must all be f32 or all f64, got {:?}, {:?}, {:?}",
                s1.dtype(),
                s2.dtype(),
                s3.dtype()
            ),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let packed = x.apply_op3_no_bwd(gamma, &grad.contiguous()?, &LayerNormBwd(*self))?;
        let (n, d) = (x.elem_count(), gamma.elem_count());
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dg = packed.narrow(0, n, d)?;
        let db = packed.narrow(0, n + d, d)?;
        Ok((Some(dx), Some(dg), Some(db)))
    }
}

/// Gradients of [`LayerNorm`]: (x, γ, output gradient) → `[dx | dγ | dβ]` flat (no backward).
struct LayerNormBwd(LayerNorm);

impl CustomOp3 for LayerNormBwd {
    fn name(&self) -> &'static str {
        "layer_norm_bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, d) = shape(l1, &[l2])?;
        if l3.dims() != l1.dims() {
            bail!(
                "{NAME}: output gradient {:?} does not match input {:?}",
                l3.dims(),
                l1.dims()
            );
        }
        let eps = self.0.eps;
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(g), CpuStorage::F32(dy)) => CpuStorage::F32(bwd(
                contiguous(NAME, x, l1)?,
                contiguous(NAME, g, l2)?,
                contiguous(NAME, dy, l3)?,
                eps,
                bwd_f32,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(g), CpuStorage::F64(dy)) => CpuStorage::F64(bwd(
                contiguous(NAME, x, l1)?,
                contiguous(NAME, g, l2)?,
                contiguous(NAME, dy, l3)?,
                eps,
                bwd_f64,
            )),
            _ => bail!("{NAME}: unsupported dtype {:?} (f32 or f64 expected)", s1.dtype()),
        };
        Ok((out, Shape::from(l1.shape().elem_count() + 2 * d)))
    }
}
