//! ReLU6 as one CPU pass with a one-pass backward (candle's `clamp` backward builds several full-size masks per call).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_slice;

/// Elements per parallel chunk.
const CHUNK: usize = 1 << 16;

struct Relu6;

impl CustomOp1 for Relu6 {
    fn name(&self) -> &'static str {
        "graft-relu6"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l, "relu6: input")?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(o, x)| o.iter_mut().zip(x).for_each(|(o, &v)| *o = v.clamp(0.0, 6.0)));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &Relu6Grad)?))
    }
}

/// `grad · [0 < x < 6]` in one pass.
struct Relu6Grad;

impl CustomOp2 for Relu6Grad {
    fn name(&self) -> &'static str {
        "graft-relu6-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, g) = (
            cpu_slice(s1, l1, "relu6: input")?,
            cpu_slice(s2, l2, "relu6: gradient")?,
        );
        if x.len() != g.len() {
            candle_core::bail!(
                "relu6 backward: gradient shape {:?} differs from {:?}",
                l2.dims(),
                l1.dims()
            )
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
            .for_each(|(o, (x, g))| {
                for ((o, &v), &gv) in o.iter_mut().zip(x).zip(g) {
                    *o = if v > 0.0 && v < 6.0 { gv } else { 0.0 };
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// min(max(x, 0), 6), differentiable (gradient passes where 0 < x < 6).
pub fn relu6(x: &Tensor) -> candle_core::Result<Tensor> {
    if !matches!(x.device(), Device::Cpu) || x.dtype() != DType::F32 {
        return x.clamp(0f32, 6f32);
    }
    x.contiguous()?.apply_op1(Relu6)
}
