//! Depthwise 2-D convolution of channels-last (N×H×W×C) tensors on the CPU, with backward.
//!
//! Rows = pixels, columns = channels: every loop runs over a block of channels (16, then 8, then single ones) whose
//! accumulators stay in registers across the kernel taps. Forward and input gradient are gathers (each output cell
//! written once), parallel over (image, row); the weight gradient keeps one accumulator block per (tap, channel
//! block) in registers along an output row and adds it into per-task partial sums, reduced in task order at the end
//! (deterministic). The hot loops are compiled twice (AVX2+FMA chosen at run time, and the portable baseline).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::plane::contiguous;
use crate::nhwc::multiversion;
use crate::window::Window;

const NAME: &str = "depthwise_conv2d_nhwc";

/// Depthwise convolution `x` (N×H×W×C) ⊛ `w` (C×1×k×k) as a candle custom op (CPU, f32/f64).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DepthwiseNhwc {
    /// Stride.
    pub stride: usize,
    /// Zero padding `[top, bottom, left, right]`.
    pub pad: [usize; 4],
}

/// Shapes `(n, c, geometry)` from the input dims (N×H×W×C) and the weight dims (C×1×k×k).
fn geometry(x: &[usize], w: &[usize], stride: usize, pad: [usize; 4]) -> Result<(usize, usize, Window)> {
    let &[n, h, wd, c] = x else {
        bail!("{NAME}: input must be N×H×W×C, got {x:?}");
    };
    let &[wc, 1, k, k2] = w else {
        bail!("{NAME}: weight must be C×1×k×k, got {w:?}");
    };
    if wc != c || k != k2 {
        bail!("{NAME}: weight {w:?} does not match {c} input channels (last dim) with a square kernel");
    }
    Ok((n, c, Window::new(NAME, h, wd, k, stride, pad)?))
}

/// The weight C×(k·k) transposed to tap-major (k·k)×C.
fn tap_major<T: WithDType>(w: &[T], c: usize, kk: usize) -> Vec<T> {
    let mut out = vec![T::zero(); c * kk];
    for ch in 0..c {
        for t in 0..kk {
            out[t * c + ch] = w[ch * kk + t];
        }
    }
    out
}

/// Kernel taps and output positions that reach each input position along one axis in the transposed convolution:
/// for input `i`, the pairs `(tap, o)` with `o·stride + tap − pad = i`, flattened with offsets.
struct Reach {
    offsets: Vec<usize>,
    pairs: Vec<(usize, usize)>,
}

impl Reach {
    fn new(n_in: usize, n_out: usize, k: usize, stride: usize, pad: usize) -> Self {
        let mut offsets = Vec::with_capacity(n_in + 1);
        let mut pairs = Vec::new();
        offsets.push(0);
        for i in 0..n_in {
            let t = i + pad;
            for tap in 0..k.min(t + 1) {
                let d = t - tap;
                if d % stride == 0 && d / stride < n_out {
                    pairs.push((tap, d / stride));
                }
            }
            offsets.push(pairs.len());
        }
        Self { offsets, pairs }
    }

