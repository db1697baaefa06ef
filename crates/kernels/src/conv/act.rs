//! ReLU6, and a residual add with its ReLU, as one CPU pass each with a one-pass backward (candle's `clamp`
//! backward builds several full-size masks per call).

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
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &WindowGrad { hi: 6.0 })?))
    }
}

/// `grad · [0 < v < hi]` in one pass: ReLU6's backward from its input (`hi` 6), ReLU's from its output (`hi` ∞).
struct WindowGrad {
    hi: f32,
}

impl CustomOp2 for WindowGrad {
    fn name(&self) -> &'static str {
        "graft-window-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, g) = (
            cpu_slice(s1, l1, "activation backward: values")?,
            cpu_slice(s2, l2, "activation backward: gradient")?,
        );
        if x.len() != g.len() {
            candle_core::bail!(
                "activation backward: gradient shape {:?} differs from {:?}",
                l2.dims(),
                l1.dims()
            )
        }
        let hi = self.hi;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
            .for_each(|(o, (x, g))| {
                for ((o, &v), &gv) in o.iter_mut().zip(x).zip(g) {
                    *o = if v > 0.0 && v < hi { gv } else { 0.0 };
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

/// `max(a + b, 0)` in one pass; its backward masks the gradient by the output once for both inputs.
struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "graft-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, b) = (cpu_slice(s1, l1, "add-relu: lhs")?, cpu_slice(s2, l2, "add-relu: rhs")?);
        if l1.dims() != l2.dims() {
            candle_core::bail!("add-relu: shapes {:?} and {:?} differ", l1.dims(), l2.dims())
        }
        let mut out = vec![0f32; a.len()];
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(o, (a, b))| {
                for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
                    *o = (x + y).max(0.0);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        if !a.track_op() && !b.track_op() {
            return Ok((None, None));
        }
        let g = res.apply_op2_no_bwd(&grad.contiguous()?, &WindowGrad { hi: f32::INFINITY })?;
        Ok((a.track_op().then(|| g.clone()), b.track_op().then_some(g)))
    }
}

/// `max(a + b, 0)` (a residual connection and its ReLU), differentiable in both; one pass each way on the CPU in
/// f32, candle's `add` and `relu` elsewhere.
pub fn add_relu(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    if !matches!(a.device(), Device::Cpu) || a.dtype() != DType::F32 || b.dtype() != DType::F32 || a.dims() != b.dims()
    {
        return (a + b)?.relu();
    }
    a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
}
