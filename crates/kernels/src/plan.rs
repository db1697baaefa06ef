//! The inference plan of a frozen mobile network (EfficientNet, MobileNetV3, MobileNetV4) and its runner on the CPU.
//!
//! When no parameter is trainable and BatchNorm uses running statistics, a network is a fixed function: every
//! BatchNorm is folded into its convolution once, when the plan is built, and each image runs through the whole
//! network in NHWC on one thread (images in parallel), with intermediate maps in reused per-thread buffers,
//! depthwise convolutions vectorised over channels and pointwise convolutions as blocked GEMMs whose epilogue adds
//! bias, activation and the residual ([`crate::nhwc`]). Exact up to rounding.

use std::cell::RefCell;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::fold::{fold_bn, BatchNormStats};
use crate::nhwc::{self, Activation};
use crate::window::{Padding, Window};

/// A convolution with its BatchNorm folded in, laid out for the NHWC kernels.
#[derive(Debug)]
pub struct FoldedConv {
    /// Dense: `co × ci·k·k`; depthwise: `k·k × c` (tap-major).
    w: Vec<f32>,
    bias: Vec<f32>,
    ci: usize,
    k: usize,
    stride: usize,
    padding: Padding,
    act: Activation,
    depthwise: bool,
}

impl FoldedConv {
    /// A dense (groups = 1) convolution, weight `co × ci × k × k`, with `bn` folded in and `act` after it.
    pub fn dense(
        weight: &Tensor,
        bias: Option<&Tensor>,
        bn: &BatchNormStats,
        stride: usize,
        padding: Padding,
        act: Activation,
    ) -> Result<Self> {
        let (co, ci, k, k2) = weight.dims4()?;
        if k != k2 {
            return Err(Error::Unsupported(format!("a {k}×{k2} kernel is not square")));
        }
        let (w, b) = fold_bn(weight, bias, bn)?;
        let bias = values(&b)?;
        debug_assert_eq!(bias.len(), co);
        Ok(Self {
            w: values(&w)?,
            bias,
            ci,
            k,
            stride,
            padding,
            act,
            depthwise: false,
        })
    }

    /// A depthwise convolution, weight `c × 1 × k × k`, with `bn` folded in and `act` after it.
    pub fn depthwise(
        weight: &Tensor,
        bias: Option<&Tensor>,
        bn: &BatchNormStats,
        stride: usize,
        padding: Padding,
        act: Activation,
    ) -> Result<Self> {
        let (c, one, k, k2) = weight.dims4()?;
        if one != 1 || k != k2 {
            return Err(Error::Unsupported(format!(
                "depthwise weight {:?} is not C×1×k×k",
                weight.dims()
            )));
        }
        let (w, b) = fold_bn(weight, bias, bn)?;
        let w = values(&w)?;
        // c × k·k → k·k × c, so a tap's weights for consecutive channels are contiguous.
        let kk = k * k;
        let mut t = vec![0f32; w.len()];
        for ch in 0..c {
            for tap in 0..kk {
                t[tap * c + ch] = w[ch * kk + tap];
            }
        }
        Ok(Self {
            w: t,
            bias: values(&b)?,
            ci: c,
            k,
            stride,
            padding,
            act,
            depthwise: true,
        })
    }

    fn co(&self) -> usize {
        self.bias.len()
    }

    /// Reorder a dense weight from `co × (ci, ky, kx)` to `co × (ky, kx, ci)`, the column order of an NHWC im2col.
    fn taps_major(&mut self) {
        let (ci, kk) = (self.ci, self.k * self.k);
        let mut t = vec![0f32; self.w.len()];
        for (src, dst) in self.w.chunks_exact(ci * kk).zip(t.chunks_exact_mut(ci * kk)) {
            for ch in 0..ci {
                for tap in 0..kk {
                    dst[tap * ci + ch] = src[ch * kk + tap];
                }
            }
        }
        self.w = t;
    }

    fn window(&self, h: usize, w: usize) -> Result<Window> {
        Window::padded("inference path", h, w, self.k, self.stride, self.padding)
    }

    fn is_pointwise(&self) -> bool {
        !self.depthwise && self.k == 1 && self.stride == 1
    }

    /// An [`Error::Unsupported`] naming `role` unless `ok`.
    fn require(&self, ok: bool, role: &str) -> Result<()> {
        if ok {
            return Ok(());
        }
        Err(Error::Unsupported(format!(
            "the {role} must be {} (got {} {k}×{k}/{s})",
            if role.contains("depthwise") {
                "a depthwise convolution"
            } else {
                "a 1×1 stride-1 dense convolution"
            },
            if self.depthwise { "depthwise" } else { "dense" },
            k = self.k,
            s = self.stride,
        )))
    }
}

