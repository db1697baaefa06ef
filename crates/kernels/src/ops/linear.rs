//! Inference-only linear layer over pixel rows: `x · Wᵀ + b [+ skip]`, one GEMM per block of rows with the bias and
//! the residual added while the block is in cache, blocks in parallel (CPU f32, no backward).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape};
use rayon::prelude::*;

use super::plane::contiguous;
use crate::nhwc::{pointwise, Activation};

const NAME: &str = "linear_rows";

fn f32s(s: &CpuStorage) -> Result<&[f32]> {
    match s {
        CpuStorage::F32(v) => Ok(v),
        _ => bail!("{NAME}: f32 only, got {:?}", s.dtype()),
    }
}
/// Rows per GEMM block (the block's output stays in L2 for the epilogue).
const ROWS: usize = 256;

/// `x (rows × in) · wᵀ (w: out × in) + bias [+ skip (rows × out)]`.
#[derive(Debug, Clone)]
pub(crate) struct LinearRows {
    /// The bias, `out`.
    pub bias: Vec<f32>,
}

impl LinearRows {
    fn run(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        skip: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (&[rows, ci], &[co, wi]) = (x.1.dims(), w.1.dims()) else {
            bail!(
                "{NAME}: input must be rows × in and weight out × in, got {:?} and {:?}",
                x.1.dims(),
                w.1.dims()
            );
        };
        if wi != ci || co != self.bias.len() {
            bail!(
                "{NAME}: weight {:?} and bias of {} do not match an input of {ci}",
                w.1.dims(),
                self.bias.len()
            );
        }
        let xs = contiguous(NAME, f32s(x.0)?, x.1)?;
        let ws = contiguous(NAME, f32s(w.0)?, w.1)?;
        let skip = match skip {
            Some((s, l)) => {
                if l.dims() != [rows, co] {
                    bail!(
                        "{NAME}: residual {:?} does not match the output {:?}",
                        l.dims(),
                        [rows, co]
                    );
                }
                Some(contiguous(NAME, f32s(s)?, l)?)
            }
            None => None,
        };
        let mut out = vec![0f32; rows * co];
        if co > 0 {
            out.par_chunks_mut(ROWS * co).enumerate().for_each(|(i, o)| {
                let r0 = i * ROWS;
                let r = o.len() / co;
                let s = skip.map(|s| &s[r0 * co..(r0 + r) * co]);
                pointwise(
                    &xs[r0 * ci..(r0 + r) * ci],
                    r,
                    ci,
                    ws,
                    &self.bias,
                    Activation::None,
                    s,
                    o,
                    1,
                );
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, co))))
    }
}

impl CustomOp2 for LinearRows {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        self.run((s1, l1), (s2, l2), None)
    }
}

impl CustomOp3 for LinearRows {
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
        self.run((s1, l1), (s2, l2), Some((s3, l3)))
    }
}
