//! Fast CPU convolution (groups = 1, f32): per-image im2col (skipped for 1×1 stride-1 convolutions) and one GEMM
//! straight into NCHW output, parallel over the batch, with asymmetric padding, an optional fused bias + activation
//! epilogue, and a backward that computes only the gradients some variable needs.
//!
//! candle 0.11's CPU conv2d converts every input to NHWC, builds im2col tiles element by element and scatters the
//! output back; its backward goes through a slow transposed convolution. Other devices and dtypes fall back to candle.

mod act;
mod bn;
mod winograd;

pub use act::{add_relu, relu6};
pub use bn::{batch_norm_act_train, batch_norm_train};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Device, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::window::Window;

/// Activation applied in the fused epilogue of [`conv2d_bias_act`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    /// No activation.
    None,
    /// max(x, 0).
    Relu,
    /// min(max(x, 0), 6).
    Relu6,
}

/// The tensor dimensions of one convolution around its [`Window`]: batch, input and output channels.
#[derive(Debug, Clone, Copy)]
struct ConvDims {
    n: usize,
    c: usize,
    co: usize,
    win: Window,
}

impl ConvDims {
    fn new(x: &[usize], w: &[usize], stride: usize, pad: [usize; 4]) -> candle_core::Result<Self> {
        let (&[n, c, h, wd], &[co, ci, kh, kw]) = (x, w) else {
            candle_core::bail!("conv2d expects 4-D input and weight, got {x:?} and {w:?}")
        };
        if ci != c || kh != kw || stride == 0 {
            candle_core::bail!("conv2d: input {x:?} does not match weight {w:?} (stride {stride})")
        }
        let win = Window::new("conv2d", h, wd, kh, stride, pad)?;
        Ok(Self { n, c, co, win })
    }

    /// Rows of the im2col matrix (`c · k · k`).
    fn kdim(&self) -> usize {
        self.c * self.win.k * self.win.k
    }

    /// Output pixels per image.
    fn hw_out(&self) -> usize {
        self.win.out_len()
    }

    /// Whether this convolution runs as Winograd F(4×4, 3×3), the one decision for the forward, the input and the
    /// weight gradient: 3×3, stride 1, padding 1 on every side, undilated, at least 32 input and 32 output channels
    /// and at least 32 tiles of 4×4 outputs over the batch. Measured (`tests/bench.rs`, 2 loaded cores, ms
    /// im2col → Winograd): at batch 16 64@56² 53 → 29 forward, 128@28² 40 → 16, 256@14² 40 → 11, 512@7² 44 → 16,
    /// both gradients faster too (weight gradient with 0–25 ms of loss autograd in each: 83 → 59, 60 → 41,
    /// 41 → 17, 54 → 27), 32@56² 12 → 8; 16 channels gained or lost by turns between runs (the transforms
    /// outweigh a GEMM of depth 16), so they stay on im2col. Per call Winograd pays a weight transform of 36·c·co
    /// values (37 MB at 512², memory-bound), which few tiles do not repay: 512@7² at batch 1 (4 tiles) 3.4 → 11.7,
    /// at batch 4 (16 tiles) 10 → 12; 256@14² at batch 1 (16 tiles) 2.5 → 2.1; 64@56² at batch 1 (196 tiles)
    /// 2.6 → 1.3.
    fn winograd(&self) -> Option<winograd::Geom> {
        let g = &self.win;
        let fits = g.k == 3 && g.stride == 1 && g.dilation == 1 && g.pad == [1; 4];
        let tiles = self.n * g.h.div_ceil(4) * g.w.div_ceil(4);
        (fits && self.c >= 32 && self.co >= 32 && tiles >= 32)
            .then(|| winograd::Geom::new(self.n, self.c, self.co, g.h, g.w))
    }

    /// Whether the image itself is the im2col matrix (1×1, stride 1, no padding).
    fn is_pointwise(&self) -> bool {
        self.win.is_identity()
    }

    /// Fill `col` (`kdim × hw_out`) from one image `x` (`c × h × w`).
    fn im2col(&self, x: &[f32], col: &mut [f32]) {
        let g = &self.win;
        let (k, s, hw, wo) = (g.k, g.stride, g.out_len(), g.wo);
        for c in 0..self.c {
            let xc = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
            for kh in 0..k {
                for kw in 0..k {
                    let row = &mut col[((c * k + kh) * k + kw) * hw..][..hw];
                    let (lo, hi) = g.valid_cols(kw);
                    for oy in 0..g.ho {
                        let out = &mut row[oy * wo..(oy + 1) * wo];
                        let iy = (oy * s + kh) as isize - g.pad[0] as isize;
                        if iy < 0 || iy >= g.h as isize || lo >= hi {
                            out.fill(0.0);
                            continue;
                        }
                        let xr = &xc[iy as usize * g.w..(iy as usize + 1) * g.w];
                        out[..lo].fill(0.0);
                        out[hi..].fill(0.0);
                        let ix0 = (lo * s + kw) - g.pad[2];
                        if s == 1 {
                            out[lo..hi].copy_from_slice(&xr[ix0..ix0 + (hi - lo)]);
                        } else {
                            for (j, o) in out[lo..hi].iter_mut().enumerate() {
                                *o = xr[ix0 + j * s];
                            }
                        }
                    }
                }
            }
        }
    }

