//! Softmax over the last dimension as a CPU custom op with a hand-written backward.
//!
//! Forward per row: the maximum, `e = exp(x − max)` written straight into the output with its sum, then one scale by
//! `1/Σe` (f32: a vectorised `exp`; f64: the standard one). Backward from the output alone:
//! `dx = y ⊙ (dy − Σ dy⊙y)`. Both run over chunks of rows in parallel.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::plane::contiguous;
use super::rows::{exp_f32, max, rows_per_chunk, sum_map, sum_zip};
use crate::nhwc::multiversion;

const NAME: &str = "softmax_last_dim";

/// Softmax over the last dimension.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Softmax;

/// The last dimension of `l` (an error for a scalar).
fn last_dim(l: &Layout) -> Result<usize> {
    match l.dims().last() {
        Some(&d) => Ok(d),
        None => bail!("{NAME}: input must have at least one dimension"),
    }
}

#[inline(always)]
fn fwd_rows<T: WithDType>(x: &[T], d: usize, y: &mut [T], exp: impl Fn(T) -> T) {
    for (x, y) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let m = max(x);
        for (y, &x) in y.iter_mut().zip(x) {
            *y = exp(x - m);
        }
        let inv = T::one() / sum_map(y, |v| v);
        y.iter_mut().for_each(|v| *v *= inv);
    }
}

#[inline(always)]
fn fwd_body_f32(x: &[f32], d: usize, y: &mut [f32]) {
    fwd_rows(x, d, y, exp_f32)
}

#[inline(always)]
fn fwd_body_f64(x: &[f64], d: usize, y: &mut [f64]) {
    fwd_rows(x, d, y, f64::exp)
}

#[inline(always)]
fn bwd_body<T: WithDType>(y: &[T], dy: &[T], d: usize, dx: &mut [T]) {
    for ((y, dy), dx) in y.chunks_exact(d).zip(dy.chunks_exact(d)).zip(dx.chunks_exact_mut(d)) {
        let s = sum_zip(y, dy, |y, dy| y * dy);
        for ((dx, &y), &dy) in dx.iter_mut().zip(y).zip(dy) {
            *dx = y * (dy - s);
        }
    }
}

multiversion! {
    /// Forward over whole rows of `d` elements (f32).
    fn fwd_f32(x: &[f32], d: usize, y: &mut [f32]) => fwd_body_f32
}
multiversion! {
    /// Forward over whole rows of `d` elements (f64).
    fn fwd_f64(x: &[f64], d: usize, y: &mut [f64]) => fwd_body_f64
}
multiversion! {
    /// Backward over whole rows of `d` elements (f32).
    fn bwd_f32(y: &[f32], dy: &[f32], d: usize, dx: &mut [f32]) => bwd_body
}
multiversion! {
    /// Backward over whole rows of `d` elements (f64).
    fn bwd_f64(y: &[f64], dy: &[f64], d: usize, dx: &mut [f64]) => bwd_body
}

fn fwd<T: WithDType>(x: &[T], d: usize, kernel: fn(&[T], usize, &mut [T])) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    if d == 0 {
        return y;
    }
    let chunk = rows_per_chunk(d) * d;
    y.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .for_each(|(y, x)| kernel(x, d, y));
    y
}

fn bwd<T: WithDType>(y: &[T], dy: &[T], d: usize, kernel: fn(&[T], &[T], usize, &mut [T])) -> Vec<T> {
    let mut dx = vec![T::zero(); y.len()];
    if d == 0 {
        return dx;
    }
    let chunk = rows_per_chunk(d) * d;
    dx.par_chunks_mut(chunk)
        .zip(y.par_chunks(chunk))
        .zip(dy.par_chunks(chunk))
        .for_each(|((dx, y), dy)| kernel(y, dy, d, dx));
    dx
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = last_dim(l)?;
        let out = match s {
            CpuStorage::F32(x) => CpuStorage::F32(fwd(contiguous(NAME, x, l)?, d, fwd_f32)),
            CpuStorage::F64(x) => CpuStorage::F64(fwd(contiguous(NAME, x, l)?, d, fwd_f64)),
            _ => bail!("{NAME}: unsupported dtype {:?} (f32 or f64 expected)", s.dtype()),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            res.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBwd)?,
        ))
    }
}

/// Input gradient of [`Softmax`]: (output, output gradient) → input gradient (no backward).
struct SoftmaxBwd;

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "softmax_last_dim_bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = last_dim(l1)?;
        if l2.dims() != l1.dims() {
            bail!(
                "{NAME}: output gradient {:?} does not match output {:?}",
                l2.dims(),
                l1.dims()
            );
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(y), CpuStorage::F32(dy)) => {
                CpuStorage::F32(bwd(contiguous(NAME, y, l1)?, contiguous(NAME, dy, l2)?, d, bwd_f32))
            }
            (CpuStorage::F64(y), CpuStorage::F64(dy)) => {
                CpuStorage::F64(bwd(contiguous(NAME, y, l1)?, contiguous(NAME, dy, l2)?, d, bwd_f64))
            }
            _ => bail!("{NAME}: unsupported dtype {:?} (f32 or f64 expected)", s1.dtype()),
        };
        Ok((out, l1.shape().clone()))
    }
}
