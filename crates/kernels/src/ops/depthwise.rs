//! Depthwise 2-D convolution on the CPU: direct row-wise loops, parallel over (image, channel) planes, with backward.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::plane::{axpy, contiguous, mul_add, sum};
use crate::nhwc::multiversion;
use crate::window::Window;

const NAME: &str = "depthwise_conv2d";

/// Depthwise convolution `x` (N×C×H×W) ⊛ `w` (C×1×k×k) as a candle custom op (CPU, f32/f64).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DepthwiseConv {
    /// Stride.
    pub stride: usize,
    /// Zero padding `[top, bottom, left, right]`.
    pub pad: [usize; 4],
}

/// Shapes `(n, c, geometry)` of a depthwise convolution from the input dims and the weight dims.
fn geometry(x: &[usize], w: &[usize], stride: usize, pad: [usize; 4]) -> Result<(usize, usize, Window)> {
    let &[n, c, h, wd] = x else {
        bail!("{NAME}: input must be N×C×H×W, got {x:?}");
    };
    let &[wc, 1, k, k2] = w else {
        bail!("{NAME}: weight must be C×1×k×k, got {w:?}");
    };
    if wc != c || k != k2 {
        bail!("{NAME}: weight {w:?} does not match {c} input channels with a square kernel");
    }
    Ok((n, c, Window::new(NAME, h, wd, k, stride, pad)?))
}

/// Output values a forward pass keeps in registers per output row (one AVX-512 register of f32).
const LANES: usize = 16;

/// One output plane: `out = Σ_{ky,kx} w[ky,kx] · run(ky, kx)`, `LANES` outputs at a time summed in registers over
/// every kernel cell (one store per output instead of one per cell).
#[inline(always)]
fn fwd_plane<T: WithDType>(scratch: &[T], out: &mut [T], wk: &[T], g: &Window) {
    for (oy, orow) in out.chunks_exact_mut(g.wo).enumerate() {
        let mut x0 = 0;
        while x0 < g.wo {
            let len = LANES.min(g.wo - x0);
            let mut acc = [T::zero(); LANES];
            for ky in 0..g.k {
                for kx in 0..g.k {
                    let at = g.run(oy, ky, kx) + x0;
                    let wv = wk[ky * g.k + kx];
                    if len == LANES {
                        let src: &[T; LANES] = scratch[at..at + LANES].try_into().expect("LANES elements");
                        for j in 0..LANES {
                            acc[j] += wv * src[j];
                        }
                    } else {
                        for (a, &v) in acc.iter_mut().zip(&scratch[at..at + len]) {
                            *a += wv * v;
                        }
                    }
                }
            }
            orow[x0..x0 + len].copy_from_slice(&acc[..len]);
            x0 += len;
        }
    }
}

/// One input-gradient plane, scattered into the (zeroed) padded `scratch`: `run(ky, kx) += w[ky,kx] · gy row`.
#[inline(always)]
fn bwd_input_plane<T: WithDType>(gy: &[T], wk: &[T], scratch: &mut [T], g: &Window) {
    for (oy, grow) in gy.chunks_exact(g.wo).enumerate() {
        for ky in 0..g.k {
            for kx in 0..g.k {
                let at = g.run(oy, ky, kx);
                axpy(&mut scratch[at..at + g.wo], grow, wk[ky * g.k + kx]);
            }
        }
    }
}

/// One image's contribution to a channel's weight gradient: `acc[cell] += gy row ⊙ run(cell)` per output row.
#[inline(always)]
fn bwd_weight_plane<T: WithDType>(gy: &[T], scratch: &[T], acc: &mut [T], g: &Window) {
    for (oy, grow) in gy.chunks_exact(g.wo).enumerate() {
        for (cell, arow) in acc.chunks_exact_mut(g.wo).enumerate() {
            let at = g.run(oy, cell / g.k, cell % g.k);
            mul_add(arow, grow, &scratch[at..at + g.wo]);
        }
    }
}

#[inline(always)]
fn fwd_plane_f32_body(scratch: &[f32], out: &mut [f32], wk: &[f32], g: &Window) {
    fwd_plane(scratch, out, wk, g)
}

#[inline(always)]
fn bwd_input_plane_f32_body(gy: &[f32], wk: &[f32], scratch: &mut [f32], g: &Window) {
    bwd_input_plane(gy, wk, scratch, g)
}