    /// Accumulate `col` (`kdim × hw_out`) back into one image gradient `dx` (`c × h × w`), the adjoint of im2col.
    fn col2im(&self, col: &[f32], dx: &mut [f32]) {
        let g = &self.win;
        let (k, s, hw, wo) = (g.k, g.stride, g.out_len(), g.wo);
        for c in 0..self.c {
            let dxc = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
            for kh in 0..k {
                for kw in 0..k {
                    let row = &col[((c * k + kh) * k + kw) * hw..][..hw];
                    let (lo, hi) = g.valid_cols(kw);
                    if lo >= hi {
                        continue;
                    }
                    for oy in 0..g.ho {
                        let iy = (oy * s + kh) as isize - g.pad[0] as isize;
                        if iy < 0 || iy >= g.h as isize {
                            continue;
                        }
                        let src = &row[oy * wo + lo..oy * wo + hi];
                        let dr = &mut dxc[iy as usize * g.w..(iy as usize + 1) * g.w];
                        let ix0 = (lo * s + kw) - g.pad[2];
                        for (j, v) in src.iter().enumerate() {
                            dr[ix0 + j * s] += v;
                        }
                    }
                }
            }
        }
    }
}

/// Row-major GEMM `dst (m×n) = [dst +] a (m×k, strides ars/acs) · b (k×n, strides brs/bcs)`.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
    threads: usize,
) {
    gemm_at((m, n, k), dst, n, accumulate, a, a_strides, b, b_strides, threads)
}