    #[inline(always)]
    fn at(&self, i: usize) -> &[(usize, usize)] {
        &self.pairs[self.offsets[i]..self.offsets[i + 1]]
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Forward: one output row of one image.

/// Run `$f::<_, L>(args…, c0)` over the channels `0..$c` in blocks: L = 16 while 16 fit, then one block of 8, then
/// single channels.
macro_rules! by_blocks {
    ($c:expr, $f:ident($($arg:expr),*)) => {{
        let mut c0 = 0;
        while c0 + 16 <= $c {
            $f::<_, 16>($($arg,)* c0);
            c0 += 16;
        }
        if c0 + 8 <= $c {
            $f::<_, 8>($($arg,)* c0);
            c0 += 8;
        }
        while c0 < $c {
            $f::<_, 1>($($arg,)* c0);
            c0 += 1;
        }
    }};
}

/// Output pixel `(oy, ox)`, channels `c0..c0 + L`: `L` accumulators across the taps `ky0..ky1 × kx0..kx1`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fwd_block<T: WithDType, const L: usize>(
    x: &[T],
    wk: &[T],
    c: usize,
    g: &Window,
    (oy, ox): (usize, usize),
    (ky0, ky1, kx0, kx1): (usize, usize, usize, usize),
    o: &mut [T],
    c0: usize,
) {
    let mut acc = [T::zero(); L];
    for ky in ky0..ky1 {
        let iy = oy * g.stride + ky - g.pad[0];
        for kx in kx0..kx1 {
            let ix = ox * g.stride + kx - g.pad[2];
            let xi = &x[(iy * g.w + ix) * c + c0..][..L];
            let wi = &wk[(ky * g.k + kx) * c + c0..][..L];
            for j in 0..L {
                acc[j] += xi[j] * wi[j];
            }
        }
    }
    o[c0..c0 + L].copy_from_slice(&acc);
}

#[inline(always)]
fn fwd_row_body<T: WithDType>(x: &[T], wk: &[T], c: usize, g: &Window, oy: usize, out: &mut [T]) {
    let (ky0, ky1) = g.row_taps(oy);
    for ox in 0..g.wo {
        let (kx0, kx1) = g.col_taps(ox);
        let o = &mut out[ox * c..][..c];
        by_blocks!(c, fwd_block(x, wk, c, g, (oy, ox), (ky0, ky1, kx0, kx1), &mut *o));
    }
}

multiversion! {
    /// One output row `oy` (wo×c) of the image `x` (h×w×c) by the tap-major weight `wk` ((k·k)×c).
    fn fwd_row_f32(x: &[f32], wk: &[f32], c: usize, g: &Window, oy: usize, out: &mut [f32]) => fwd_row_body
}
multiversion! {
    /// [`fwd_row_f32`] in f64.
    fn fwd_row_f64(x: &[f64], wk: &[f64], c: usize, g: &Window, oy: usize, out: &mut [f64]) => fwd_row_body
}

type FwdRow<T> = fn(&[T], &[T], usize, &Window, usize, &mut [T]);

fn fwd<T: WithDType>(x: &[T], w: &[T], n: usize, c: usize, g: &Window, row: FwdRow<T>) -> Vec<T> {
    let wk = tap_major(w, c, g.k * g.k);
    let (in_img, out_row) = (g.h * g.w * c, g.wo * c);
    let mut out = vec![T::zero(); n * g.ho * out_row];
    out.par_chunks_mut(out_row).enumerate().for_each(|(r, o)| {
        let (b, oy) = (r / g.ho, r % g.ho);
        row(&x[b * in_img..(b + 1) * in_img], &wk, c, g, oy, o);
    });
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Input gradient: one input row of one image, gathered from the output gradient.

/// Input-gradient pixel, channels `c0..c0 + L`: `L` accumulators across the (tap, output) pairs that reach it.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn bwd_input_block<T: WithDType, const L: usize>(
    gy: &[T],
    wk: &[T],
    c: usize,
    g: &Window,
    rows: &[(usize, usize)],
    cols: &[(usize, usize)],
    d: &mut [T],
    c0: usize,
) {
    let mut acc = [T::zero(); L];
    for &(ky, oy) in rows {
        for &(kx, ox) in cols {
            let gi = &gy[(oy * g.wo + ox) * c + c0..][..L];
            let wi = &wk[(ky * g.k + kx) * c + c0..][..L];
            for j in 0..L {
                acc[j] += gi[j] * wi[j];
            }
        }
    }
    d[c0..c0 + L].copy_from_slice(&acc);
}

#[inline(always)]
fn bwd_input_row_body<T: WithDType>(
    gy: &[T],
    wk: &[T],
    c: usize,
    g: &Window,
    rows: &[(usize, usize)],
    cols: &Reach,
    dx: &mut [T],
) {
    for ix in 0..g.w {
        let taps = cols.at(ix);
        let d = &mut dx[ix * c..][..c];
        by_blocks!(c, bwd_input_block(gy, wk, c, g, rows, taps, &mut *d));
    }
}

multiversion! {
    /// One input-gradient row (w×c) from the image's output gradient `gy` (ho×wo×c); `rows` are the (tap, output
    /// row) pairs that reach this input row, `cols` the same per input column.
    fn bwd_input_row_f32(gy: &[f32], wk: &[f32], c: usize, g: &Window, rows: &[(usize, usize)], cols: &Reach,
        dx: &mut [f32]) => bwd_input_row_body
}
multiversion! {
    /// [`bwd_input_row_f32`] in f64.
    fn bwd_input_row_f64(gy: &[f64], wk: &[f64], c: usize, g: &Window, rows: &[(usize, usize)], cols: &Reach,
        dx: &mut [f64]) => bwd_input_row_body
}

type BwdInputRow<T> = fn(&[T], &[T], usize, &Window, &[(usize, usize)], &Reach, &mut [T]);

fn bwd_input<T: WithDType>(gy: &[T], w: &[T], n: usize, c: usize, g: &Window, row: BwdInputRow<T>) -> Vec<T> {
    let wk = tap_major(w, c, g.k * g.k);
    let rows = Reach::new(g.h, g.ho, g.k, g.stride, g.pad[0]);
    let cols = Reach::new(g.w, g.wo, g.k, g.stride, g.pad[2]);
    let (out_img, in_row) = (g.ho * g.wo * c, g.w * c);
    let mut dx = vec![T::zero(); n * g.h * in_row];
    dx.par_chunks_mut(in_row).enumerate().for_each(|(r, d)| {
        let (b, iy) = (r / g.h, r % g.h);
        row(&gy[b * out_img..(b + 1) * out_img], &wk, c, g, rows.at(iy), &cols, d);
    });
    dx
}

// ---------------------------------------------------------------------------------------------------------------
// Weight gradient: output rows `r0..r1` (over the whole batch) added into a tap-major partial sum.

/// Tap `kx` of one (output row, input row) pair, channels `c0..c0 + L`: `L` accumulators along the output columns
/// `lo..hi`, added into the tap's partial sums `d`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn bwd_weight_block<T: WithDType, const L: usize>(
    grow: &[T],
    xrow: &[T],
    c: usize,
    g: &Window,
    kx: usize,
    (lo, hi): (usize, usize),
    d: &mut [T],
    c0: usize,
) {
    let mut acc = [T::zero(); L];
    for ox in lo..hi {
        let ix = ox * g.stride + kx - g.pad[2];
        let gi = &grow[ox * c + c0..][..L];
        let xi = &xrow[ix * c + c0..][..L];
        for j in 0..L {
            acc[j] += gi[j] * xi[j];
        }
    }
    for (dv, a) in d[c0..c0 + L].iter_mut().zip(acc) {
        *dv += a;
    }
}