#[inline(always)]
fn bwd_weight_plane_f32_body(gy: &[f32], scratch: &[f32], acc: &mut [f32], g: &Window) {
    bwd_weight_plane(gy, scratch, acc, g)
}

multiversion! {
    /// [`fwd_plane`] for f32 (AVX-512F / AVX2+FMA / portable, chosen at run time).
    fn fwd_plane_f32(scratch: &[f32], out: &mut [f32], wk: &[f32], g: &Window) => fwd_plane_f32_body
}
multiversion! {
    /// [`bwd_input_plane`] for f32.
    fn bwd_input_plane_f32(gy: &[f32], wk: &[f32], scratch: &mut [f32], g: &Window) => bwd_input_plane_f32_body
}
multiversion! {
    /// [`bwd_weight_plane`] for f32.
    fn bwd_weight_plane_f32(gy: &[f32], scratch: &[f32], acc: &mut [f32], g: &Window) => bwd_weight_plane_f32_body
}

/// The per-plane loops of one element type: f32 multiversioned, f64 portable.
trait Planes: WithDType {
    fn fwd_plane(scratch: &[Self], out: &mut [Self], wk: &[Self], g: &Window);
    fn bwd_input_plane(gy: &[Self], wk: &[Self], scratch: &mut [Self], g: &Window);
    fn bwd_weight_plane(gy: &[Self], scratch: &[Self], acc: &mut [Self], g: &Window);
}

impl Planes for f32 {
    fn fwd_plane(scratch: &[f32], out: &mut [f32], wk: &[f32], g: &Window) {
        fwd_plane_f32(scratch, out, wk, g)
    }
    fn bwd_input_plane(gy: &[f32], wk: &[f32], scratch: &mut [f32], g: &Window) {
        bwd_input_plane_f32(gy, wk, scratch, g)
    }
    fn bwd_weight_plane(gy: &[f32], scratch: &[f32], acc: &mut [f32], g: &Window) {
        bwd_weight_plane_f32(gy, scratch, acc, g)
    }
}

impl Planes for f64 {
    fn fwd_plane(scratch: &[f64], out: &mut [f64], wk: &[f64], g: &Window) {
        fwd_plane(scratch, out, wk, g)
    }
    fn bwd_input_plane(gy: &[f64], wk: &[f64], scratch: &mut [f64], g: &Window) {
        bwd_input_plane(gy, wk, scratch, g)
    }
    fn bwd_weight_plane(gy: &[f64], scratch: &[f64], acc: &mut [f64], g: &Window) {
        bwd_weight_plane(gy, scratch, acc, g)
    }
}

fn fwd<T: Planes>(x: &[T], w: &[T], c: usize, g: &Window) -> Vec<T> {
    let kk = g.k * g.k;
    let mut out = vec![T::zero(); x.len() / g.in_len() * g.out_len()];
    out.par_chunks_mut(g.out_len()).enumerate().for_each_init(
        || vec![T::zero(); g.scratch_len()],
        |scratch, (i, out)| {
            let wk = &w[(i % c) * kk..(i % c + 1) * kk];
            g.fill(&x[i * g.in_len()..(i + 1) * g.in_len()], scratch, T::zero());
            T::fwd_plane(scratch, out, wk, g);
        },
    );
    out
}

/// Gradient for the input: the transposed depthwise convolution of the output gradient.
fn bwd_input<T: Planes>(gy: &[T], w: &[T], c: usize, g: &Window) -> Vec<T> {
    let kk = g.k * g.k;
    let mut dx = vec![T::zero(); gy.len() / g.out_len() * g.in_len()];
    dx.par_chunks_mut(g.in_len()).enumerate().for_each_init(
        || vec![T::zero(); g.scratch_len()],
        |scratch, (i, dx)| {
            let wk = &w[(i % c) * kk..(i % c + 1) * kk];
            scratch.fill(T::zero());
            T::bwd_input_plane(&gy[i * g.out_len()..(i + 1) * g.out_len()], wk, scratch, g);
            g.unfill(scratch, dx);
        },
    );
    dx
}