/// [`gemm`] into a `dst` whose rows are `drs` apart (a block of a wider matrix).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_at(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    drs: usize,
    accumulate: bool,
    a: &[f32],
    (ars, acs): (usize, usize),
    b: &[f32],
    (brs, bcs): (usize, usize),
    threads: usize,
) {
    assert!(m == 0 || n == 0 || dst.len() > (m - 1) * drs + (n - 1));
    assert!(m == 0 || k == 0 || a.len() > (m - 1) * ars + (k - 1) * acs);
    assert!(n == 0 || k == 0 || b.len() > (k - 1) * brs + (n - 1) * bcs);
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the slices cover every index the strides reach (asserted above).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            drs as isize,
            accumulate,
            a.as_ptr(),
            acs as isize,
            ars as isize,
            b.as_ptr(),
            bcs as isize,
            brs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// Threads of the current rayon pool.
fn pool_threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// The f32 values of a contiguous CPU tensor; `what` names it in the error (`"conv2d: input"`).
pub fn cpu_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

/// Forward for every image: `out[b] = act(W · im2col(x[b]) + bias)`.
fn forward(g: &ConvDims, x: &[f32], w: &[f32], bias: Option<&[f32]>, act: Epilogue) -> Vec<f32> {
    let (kd, hw, co) = (g.kdim(), g.hw_out(), g.co);
    let img = g.c * g.win.in_len();
    let mut out = vec![0f32; g.n * co * hw];
    let threads = pool_threads();
    // Parallel over images when there are enough of them; else one image at a time with a parallel GEMM.
    let inner = if g.n >= threads { 1 } else { threads };
    let run = |col: &mut Vec<f32>, (b, o): (usize, &mut [f32])| {
        let xb = &x[b * img..(b + 1) * img];
        let colb: &[f32] = if g.is_pointwise() {
            xb
        } else {
            col.resize(kd * hw, 0.0);
            g.im2col(xb, col);
            col
        };
        gemm(co, hw, kd, o, false, w, (kd, 1), colb, (hw, 1), inner);
        epilogue(o, hw, bias, act);
    };
    if inner == 1 {
        out.par_chunks_mut(co * hw)
            .enumerate()
            .for_each_init(Vec::new, |col, item| run(col, item));
    } else {
        let mut col = Vec::new();
        out.chunks_mut(co * hw).enumerate().for_each(|item| run(&mut col, item));
    }
    out
}

fn epilogue(o: &mut [f32], hw: usize, bias: Option<&[f32]>, act: Epilogue) {
    if bias.is_none() && act == Epilogue::None {
        return;
    }
    for (ch, row) in o.chunks_mut(hw).enumerate() {
        let b = bias.map_or(0.0, |b| b[ch]);
        match act {
            Epilogue::None => row.iter_mut().for_each(|v| *v += b),
            Epilogue::Relu => row.iter_mut().for_each(|v| *v = (*v + b).max(0.0)),
            Epilogue::Relu6 => row.iter_mut().for_each(|v| *v = (*v + b).clamp(0.0, 6.0)),
        }
    }
}

/// The convolution as a candle custom op (2 args: input, weight; 3 args: + bias, inference only).
#[derive(Debug, Clone, Copy)]
struct ConvOp {
    stride: usize,
    pad: [usize; 4],
    act: Epilogue,
    /// Whether Winograd may run where [`ConvDims::winograd`] allows it (false only for [`conv2d_im2col`]).
    winograd: bool,
}

impl ConvOp {
    /// The Winograd geometry when this op runs as Winograd, forward and backward alike.
    fn winograd(&self, g: &ConvDims) -> Option<winograd::Geom> {
        self.winograd.then(|| g.winograd()).flatten()
    }
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "graft-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = ConvDims::new(l1.dims(), l2.dims(), self.stride, self.pad)?;
        if let Some(wg) = self.winograd(&g) {
            let out = winograd::forward(
                &wg,
                cpu_slice(s1, l1, "conv2d: input")?,
                cpu_slice(s2, l2, "conv2d: weight")?,
                None,
                self.act,
            );
            return Ok((CpuStorage::F32(out), Shape::from((g.n, g.co, g.win.ho, g.win.wo))));
        }
        let out = forward(
            &g,
            cpu_slice(s1, l1, "conv2d: input")?,
            cpu_slice(s2, l2, "conv2d: weight")?,
            None,
            self.act,
        );
        Ok((CpuStorage::F32(out), Shape::from((g.n, g.co, g.win.ho, g.win.wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        if self.act != Epilogue::None {
            candle_core::bail!("graft-conv2d: no backward through a fused activation")
        }
        let (need_dx, need_dw) = (x.track_op(), w.track_op());
        if !need_dx && !need_dw {
            return Ok((None, None));
        }
        let g = ConvDims::new(x.dims(), w.dims(), self.stride, self.pad)?;
        let grad = grad.contiguous()?;
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        let (gs, gl) = grad.storage_and_layout();
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (Storage::Cpu(gs), Storage::Cpu(xs), Storage::Cpu(ws)) = (&*gs, &*xs, &*ws) else {
            candle_core::bail!("graft-conv2d backward runs on the CPU only")
        };
        let gd = cpu_slice(gs, gl, "conv2d: gradient")?;
        let xd = cpu_slice(xs, xl, "conv2d: input")?;
        let wd = cpu_slice(ws, wl, "conv2d: weight")?;
        let (kd, hw, co) = (g.kdim(), g.hw_out(), g.co);
        let img = g.c * g.win.in_len();
        let threads = pool_threads();
        let per = g.n.div_ceil(threads);

        let wino = self.winograd(&g);
        let dw = if let (true, Some(wg)) = (need_dw, wino) {
            Some(Tensor::from_vec(
                winograd::backward_weight(&wg, xd, gd),
                w.dims(),
                &Device::Cpu,
            )?)
        } else if need_dw {
            // Each worker accumulates dW over its images: dW += G[b] (co×hw) · col[b]ᵀ (hw×kd); then sum.
            let partial: Vec<Vec<f32>> = (0..g.n)
                .collect::<Vec<_>>()
                .par_chunks(per)
                .map(|bs| {
                    let mut acc = vec![0f32; co * kd];
                    let mut col = Vec::new();
                    for (i, &b) in bs.iter().enumerate() {
                        let xb = &xd[b * img..(b + 1) * img];
                        let colb: &[f32] = if g.is_pointwise() {
                            xb
                        } else {
                            col.resize(kd * hw, 0.0);
                            g.im2col(xb, &mut col);
                            &col
                        };
                        let gb = &gd[b * co * hw..(b + 1) * co * hw];
                        gemm(co, kd, hw, &mut acc, i > 0, gb, (hw, 1), colb, (1, hw), 1);
                    }
                    acc
                })
                .collect();
            let mut sum = partial[0].clone();
            for p in &partial[1..] {
                sum.iter_mut().zip(p).for_each(|(a, b)| *a += b);
            }
            Some(Tensor::from_vec(sum, w.dims(), &Device::Cpu)?)
        } else {
            None
        };

        let dx = if let (true, Some(wg)) = (need_dx, wino) {
            Some(Tensor::from_vec(
                winograd::backward_input(&wg, gd, wd),
                x.dims(),
                &Device::Cpu,
            )?)
        } else if need_dx {
            let mut dx = vec![0f32; g.n * img];
            dx.par_chunks_mut(img)
                .enumerate()
                .for_each_init(Vec::new, |col, (b, dxb)| {
                    let gb = &gd[b * co * hw..(b + 1) * co * hw];
                    // dcol (kd×hw) = Wᵀ (kd×co) · G[b] (co×hw), then col2im.
                    if g.is_pointwise() {
                        gemm(kd, hw, co, dxb, false, wd, (1, kd), gb, (hw, 1), 1);
                    } else {
                        col.resize(kd * hw, 0.0);
                        gemm(kd, hw, co, col, false, wd, (1, kd), gb, (hw, 1), 1);
                        g.col2im(col, dxb);
                    }
                });
            Some(Tensor::from_vec(dx, x.dims(), &Device::Cpu)?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        "graft-conv2d-bias-act"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = ConvDims::new(l1.dims(), l2.dims(), self.stride, self.pad)?;
        let bias = cpu_slice(s3, l3, "conv2d: bias")?;
        if bias.len() != g.co {
            candle_core::bail!("conv2d: bias has {} values for {} output channels", bias.len(), g.co)
        }
        if let Some(wg) = self.winograd(&g) {
            let out = winograd::forward(
                &wg,
                cpu_slice(s1, l1, "conv2d: input")?,
                cpu_slice(s2, l2, "conv2d: weight")?,
                Some(bias),
                self.act,
            );
            return Ok((CpuStorage::F32(out), Shape::from((g.n, g.co, g.win.ho, g.win.wo))));
        }
        let out = forward(
            &g,
            cpu_slice(s1, l1, "conv2d: input")?,
            cpu_slice(s2, l2, "conv2d: weight")?,
            Some(bias),
            self.act,
        );
        Ok((CpuStorage::F32(out), Shape::from((g.n, g.co, g.win.ho, g.win.wo))))
    }
}

fn fast_path(x: &Tensor, w: &Tensor) -> bool {
    matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 && w.dtype() == DType::F32
}

fn candle_conv(x: &Tensor, w: &Tensor, stride: usize, pad: [usize; 4]) -> candle_core::Result<Tensor> {
    if pad.iter().all(|&p| p == pad[0]) {
        x.conv2d(w, pad[0], stride, 1, 1)
    } else {
        x.pad_with_zeros(2, pad[0], pad[1])?
            .pad_with_zeros(3, pad[2], pad[3])?
            .conv2d(w, 0, stride, 1, 1)
    }
}

/// Convolution (groups = 1) of `x` N×C×H×W by `w` O×C×k×k, padding `[top, bottom, left, right]`, with backward.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, pad: [usize; 4]) -> candle_core::Result<Tensor> {
    conv(x, w, stride, pad, true)
}

/// [`conv2d`] always as im2col + GEMM, never Winograd: the reference of tests and benchmarks.
pub fn conv2d_im2col(x: &Tensor, w: &Tensor, stride: usize, pad: [usize; 4]) -> candle_core::Result<Tensor> {
    conv(x, w, stride, pad, false)
}

/// [`conv2d`], Winograd allowed where it applies or not.
fn conv(x: &Tensor, w: &Tensor, stride: usize, pad: [usize; 4], winograd: bool) -> candle_core::Result<Tensor> {
    if !fast_path(x, w) {
        return candle_conv(x, w, stride, pad);
    }
    let op = ConvOp {
        stride,
        pad,
        act: Epilogue::None,
        winograd,
    };
    x.contiguous()?.apply_op2(&w.contiguous()?, op)
}

/// Whether [`conv2d`] / [`conv2d_bias_act`] of an f32 CPU input of dims `x` by a weight of dims `w` runs as
/// Winograd F(4×4, 3×3) (forward, input and weight gradient).
pub fn winograd_applies(x: &[usize], w: &[usize], stride: usize, pad: [usize; 4]) -> bool {
    ConvDims::new(x, w, stride, pad).is_ok_and(|g| g.winograd().is_some())
}

/// `act(conv2d(x, w) + bias)` in one pass; fused only when no argument needs a gradient (else composed of ops).
pub fn conv2d_bias_act(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    stride: usize,
    pad: [usize; 4],
    act: Epilogue,
) -> candle_core::Result<Tensor> {
    if fast_path(x, w) && bias.dtype() == DType::F32 && !x.track_op() && !w.track_op() && !bias.track_op() {
        let op = ConvOp {
            stride,
            pad,
            act,
            winograd: true,
        };
        return x
            .contiguous()?
            .apply_op3_no_bwd(&w.contiguous()?, &bias.contiguous()?, &op);
    }
    let co = w.dim(0)?;
    let y = conv2d(x, w, stride, pad)?.broadcast_add(&bias.reshape((1, co, 1, 1))?)?;
    match act {
        Epilogue::None => Ok(y),
        Epilogue::Relu => y.relu(),
        Epilogue::Relu6 => relu6(&y),
    }
}
