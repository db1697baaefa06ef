//! One in-place pass per optimizer tensor on the CPU (f32, contiguous): the update rules of [`super::Sgd`] and
//! [`super::Adam`] written as candle in-place ops, so a step neither allocates nor walks each tensor once per
//! elementary operation. [`applies`] says when they run; elsewhere the optimizers compose tensor operations.

use candle_core::{bail, CpuStorage, InplaceOp3, Layout, Tensor};
use kernels::conv::cpu_slice;
use rayon::prelude::*;

/// Elements per parallel chunk (tensors up to this size run on one thread).
const CHUNK: usize = 1 << 15;

/// Whether the fused passes apply: every tensor on the CPU, f32, contiguous, with the same number of elements.
pub(crate) fn applies(ts: &[&Tensor]) -> bool {
    let n = ts[0].elem_count();
    ts.iter().all(|t| {
        t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && t.is_contiguous() && t.elem_count() == n
    })
}

fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
    let (CpuStorage::F32(v), Some((a, b))) = (s, l.contiguous_offsets()) else {
        bail!("fused optimizer: the updated tensor is not a contiguous f32 tensor");
    };
    Ok(&mut v[a..b])
}

/// `f(dst, a, b)` over matching chunks of the three slices, in parallel for large tensors.
fn zip3(dst: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(&mut [f32], &[f32], &[f32]) + Sync) {
    if dst.len() <= CHUNK {
        return f(dst, a, b);
    }
    dst.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK))
        .zip(b.par_chunks(CHUNK))
        .for_each(|((d, a), b)| f(d, a, b));
}

/// SGD's momentum buffer, in place: `buf = μ·buf + (g + wd·p)`.
pub(crate) struct SgdMomentum {
    /// Momentum factor μ.
    pub momentum: f32,
    /// L2 penalty.
    pub weight_decay: f32,
}

impl InplaceOp3 for SgdMomentum {
    fn name(&self) -> &'static str {
        "sgd-momentum"
    }

    fn cpu_fwd(
        &self,
        buf: &mut CpuStorage,
        lb: &Layout,
        g: &CpuStorage,
        lg: &Layout,
        p: &CpuStorage,
        lp: &Layout,
    ) -> candle_core::Result<()> {
        let (mu, wd) = (self.momentum, self.weight_decay);
        let (g, p) = (
            cpu_slice(g, lg, "fused optimizer: gradient")?,
            cpu_slice(p, lp, "fused optimizer: parameter")?,
        );
        zip3(slice_mut(buf, lb)?, g, p, |b, g, p| {
            for ((b, g), p) in b.iter_mut().zip(g).zip(p) {
                *b = *b * mu + (g + wd * p);
            }
        });
        Ok(())
    }
}

/// SGD's parameter update, in place: `p −= lr·d` with `d = buf`, or `d = (g + wd·p) + μ·buf` (Nesterov), or
/// `d = g + wd·p` without momentum (then `buf` is the gradient and unused).
pub(crate) struct SgdApply {
    /// Learning rate.
    pub lr: f32,
    /// Momentum factor μ (0: none).
    pub momentum: f32,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 penalty.
    pub weight_decay: f32,
}

impl InplaceOp3 for SgdApply {
    fn name(&self) -> &'static str {
        "sgd-apply"
    }

    fn cpu_fwd(
        &self,
        p: &mut CpuStorage,
        lp: &Layout,
        buf: &CpuStorage,
        lb: &Layout,
        g: &CpuStorage,
        lg: &Layout,
    ) -> candle_core::Result<()> {
        let Self {
            lr,
            momentum: mu,
            nesterov,
            weight_decay: wd,
        } = *self;
        let (buf, g) = (
            cpu_slice(buf, lb, "fused optimizer: momentum buffer")?,
            cpu_slice(g, lg, "fused optimizer: gradient")?,
        );
        zip3(slice_mut(p, lp)?, buf, g, |p, buf, g| {
            for ((p, b), g) in p.iter_mut().zip(buf).zip(g) {
                let d = if mu == 0.0 {
                    g + wd * *p
                } else if nesterov {
                    (g + wd * *p) + mu * b
                } else {
                    *b
                };
                *p -= lr * d;
            }
        });
        Ok(())
    }
}