#[inline(always)]
fn bwd_weight_rows_body<T: WithDType>(x: &[T], gy: &[T], c: usize, g: &Window, r0: usize, r1: usize, dw: &mut [T]) {
    let (in_img, out_img) = (g.h * g.w * c, g.ho * g.wo * c);
    for r in r0..r1 {
        let (b, oy) = (r / g.ho, r % g.ho);
        let xb = &x[b * in_img..(b + 1) * in_img];
        let grow = &gy[b * out_img + oy * g.wo * c..][..g.wo * c];
        let (ky0, ky1) = g.row_taps(oy);
        for ky in ky0..ky1 {
            let iy = oy * g.stride + ky - g.pad[0];
            let xrow = &xb[iy * g.w * c..][..g.w * c];
            for kx in 0..g.k {
                let cols = g.valid_cols(kx);
                let d = &mut dw[(ky * g.k + kx) * c..][..c];
                by_blocks!(c, bwd_weight_block(grow, xrow, c, g, kx, cols, &mut *d));
            }
        }
    }
}

multiversion! {
    /// Add the weight gradient of output rows `r0..r1` (row `r` = image `r / ho`, row `r % ho`) into the tap-major
    /// `dw` ((k·k)×c).
    fn bwd_weight_rows_f32(x: &[f32], gy: &[f32], c: usize, g: &Window, r0: usize, r1: usize, dw: &mut [f32])
        => bwd_weight_rows_body
}
multiversion! {
    /// [`bwd_weight_rows_f32`] in f64.
    fn bwd_weight_rows_f64(x: &[f64], gy: &[f64], c: usize, g: &Window, r0: usize, r1: usize, dw: &mut [f64])
        => bwd_weight_rows_body
}

type BwdWeightRows<T> = fn(&[T], &[T], usize, &Window, usize, usize, &mut [T]);

fn bwd_weight<T: WithDType>(x: &[T], gy: &[T], n: usize, c: usize, g: &Window, rows: BwdWeightRows<T>) -> Vec<T> {
    let kk = g.k * g.k;
    let total = n * g.ho;
    let tasks = total.min(4 * rayon::current_num_threads()).max(1);
    let partials: Vec<Vec<T>> = (0..tasks)
        .into_par_iter()
        .map(|t| {
            let mut dw = vec![T::zero(); kk * c];
            rows(x, gy, c, g, t * total / tasks, (t + 1) * total / tasks, &mut dw);
            dw
        })
        .collect();
    let mut sum = vec![T::zero(); kk * c];
    for p in &partials {
        for (s, &v) in sum.iter_mut().zip(p) {
            *s += v;
        }
    }
    // Tap-major back to timm's C×1×k×k.
    let mut out = vec![T::zero(); c * kk];
    for t in 0..kk {
        for ch in 0..c {
            out[ch * kk + t] = sum[t * c + ch];
        }
    }
    out
}