/// Squeeze-excite: mean over pixels, 1×1 reduce + bias, act, 1×1 expand + bias, gate, channel-wise scale.
#[derive(Debug)]
pub struct SqueezeExcite {
    reduce: (Vec<f32>, Vec<f32>),
    expand: (Vec<f32>, Vec<f32>),
    act: Activation,
    gate: Activation,
}

impl SqueezeExcite {
    /// From the reduce (`r × c × 1 × 1`) and expand (`c × r × 1 × 1`) convolutions and their optional biases.
    pub fn new(
        reduce: (&Tensor, Option<&Tensor>),
        act: Activation,
        expand: (&Tensor, Option<&Tensor>),
        gate: Activation,
    ) -> Result<Self> {
        let wb = |(w, b): (&Tensor, Option<&Tensor>)| -> Result<(Vec<f32>, Vec<f32>)> {
            let b = match b {
                Some(b) => values(b)?,
                None => vec![0.0; w.dim(0)?],
            };
            Ok((values(w)?, b))
        };
        Ok(Self {
            reduce: wb(reduce)?,
            expand: wb(expand)?,
            act,
            gate,
        })
    }

    fn apply(&self, x: &mut [f32], c: usize) {
        nhwc::squeeze_excite(
            x,
            c,
            (&self.reduce.0, &self.reduce.1),
            self.act,
            (&self.expand.0, &self.expand.1),
            self.gate,
        );
    }
}

/// One block of a mobile network.
#[derive(Debug)]
pub enum Step {
    /// Depthwise, [SE], pointwise (+ residual).
    Separable {
        /// Depthwise convolution (with its activation).
        dw: FoldedConv,
        /// Optional squeeze-excite.
        se: Option<SqueezeExcite>,
        /// Pointwise projection.
        pw: FoldedConv,
        /// Residual connection.
        skip: bool,
    },
    /// Pointwise expansion, depthwise, [SE], pointwise projection (+ residual).
    Inverted {
        /// Pointwise expansion.
        pw: FoldedConv,
        /// Depthwise convolution.
        dw: FoldedConv,
        /// Optional squeeze-excite.
        se: Option<SqueezeExcite>,
        /// Pointwise projection.
        pwl: FoldedConv,
        /// Residual connection.
        skip: bool,
    },
    /// A 1×1 convolution with activation.
    Pointwise(FoldedConv),
    /// A dense `k × k` convolution with activation, any stride (MobileNetV4's `cn` blocks): im2col of the NHWC map,
    /// then one GEMM.
    Dense(FoldedConv),
    /// MobileNetV4's universal inverted residual: optional start depthwise (no activation), pointwise expansion,
    /// optional middle depthwise, pointwise projection (+ residual).
    Universal {
        /// Optional start depthwise convolution (its own activation, none in MobileNetV4).
        start: Option<FoldedConv>,
        /// Pointwise expansion.
        pw: FoldedConv,
        /// Optional middle depthwise convolution.
        mid: Option<FoldedConv>,
        /// Pointwise projection.
        pwl: FoldedConv,
        /// Residual connection.
        skip: bool,
    },
}

/// A frozen mobile network, folded and laid out for the inference path.
#[derive(Debug)]
pub struct MobilePlan {
    stem: FoldedConv,
    steps: Vec<Step>,
    head: Option<FoldedConv>,
}

/// Output geometry of every windowed layer for one input size.
struct Shapes {
    stem: Window,
    /// The windows of the steps' windowed layers (depthwise and dense), in the order the steps use them.
    windows: Vec<Window>,
    out: (usize, usize, usize),
}

/// Per-thread buffers: the current map, the next, three block intermediates and the im2col of dense layers.
#[derive(Default)]
struct Scratch {
    cur: Vec<f32>,
    next: Vec<f32>,
    pre: Vec<f32>,
    mid: Vec<f32>,
    mid2: Vec<f32>,
    col: Vec<f32>,
}

fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)
}