/// Adam's moment estimates, in place: `m = β·m + (1 − β)·g'` (`square`: `v = β·v + (1 − β)·g'²`), with
/// `g' = g + wd·p` (L2, Adam) or `g' = g` (`weight_decay` 0, AdamW).
pub(crate) struct AdamMoment {
    /// β₁ or β₂.
    pub beta: f32,
    /// Whether this is the second moment (squared gradients).
    pub square: bool,
    /// L2 penalty added to the gradient (0 for AdamW's decoupled decay).
    pub weight_decay: f32,
}

impl InplaceOp3 for AdamMoment {
    fn name(&self) -> &'static str {
        "adam-moment"
    }

    fn cpu_fwd(
        &self,
        m: &mut CpuStorage,
        lm: &Layout,
        g: &CpuStorage,
        lg: &Layout,
        p: &CpuStorage,
        lp: &Layout,
    ) -> candle_core::Result<()> {
        let (beta, wd, square) = (self.beta, self.weight_decay, self.square);
        let (g, p) = (
            cpu_slice(g, lg, "fused optimizer: gradient")?,
            cpu_slice(p, lp, "fused optimizer: parameter")?,
        );
        zip3(slice_mut(m, lm)?, g, p, |m, g, p| {
            for ((m, g), p) in m.iter_mut().zip(g).zip(p) {
                let g = g + wd * p;
                let g = if square { g * g } else { g };
                *m = *m * beta + g * (1.0 - beta);
            }
        });
        Ok(())
    }
}

/// Adam's parameter update, in place: `p = p·(1 − lr·wd)` (AdamW), then `p −= (lr / bc₁) · m / (√v / √bc₂ + ε)`.
pub(crate) struct AdamApply {
    /// Learning rate.
    pub lr: f32,
    /// Decoupled weight decay (0 for Adam's L2 form).
    pub decoupled_decay: f32,
    /// Bias corrections `1 − β₁ᵗ` and `1 − β₂ᵗ`.
    pub bc: (f32, f32),
    /// ε.
    pub eps: f32,
}

impl InplaceOp3 for AdamApply {
    fn name(&self) -> &'static str {
        "adam-apply"
    }

    fn cpu_fwd(
        &self,
        p: &mut CpuStorage,
        lp: &Layout,
        m: &CpuStorage,
        lm: &Layout,
        v: &CpuStorage,
        lv: &Layout,
    ) -> candle_core::Result<()> {
        let keep = 1.0 - self.lr * self.decoupled_decay;
        let (step, sqrt_bc2, eps) = (self.lr / self.bc.0, self.bc.1.sqrt(), self.eps);
        let (m, v) = (
            cpu_slice(m, lm, "fused optimizer: first moment")?,
            cpu_slice(v, lv, "fused optimizer: second moment")?,
        );
        zip3(slice_mut(p, lp)?, m, v, |p, m, v| {
            for ((p, m), v) in p.iter_mut().zip(m).zip(v) {
                let decayed = if keep == 1.0 { *p } else { *p * keep };
                *p = decayed - m / (v.sqrt() / sqrt_bc2 + eps) * step;
            }
        });
        Ok(())
    }
}

/// A copy that shares no storage with `t` where the fused passes could update `t` in place (CPU tensors): state
/// handed out by `Optimizer::state` or taken in by `load_state` stays as it was. (A CPU copy fails only when the
/// allocation does, which aborts first.)
pub(crate) fn snapshot(t: &Tensor) -> Tensor {
    if t.device().is_cpu() {
        t.copy().unwrap_or_else(|_| t.clone())
    } else {
        t.clone()
    }
}
