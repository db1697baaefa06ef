//! GELU with the exact error function (`nn.GELU()`) as a CPU custom op with a one-pass backward.
//!
//! Forward `x·Φ(x)`, backward `dy·(Φ(x) + x·φ(x))`, with `Φ(x) = (1 + erf(x/√2))/2` and `φ` the standard normal
//! density. f32: a rational erf (Eigen's / XLA's, |error| < 1e-6 like candle's libm `erff` to f32 rounding) and a
//! vectorised `exp`, so both loops vectorise; f64: libm's `erf` (as candle) and the standard `exp`. Parallel over
//! chunks of elements.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::plane::contiguous;
use super::rows::exp_f32;
use crate::nhwc::multiversion;

const NAME: &str = "gelu_erf";
/// Elements of one parallel task.
const CHUNK: usize = 16 * 1024;
/// 1/√(2π).
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// GELU (erf form).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gelu;

/// Beyond this, erf rounds to ±1 in f32 (erf(3.92) = 1 − 2⁻²⁵).
const ERF_ONE: f32 = 3.92;

/// `erf(x)` for f32 as `x·P(x²)/Q(x²)` on [−3.92, 3.92] (exactly ±1 beyond, as f32 rounds it), straight-line code.
#[inline(always)]
pub(crate) fn erf_f32(x: f32) -> f32 {
    let x = if x < -ERF_ONE { -ERF_ONE } else { x };
    let x = if x > ERF_ONE { ERF_ONE } else { x };
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906_3e-4;
    p = p * x2 + -2.954_6e-3;
    p = p * x2 + -1.609_603_3e-2;
    let mut q = -1.456_607_2e-5f32;
    q = q * x2 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329e-3;
    q = q * x2 + -1.426_474e-2;
    let e = x * p / q;
    if x >= ERF_ONE {
        1.0
    } else if x <= -ERF_ONE {
        -1.0
    } else {
        e
    }
}

#[inline(always)]
fn cdf_f32(x: f32) -> f32 {
    0.5 * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
fn fwd_body_f32(x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = x * cdf_f32(x);
    }
}

#[inline(always)]
fn bwd_body_f32(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
        let pdf = exp_f32(-0.5 * x * x) * INV_SQRT_2PI as f32;
        *dx = dy * (cdf_f32(x) + x * pdf);
    }
}

#[inline(always)]
fn cdf_f64(x: f64) -> f64 {
    0.5 * (1.0 + candle_core::cpu::erf::erf_f64(x * std::f64::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
fn fwd_body_f64(x: &[f64], y: &mut [f64]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = x * cdf_f64(x);
    }
}

#[inline(always)]
fn bwd_body_f64(x: &[f64], dy: &[f64], dx: &mut [f64]) {
    for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
        let pdf = (-0.5 * x * x).exp() * INV_SQRT_2PI;
        *dx = dy * (cdf_f64(x) + x * pdf);
    }
}

multiversion! {
    /// Forward over a slice (f32).
    fn fwd_f32(x: &[f32], y: &mut [f32]) => fwd_body_f32
}
multiversion! {
    /// Backward over a slice (f32).
    fn bwd_f32(x: &[f32], dy: &[f32], dx: &mut [f32]) => bwd_body_f32
}

fn fwd<T: candle_core::WithDType>(x: &[T], kernel: fn(&[T], &mut [T])) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| kernel(x, y));
    y
}

fn bwd<T: candle_core::WithDType>(x: &[T], dy: &[T], kernel: fn(&[T], &[T], &mut [T])) -> Vec<T> {
    let mut dx = vec![T::zero(); x.len()];
    dx.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .zip(dy.par_chunks(CHUNK))
        .for_each(|((dx, x), dy)| kernel(x, dy, dx));
    dx
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(x) => CpuStorage::F32(fwd(contiguous(NAME, x, l)?, fwd_f32)),
            CpuStorage::F64(x) => CpuStorage::F64(fwd(contiguous(NAME, x, l)?, fwd_body_f64)),
            _ => bail!("{NAME}: unsupported dtype {:?} (f32 or f64 expected)", s.dtype()),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, &GeluBwd)?))
    }
}

/// Input gradient of [`Gelu`]: (input, output gradient) → input gradient (no backward).
struct GeluBwd;

impl CustomOp2 for GeluBwd {
    fn name(&self) -> &'static str {
        "gelu_erf_bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        if l2.dims() != l1.dims() {
            bail!(
                "{NAME}: output gradient {:?} does not match input {:?}",
                l2.dims(),
                l1.dims()
            );
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(dy)) => {
                CpuStorage::F32(bwd(contiguous(NAME, x, l1)?, contiguous(NAME, dy, l2)?, bwd_f32))
            }
            (CpuStorage::F64(x), CpuStorage::F64(dy)) => {
                CpuStorage::F64(bwd(contiguous(NAME, x, l1)?, contiguous(NAME, dy, l2)?, bwd_body_f64))
            }
            _ => bail!("{NAME}: unsupported dtype {:?} (f32 or f64 expected)", s1.dtype()),
        };
        Ok((out, l1.shape().clone()))
    }
}