impl MobilePlan {
    /// A plan from a dense stem, the blocks and an optional 1×1 head; [`Error::Unsupported`] when a layer has a
    /// shape the kernels do not run (a depthwise layer that is not depthwise, a projection that is not 1×1, …).
    pub fn new(stem: FoldedConv, mut steps: Vec<Step>, head: Option<FoldedConv>) -> Result<Self> {
        stem.require(!stem.depthwise, "stem (dense)")?;
        for step in &mut steps {
            match step {
                Step::Separable { dw, pw, .. } => {
                    dw.require(dw.depthwise, "depthwise layer")?;
                    pw.require(pw.is_pointwise(), "projection")?;
                }
                Step::Inverted { pw, dw, pwl, .. } => {
                    pw.require(pw.is_pointwise(), "expansion")?;
                    dw.require(dw.depthwise, "depthwise layer")?;
                    pwl.require(pwl.is_pointwise(), "projection")?;
                }
                Step::Pointwise(f) => f.require(f.is_pointwise(), "conv-bn-act block")?,
                Step::Dense(f) => {
                    if f.depthwise {
                        return Err(Error::Unsupported("a dense step that is depthwise".into()));
                    }
                    f.taps_major();
                }
                Step::Universal {
                    start, pw, mid, pwl, ..
                } => {
                    if let Some(dw) = start {
                        dw.require(dw.depthwise, "start depthwise layer")?;
                    }
                    pw.require(pw.is_pointwise(), "expansion")?;
                    if let Some(dw) = mid {
                        dw.require(dw.depthwise, "middle depthwise layer")?;
                    }
                    pwl.require(pwl.is_pointwise(), "projection")?;
                }
            }
        }
        if let Some(h) = &head {
            h.require(h.is_pointwise(), "head")?;
        }
        Ok(Self { stem, steps, head })
    }

    fn shapes(&self, h: usize, w: usize) -> Result<Shapes> {
        let stem = self.stem.window(h, w)?;
        let (mut h, mut w, mut c) = (stem.ho, stem.wo, self.stem.co());
        let mut windows = Vec::new();
        let mut push = |f: &FoldedConv, h: &mut usize, w: &mut usize| -> Result<()> {
            let g = f.window(*h, *w)?;
            (*h, *w) = (g.ho, g.wo);
            windows.push(g);
            Ok(())
        };
        for step in &self.steps {
            match step {
                Step::Separable { dw, pw, .. } | Step::Inverted { dw, pwl: pw, .. } => {
                    push(dw, &mut h, &mut w)?;
                    c = pw.co();
                }
                Step::Pointwise(f) => c = f.co(),
                Step::Dense(f) => {
                    push(f, &mut h, &mut w)?;
                    c = f.co();
                }
                Step::Universal { start, mid, pwl, .. } => {
                    for dw in [start, mid].into_iter().flatten() {
                        push(dw, &mut h, &mut w)?;
                    }
                    c = pwl.co();
                }
            }
        }
        if let Some(head) = &self.head {
            c = head.co();
        }
        Ok(Shapes {
            stem,
            windows,
            out: (h, w, c),
        })
    }

