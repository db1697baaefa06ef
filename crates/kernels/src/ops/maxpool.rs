//! Max-pooling on the CPU with any kernel/stride/padding and a backward pass (PyTorch semantics).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::plane::contiguous;
use crate::window::Window;

const NAME: &str = "max_pool2d";

/// Max-pooling of N×C×H×W with a square kernel, stride and symmetric padding (padded cells never win).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaxPool {
    /// Square kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Padding on every side.
    pub padding: usize,
}

impl MaxPool {
    /// Shapes `(planes, geometry)` for an input of `dims`.
    fn geometry(&self, dims: &[usize]) -> Result<(usize, usize, Window)> {
        let &[n, c, h, w] = dims else {
            bail!("{NAME}: input must be N×C×H×W, got {dims:?}");
        };
        if 2 * self.padding > self.kernel {
            bail!(
                "{NAME}: padding {} exceeds half the kernel {}",
                self.padding,
                self.kernel
            );
        }
        Ok((
            n,
            c,
            Window::new(NAME, h, w, self.kernel, self.stride, [self.padding; 4])?,
        ))
    }
}

/// Whether `v` replaces the running maximum `m` (greater, or NaN, as PyTorch).
#[inline]
fn wins<T: WithDType>(v: T, m: T) -> bool {
    #[allow(clippy::eq_op)]
    let nan = v != v;
    v > m || nan
}

fn fwd<T: WithDType>(x: &[T], g: &Window) -> Vec<T> {
    let neg_inf = T::from_f64(f64::NEG_INFINITY);
    let mut out = vec![neg_inf; x.len() / g.in_len() * g.out_len()];
    out.par_chunks_mut(g.out_len()).enumerate().for_each_init(
        || vec![T::zero(); g.scratch_len()],
        |scratch, (i, out)| {
            g.fill(&x[i * g.in_len()..(i + 1) * g.in_len()], scratch, neg_inf);
            for (oy, orow) in out.chunks_exact_mut(g.wo).enumerate() {
                for ky in 0..g.k {
                    for kx in 0..g.k {
                        let at = g.run(oy, ky, kx);
                        for (m, &v) in orow.iter_mut().zip(&scratch[at..at + g.wo]) {
                            *m = if wins(v, *m) { v } else { *m };
                        }
                    }
                }
            }
        },
    );
    out
}

/// Route each output gradient to the first maximum of its window (over input cells only); overlaps accumulate.
fn bwd<T: WithDType>(x: &[T], gy: &[T], g: &Window) -> Vec<T> {
    let neg_inf = T::from_f64(f64::NEG_INFINITY);
    let (s, p) = (g.stride, g.pad[0]);
    let mut dx = vec![T::zero(); x.len()];
    dx.par_chunks_mut(g.in_len()).enumerate().for_each(|(i, dx)| {
        let xp = &x[i * g.in_len()..(i + 1) * g.in_len()];
        let gp = &gy[i * g.out_len()..(i + 1) * g.out_len()];
        for oy in 0..g.ho {
            let y0 = (oy * s).saturating_sub(p);
            let y1 = (oy * s + g.k - p).min(g.h);
            for ox in 0..g.wo {
                let x0 = (ox * s).saturating_sub(p);
                let x1 = (ox * s + g.k - p).min(g.w);
                let (mut best, mut at) = (neg_inf, y0 * g.w + x0);
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        let v = xp[iy * g.w + ix];
                        if wins(v, best) {
                            best = v;
                            at = iy * g.w + ix;
                        }
                    }
                }
                dx[at] += gp[oy * g.wo + ox];
            }
        }
    });
    dx
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, g) = self.geometry(l.dims())?;
        let out = match s {
            CpuStorage::F32(x) => CpuStorage::F32(fwd(contiguous(NAME, x, l)?, &g)),
            CpuStorage::F64(x) => CpuStorage::F64(fwd(contiguous(NAME, x, l)?, &g)),
            _ => bail!("{NAME}: unsupported dtype {:?} (f32 or f64 expected)", s.dtype()),
        };
        Ok((out, Shape::from((n, c, g.ho, g.wo))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &MaxPoolBwd(*self))?))
    }
}

/// Input gradient of [`MaxPool`]: (input, output gradient) → input gradient (no backward).
struct MaxPoolBwd(MaxPool);

impl CustomOp2 for MaxPoolBwd {
    fn name(&self) -> &'static str {
        "max_pool2d_bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, g) = self.0.geometry(l1.dims())?;
        if l2.dims() != [n, c, g.ho, g.wo] {
            bail!(
                "{NAME}: output gradient {:?} does not match output {:?}",
                l2.dims(),
                [n, c, g.ho, g.wo]
            );
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(gy)) => {
                CpuStorage::F32(bwd(contiguous(NAME, x, l1)?, contiguous(NAME, gy, l2)?, &g))
            }
            (CpuStorage::F64(x), CpuStorage::F64(gy)) => {
                CpuStorage::F64(bwd(contiguous(NAME, x, l1)?, contiguous(NAME, gy, l2)?, &g))
            }
            _ => bail!("{NAME}: unsupported dtype {:?} (f32 or f64 expected)", s1.dtype()),
        };
        Ok((out, l1.shape().clone()))
    }
}