fn unsupported(s: &CpuStorage) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "{NAME}: unsupported dtype {:?} (f32 or f64 expected)",
        s.dtype()
    ))
}

impl CustomOp2 for DepthwiseNhwc {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, g) = geometry(l1.dims(), l2.dims(), self.stride, self.pad)?;
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => CpuStorage::F32(fwd(
                contiguous(NAME, x, l1)?,
                contiguous(NAME, w, l2)?,
                n,
                c,
                &g,
                fwd_row_f32,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(w)) => CpuStorage::F64(fwd(
                contiguous(NAME, x, l1)?,
                contiguous(NAME, w, l2)?,
                n,
                c,
                &g,
                fwd_row_f64,
            )),
            _ => return Err(unsupported(s1)),
        };
        Ok((out, Shape::from((n, g.ho, g.wo, c))))
    }

    /// Only the gradients something needs: none for an input that records no operation (a constant or frozen one).
    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (_, h, wd, _) = x.dims4()?;
        let dx = if x.track_op() {
            Some(grad.apply_op2_no_bwd(w, &DepthwiseNhwcBwdInput { op: *self, h, w: wd })?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(x.apply_op2_no_bwd(
                &grad,
                &DepthwiseNhwcBwdWeight {
                    op: *self,
                    k: w.dim(2)?,
                },
            )?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// Input gradient of [`DepthwiseNhwc`]: (output gradient, weight) → input gradient (no backward).
struct DepthwiseNhwcBwdInput {
    op: DepthwiseNhwc,
    h: usize,
    w: usize,
}

impl CustomOp2 for DepthwiseNhwcBwdInput {
    fn name(&self) -> &'static str {
        "depthwise_conv2d_nhwc_bwd_input"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let &[n, .., c] = l1.dims() else {
            bail!("{NAME}: output gradient must be 4-D, got {:?}", l1.dims());
        };
        let (_, _, g) = geometry(&[n, self.h, self.w, c], l2.dims(), self.op.stride, self.op.pad)?;
        if l1.dims() != [n, g.ho, g.wo, c] {
            bail!(
                "{NAME}: output gradient {:?} does not match output {:?}",
                l1.dims(),
                [n, g.ho, g.wo, c]
            );
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(gy), CpuStorage::F32(w)) => CpuStorage::F32(bwd_input(
                contiguous(NAME, gy, l1)?,
                contiguous(NAME, w, l2)?,
                n,
                c,
                &g,
                bwd_input_row_f32,
            )),
            (CpuStorage::F64(gy), CpuStorage::F64(w)) => CpuStorage::F64(bwd_input(
                contiguous(NAME, gy, l1)?,
                contiguous(NAME, w, l2)?,
                n,
                c,
                &g,
                bwd_input_row_f64,
            )),
            _ => return Err(unsupported(s1)),
        };
        Ok((out, Shape::from((n, self.h, self.w, c))))
    }
}

/// Weight gradient of [`DepthwiseNhwc`]: (input, output gradient) → weight gradient (no backward).
struct DepthwiseNhwcBwdWeight {
    op: DepthwiseNhwc,
    k: usize,
}

impl CustomOp2 for DepthwiseNhwcBwdWeight {
    fn name(&self) -> &'static str {
        "depthwise_conv2d_nhwc_bwd_weight"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let c = l1.dims().last().copied().unwrap_or(0);
        let (n, c, g) = geometry(l1.dims(), &[c, 1, self.k, self.k], self.op.stride, self.op.pad)?;
        if l2.dims() != [n, g.ho, g.wo, c] {
            bail!(
                "{NAME}: output gradient {:?} does not match output {:?}",
                l2.dims(),
                [n, g.ho, g.wo, c]
            );
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(gy)) => CpuStorage::F32(bwd_weight(
                contiguous(NAME, x, l1)?,
                contiguous(NAME, gy, l2)?,
                n,
                c,
                &g,
                bwd_weight_rows_f32,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(gy)) => CpuStorage::F64(bwd_weight(
                contiguous(NAME, x, l1)?,
                contiguous(NAME, gy, l2)?,
                n,
                c,
                &g,
                bwd_weight_rows_f64,
            )),
            _ => return Err(unsupported(s1)),
        };
        Ok((out, Shape::from((c, 1, self.k, self.k))))
    }
}