    /// The last feature map (N×C×h×w) of `x` (N×3×H×W, f32 on the CPU).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, ci, h, w) = x.dims4()?;
        if ci != self.stem.ci {
            return Err(Error::Msg(format!(
                "input has {ci} channels, the network expects {}",
                self.stem.ci
            )));
        }
        let shapes = self.shapes(h, w)?;
        let x = x.contiguous()?;
        let (storage, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            return Err(Error::Msg("the inference path runs on CPU tensors".into()));
        };
        let xs = crate::conv::cpu_slice(cpu, layout, "inference path: input")?;
        let (ho, wo, co) = shapes.out;
        let (img, out_len) = (ci * h * w, co * ho * wo);
        let mut out = vec![0f32; n * out_len];
        let threads = rayon::current_num_threads().max(1);
        // Buffers live per thread across calls: no page faults or zeroing for the large maps after the first batch.
        thread_local! {
            static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
        }
        let run = |i: usize, o: &mut [f32], threads: usize| {
            SCRATCH.with(|s| self.image(&xs[i * img..(i + 1) * img], &shapes, &mut s.borrow_mut(), o, threads))
        };
        if n >= threads {
            out.par_chunks_mut(out_len).enumerate().for_each(|(i, o)| run(i, o, 1));
        } else {
            out.chunks_mut(out_len)
                .enumerate()
                .for_each(|(i, o)| run(i, o, threads));
        }
        Ok(Tensor::from_vec(out, (n, co, ho, wo), &Device::Cpu)?)
    }

    /// One image (NCHW) through the network into `out` (NCHW).
    fn image(&self, x: &[f32], shapes: &Shapes, s: &mut Scratch, out: &mut [f32], threads: usize) {
        let g = &shapes.stem;
        let mut c = self.stem.co();
        let mut rows = g.ho * g.wo;
        let stem = &self.stem;
        nhwc::dense_from_nchw(
            x,
            stem.ci,
            g,
            &stem.w,
            &stem.bias,
            stem.act,
            &mut s.col,
            sized(&mut s.cur, rows * c),
            threads,
        );
        let mut dws = shapes.windows.iter();
        for step in &self.steps {
            match step {
                Step::Separable { dw, se, pw, skip } => {
                    let g = dws.next().expect("a window per depthwise layer");
                    let orows = g.ho * g.wo;
                    let mid = sized(&mut s.mid, orows * c);
                    nhwc::depthwise(&s.cur[..rows * c], c, g, &dw.w, &dw.bias, dw.act, mid);
                    if let Some(se) = se {
                        se.apply(mid, c);
                    }
                    let co = pw.co();
                    let skip = skip.then_some(&s.cur[..rows * c]);
                    let next = sized(&mut s.next, orows * co);
                    nhwc::pointwise(mid, orows, c, &pw.w, &pw.bias, pw.act, skip, next, threads);
                    (rows, c) = (orows, co);
                }
                Step::Inverted { pw, dw, se, pwl, skip } => {
                    let g = dws.next().expect("a window per depthwise layer");
                    let e = pw.co();
                    let mid = sized(&mut s.mid, rows * e);
                    nhwc::pointwise(&s.cur[..rows * c], rows, c, &pw.w, &pw.bias, pw.act, None, mid, threads);
                    let orows = g.ho * g.wo;
                    let mid2 = sized(&mut s.mid2, orows * e);
                    nhwc::depthwise(mid, e, g, &dw.w, &dw.bias, dw.act, mid2);
                    if let Some(se) = se {
                        se.apply(mid2, e);
                    }
                    let co = pwl.co();
                    let skip = skip.then_some(&s.cur[..rows * c]);
                    let next = sized(&mut s.next, orows * co);
                    nhwc::pointwise(mid2, orows, e, &pwl.w, &pwl.bias, pwl.act, skip, next, threads);
                    (rows, c) = (orows, co);
                }
                Step::Pointwise(f) => {
                    let co = f.co();
                    let next = sized(&mut s.next, rows * co);
                    nhwc::pointwise(&s.cur[..rows * c], rows, c, &f.w, &f.bias, f.act, None, next, threads);
                    c = co;
                }
                Step::Dense(f) => {
                    let g = dws.next().expect("a window per dense layer");
                    let (orows, co) = (g.ho * g.wo, f.co());
                    let next = sized(&mut s.next, orows * co);
                    nhwc::dense(
                        &s.cur[..rows * c],
                        c,
                        g,
                        &f.w,
                        &f.bias,
                        f.act,
                        &mut s.col,
                        next,
                        threads,
                    );
                    (rows, c) = (orows, co);
                }
                Step::Universal {
                    start,
                    pw,
                    mid,
                    pwl,
                    skip,
                } => {
                    let input_rows = rows;
                    let mut x: &[f32] = &s.cur[..rows * c];
                    if let Some(dw) = start {
                        let g = dws.next().expect("a window per depthwise layer");
                        let orows = g.ho * g.wo;
                        let pre = sized(&mut s.pre, orows * c);
                        nhwc::depthwise(x, c, g, &dw.w, &dw.bias, dw.act, pre);
                        (x, rows) = (&s.pre[..orows * c], orows);
                    }
                    let e = pw.co();
                    let m = sized(&mut s.mid, rows * e);
                    nhwc::pointwise(x, rows, c, &pw.w, &pw.bias, pw.act, None, m, threads);
                    let mut y: &[f32] = &s.mid[..rows * e];
                    if let Some(dw) = mid {
                        let g = dws.next().expect("a window per depthwise layer");
                        let orows = g.ho * g.wo;
                        let m2 = sized(&mut s.mid2, orows * e);
                        nhwc::depthwise(y, e, g, &dw.w, &dw.bias, dw.act, m2);
                        (y, rows) = (&s.mid2[..orows * e], orows);
                    }
                    let co = pwl.co();
                    debug_assert!(!*skip || (rows == input_rows && co == c));
                    let skip = skip.then_some(&s.cur[..rows * c]);
                    let next = sized(&mut s.next, rows * co);
                    nhwc::pointwise(y, rows, e, &pwl.w, &pwl.bias, pwl.act, skip, next, threads);
                    c = co;
                }
            }
            std::mem::swap(&mut s.cur, &mut s.next);
        }
        if let Some(f) = &self.head {
            let co = f.co();
            let next = sized(&mut s.next, rows * co);
            nhwc::pointwise(&s.cur[..rows * c], rows, c, &f.w, &f.bias, f.act, None, next, threads);
            c = co;
            std::mem::swap(&mut s.cur, &mut s.next);
        }
        // NHWC → NCHW.
        for (p, row) in s.cur[..rows * c].chunks_exact(c).enumerate() {
            for (ch, v) in row.iter().enumerate() {
                out[ch * rows + p] = *v;
            }
        }
    }
}
