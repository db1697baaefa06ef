//! A bias added along the last dimension (rows × C + C) on the CPU, with a backward whose bias gradient is a
//! parallel, vectorised column sum (candle's sum over the leading dimension is a scalar, single-threaded loop).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::plane::contiguous;

const NAME: &str = "add_bias";
/// Rows per parallel task.
const ROWS: usize = 256;

/// `x (… × C) + b (C)` as a candle custom op (CPU, f32/f64).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AddBias;

fn channels(x: &[usize], b: &[usize]) -> Result<usize> {
    let (Some(&c), &[cb]) = (x.last(), b) else {
        bail!("{NAME}: bias must be 1-D and the input at least 1-D, got {x:?} and {b:?}");
    };
    if c != cb {
        bail!("{NAME}: bias of {cb} does not match the last dimension of {x:?}");
    }
    Ok(c)
}

fn fwd<T: WithDType>(x: &[T], b: &[T]) -> Vec<T> {
    let c = b.len();
    let mut out = vec![T::zero(); x.len()];
    if c == 0 {
        return out;
    }
    out.par_chunks_mut(ROWS * c)
        .zip(x.par_chunks(ROWS * c))
        .for_each(|(o, x)| {
            for (orow, xrow) in o.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                for ((o, &x), &b) in orow.iter_mut().zip(xrow).zip(b) {
                    *o = x + b;
                }
            }
        });
    out
}

/// Column sums of `g` (rows × c): per-task partial sums, reduced in task order.
fn column_sums<T: WithDType>(g: &[T], c: usize) -> Vec<T> {
    let mut sum = vec![T::zero(); c];
    if c == 0 {
        return sum;
    }
    let partials: Vec<Vec<T>> = g
        .par_chunks(ROWS * c)
        .map(|block| {
            let mut s = vec![T::zero(); c];
            for row in block.chunks_exact(c) {
                for (s, &v) in s.iter_mut().zip(row) {
                    *s += v;
                }
            }
            s
        })
        .collect();
    for p in &partials {
        for (s, &v) in sum.iter_mut().zip(p) {
            *s += v;
        }
    }
    sum
}

impl CustomOp2 for AddBias {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        channels(l1.dims(), l2.dims())?;
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(b)) => {
                CpuStorage::F32(fwd(contiguous(NAME, x, l1)?, contiguous(NAME, b, l2)?))
            }
            (CpuStorage::F64(x), CpuStorage::F64(b)) => {
                CpuStorage::F64(fwd(contiguous(NAME, x, l1)?, contiguous(NAME, b, l2)?))
            }
            _ => bail!("{NAME}: unsupported dtype {:?} (f32 or f64 expected)", s1.dtype()),
        };
        Ok((out, l1.shape().clone()))
    }

    /// The input's gradient is the output's (shared, no copy); the bias's, its column sums (only when needed).
    fn bwd(&self, x: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = x.track_op().then(|| grad.clone());
        let db = if b.track_op() {
            Some(grad.contiguous()?.apply_op1_no_bwd(&ColumnSums)?)
        } else {
            None
        };
        Ok((dx, db))
    }
}

/// Sum over every dimension but the last (the bias gradient of [`AddBias`]; no backward).
struct ColumnSums;

impl candle_core::CustomOp1 for ColumnSums {
    fn name(&self) -> &'static str {
        "add_bias_bwd"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let c = l.dims().last().copied().unwrap_or(0);
        let out = match s {
            CpuStorage::F32(g) => CpuStorage::F32(column_sums(contiguous(NAME, g, l)?, c)),
            CpuStorage::F64(g) => CpuStorage::F64(column_sums(contiguous(NAME, g, l)?, c)),
            _ => bail!("{NAME}: unsupported dtype {:?} (f32 or f64 expected)", s.dtype()),
        };
        Ok((out, Shape::from(c)))
    }
}