/// Gradient for the weight: per-channel correlation of input and output gradient, summed over the batch.
///
/// Each kernel cell keeps a row of partial sums (element-wise multiply-adds, which vectorise), reduced at the end.
fn bwd_weight<T: Planes>(x: &[T], gy: &[T], n: usize, c: usize, g: &Window) -> Vec<T> {
    let kk = g.k * g.k;
    let mut dw = vec![T::zero(); c * kk];
    dw.par_chunks_mut(kk).enumerate().for_each_init(
        || (vec![T::zero(); g.scratch_len()], vec![T::zero(); kk * g.wo]),
        |(scratch, acc), (ch, dw)| {
            acc.fill(T::zero());
            for b in 0..n {
                let i = b * c + ch;
                g.fill(&x[i * g.in_len()..(i + 1) * g.in_len()], scratch, T::zero());
                T::bwd_weight_plane(&gy[i * g.out_len()..(i + 1) * g.out_len()], scratch, acc, g);
            }
            for (d, arow) in dw.iter_mut().zip(acc.chunks_exact(g.wo)) {
                *d = sum(arow);
            }
        },
    );
    dw
}

fn unsupported(s: &CpuStorage) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "{NAME}: unsupported dtype {:?} (f32 or f64 expected)",
        s.dtype()
    ))
}

impl CustomOp2 for DepthwiseConv {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, g) = geometry(l1.dims(), l2.dims(), self.stride, self.pad)?;
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => {
                CpuStorage::F32(fwd(contiguous(NAME, x, l1)?, contiguous(NAME, w, l2)?, c, &g))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w)) => {
                CpuStorage::F64(fwd(contiguous(NAME, x, l1)?, contiguous(NAME, w, l2)?, c, &g))
            }
            _ => return Err(unsupported(s1)),
        };
        Ok((out, Shape::from((n, c, g.ho, g.wo))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (_, _, h, wd) = x.dims4()?;
        let dx = grad.apply_op2_no_bwd(w, &DepthwiseBwdInput { op: *self, h, w: wd })?;
        let dw = x.apply_op2_no_bwd(
            &grad,
            &DepthwiseBwdWeight {
                op: *self,
                k: w.dim(2)?,
            },
        )?;
        Ok((Some(dx), Some(dw)))
    }
}

/// Input gradient of [`DepthwiseConv`]: (output gradient, weight) → input gradient (no backward).
struct DepthwiseBwdInput {
    op: DepthwiseConv,
    h: usize,
    w: usize,
}

impl CustomOp2 for DepthwiseBwdInput {
    fn name(&self) -> &'static str {
        "depthwise_conv2d_bwd_input"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let &[n, c, ..] = l1.dims() else {
            bail!("{NAME}: output gradient must be 4-D, got {:?}", l1.dims());
        };
        let (_, _, g) = geometry(&[n, c, self.h, self.w], l2.dims(), self.op.stride, self.op.pad)?;
        if l1.dims() != [n, c, g.ho, g.wo] {
            bail!(
                "{NAME}: output gradient {:?} does not match output {:?}",
                l1.dims(),
                [n, c, g.ho, g.wo]
            );
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(gy), CpuStorage::F32(w)) => {
                CpuStorage::F32(bwd_input(contiguous(NAME, gy, l1)?, contiguous(NAME, w, l2)?, c, &g))
            }
            (CpuStorage::F64(gy), CpuStorage::F64(w)) => {
                CpuStorage::F64(bwd_input(contiguous(NAME, gy, l1)?, contiguous(NAME, w, l2)?, c, &g))
            }
            _ => return Err(unsupported(s1)),
        };
        Ok((out, Shape::from((n, c, self.h, self.w))))
    }
}

/// Weight gradient of [`DepthwiseConv`]: (input, output gradient) → weight gradient (no backward).
struct DepthwiseBwdWeight {
    op: DepthwiseConv,
    k: usize,
}

impl CustomOp2 for DepthwiseBwdWeight {
    fn name(&self) -> &'static str {
        "depthwise_conv2d_bwd_weight"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let c = l1.dims().get(1).copied().unwrap_or(0);
        let (n, c, g) = geometry(l1.dims(), &[c, 1, self.k, self.k], self.op.stride, self.op.pad)?;
        if l2.dims() != [n, c, g.ho, g.wo] {
            bail!(
                "{NAME}: output gradient {:?} does not match output {:?}",
                l2.dims(),
                [n, c, g.ho, g.wo]
            );
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(gy)) => CpuStorage::F32(bwd_weight(
                contiguous(NAME, x, l1)?,
                contiguous(NAME, gy, l2)?,
                n,
                c,
                &g,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(gy)) => CpuStorage::F64(bwd_weight(
                contiguous(NAME, x, l1)?,
                contiguous(NAME, gy, l2)?,
                n,
                c,
                &g,
            )),
            _ => return Err(unsupported(s1)),
        };
        Ok((out, Shape::from((c, 1, self.k, self.k))))
    }
}
