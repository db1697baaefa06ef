//! Inference path for frozen mobile networks (EfficientNet, MobileNetV3) on the CPU.
//!
//! When no parameter is trainable and BatchNorm uses running statistics, a network is a fixed function: every
//! BatchNorm is folded into its convolution, and each image runs through the whole network in NHWC on one thread
//! (images in parallel), with intermediate maps in reused per-thread buffers, depthwise convolutions vectorised over
//! channels, pointwise convolutions as blocked GEMMs whose epilogue adds bias, activation and the residual. Exact up
//! to rounding; the general (autograd) path is used whenever anything could need a gradient.

mod kernels;

use std::cell::RefCell;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::blocks::{Block, ConvNormAct, SqueezeExcite};
use crate::error::Result;
use crate::layers::{Activation, BatchNorm2d, Conv2d, Padding};
use crate::params::ParamStore;
use kernels::Window;

/// Whether the inference path applies: eval, CPU, f32, and no trainable parameter in `store`.
pub(crate) fn eligible(store: &ParamStore, x: &Tensor, train: bool) -> bool {
    !train
        && matches!(x.device(), Device::Cpu)
        && x.dtype() == DType::F32
        && store.dtype() == DType::F32
        && x.rank() == 4
        && store.params().iter().all(|p| !p.is_trainable())
}

/// A convolution with its BatchNorm folded in: weight `co × ci·k·k` (depthwise: `k·k × c`, tap-major), bias.
#[derive(Debug)]
struct Folded {
    w: Vec<f32>,
    bias: Vec<f32>,
    ci: usize,
    k: usize,
    stride: usize,
    padding: Padding,
    act: Activation,
}

impl Folded {
    fn new(conv: &Conv2d, bn: &BatchNorm2d, act: Activation) -> Result<Self> {
        let (scale, shift) = bn.eval_affine()?;
        let scale = values(&scale)?;
        let mut bias = values(&shift)?;
        let mut w = values(&conv.weight.tensor())?;
        let cfg = &conv.cfg;
        let per = w.len() / cfg.out_channels;
        for (o, chunk) in w.chunks_mut(per).enumerate() {
            chunk.iter_mut().for_each(|v| *v *= scale[o]);
        }
        if let Some(b) = &conv.bias {
            for ((out, b), s) in bias.iter_mut().zip(values(&b.tensor())?).zip(&scale) {
                *out += b * s;
            }
        }
        if conv.is_depthwise() {
            // c × k·k → k·k × c, so a tap's weights for consecutive channels are contiguous.
            let kk = cfg.kernel * cfg.kernel;
            let c = cfg.out_channels;
            let mut t = vec![0f32; w.len()];
            for ch in 0..c {
                for tap in 0..kk {
                    t[tap * c + ch] = w[ch * kk + tap];
                }
            }
            w = t;
        }
        Ok(Self {
            w,
            bias,
            ci: cfg.in_channels,
            k: cfg.kernel,
            stride: cfg.stride,
            padding: cfg.padding,
            act,
        })
    }

    fn co(&self) -> usize {
        self.bias.len()
    }

    fn window(&self, h: usize, w: usize) -> Result<Window> {
        let pad = self.padding.amounts(h, w, self.k, self.stride, 1);
        Window::new(h, w, self.k, self.stride, pad)
            .ok_or_else(|| crate::Error::Msg(format!("input {h}×{w} is smaller than a {}×{} kernel", self.k, self.k)))
    }

    fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1
    }
}

/// Squeeze-excite weights.
#[derive(Debug)]
struct Se {
    reduce: (Vec<f32>, Vec<f32>),
    expand: (Vec<f32>, Vec<f32>),
    act: Activation,
    gate: Activation,
}

impl Se {
    fn new(se: &SqueezeExcite) -> Result<Self> {
        let (reduce, expand, act, gate) = se.parts();
        let wb = |c: &Conv2d| -> Result<(Vec<f32>, Vec<f32>)> {
            let b = match &c.bias {
                Some(b) => values(&b.tensor())?,
                None => vec![0.0; c.cfg.out_channels],
            };
            Ok((values(&c.weight.tensor())?, b))
        };
        Ok(Self {
            reduce: wb(reduce)?,
            expand: wb(expand)?,
            act,
            gate,
        })
    }

    fn apply(&self, x: &mut [f32], c: usize) {
        kernels::squeeze_excite(
            x,
            c,
            (&self.reduce.0, &self.reduce.1),
            self.act,
            (&self.expand.0, &self.expand.1),
            self.gate,
        );
    }
}

/// One block of the network.
#[derive(Debug)]
enum Step {
    /// Depthwise, [SE], pointwise (+ residual).
    Separable {
        dw: Folded,
        se: Option<Se>,
        pw: Folded,
        skip: bool,
    },
    /// Pointwise expansion, depthwise, [SE], pointwise projection (+ residual).
    Inverted {
        pw: Folded,
        dw: Folded,
        se: Option<Se>,
        pwl: Folded,
        skip: bool,
    },
    /// A 1×1 convolution with activation.
    Pointwise(Folded),
}

/// A frozen mobile network, folded and laid out for the inference path.
#[derive(Debug)]
pub(crate) struct MobilePlan {
    stem: Folded,
    steps: Vec<Step>,
    head: Option<Folded>,
}

/// Output geometry of every windowed layer for one input size.
struct Shapes {
    stem: Window,
    dw: Vec<Window>,
    out: (usize, usize, usize),
}

/// Per-thread buffers: the current map, the next, two block intermediates and the stem's im2col.
#[derive(Default)]
struct Scratch {
    cur: Vec<f32>,
    next: Vec<f32>,
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
    /// Fold a network's stem, blocks and optional head; `None` when a layer is not supported here.
    pub fn build(stem: &ConvNormAct, stages: &[Vec<Block>], head: Option<&ConvNormAct>) -> Result<Option<Self>> {
        let dense = |c: &ConvNormAct| Folded::new(&c.conv, &c.bn, c.act);
        if stem.conv.cfg.groups != 1 {
            return Ok(None);
        }
        let mut steps = Vec::new();
        for block in stages.iter().flatten() {
            let se = |se: &Option<SqueezeExcite>| se.as_ref().map(Se::new).transpose();
            steps.push(match block {
                Block::DepthwiseSeparable {
                    conv_dw,
                    bn1,
                    se: s,
                    conv_pw,
                    bn2,
                    act,
                    skip,
                } => Step::Separable {
                    dw: Folded::new(conv_dw, bn1, *act)?,
                    se: se(s)?,
                    pw: Folded::new(conv_pw, bn2, Activation::None)?,
                    skip: *skip,
                },
                Block::InvertedResidual {
                    conv_pw,
                    bn1,
                    conv_dw,
                    bn2,
                    se: s,
                    conv_pwl,
                    bn3,
                    act,
                    skip,
                } => Step::Inverted {
                    pw: Folded::new(conv_pw, bn1, *act)?,
                    dw: Folded::new(conv_dw, bn2, *act)?,
                    se: se(s)?,
                    pwl: Folded::new(conv_pwl, bn3, Activation::None)?,
                    skip: *skip,
                },
                Block::ConvBnAct { conv, bn1, act } => Step::Pointwise(Folded::new(conv, bn1, *act)?),
            });
        }
        let supported = steps.iter().all(|s| match s {
            Step::Separable { dw, pw, .. } => dw.ci == dw.co() && pw.is_pointwise(),
            Step::Inverted { pw, dw, pwl, .. } => pw.is_pointwise() && dw.ci == dw.co() && pwl.is_pointwise(),
            Step::Pointwise(f) => f.is_pointwise(),
        });
        let head = head.map(dense).transpose()?;
        if !supported || head.as_ref().is_some_and(|h| !h.is_pointwise()) {
            return Ok(None);
        }
        Ok(Some(Self {
            stem: dense(stem)?,
            steps,
            head,
        }))
    }

    fn shapes(&self, h: usize, w: usize) -> Result<Shapes> {
        let stem = self.stem.window(h, w)?;
        let (mut h, mut w, mut c) = (stem.ho, stem.wo, self.stem.co());
        let mut dws = Vec::new();
        for step in &self.steps {
            match step {
                Step::Separable { dw, pw, .. } | Step::Inverted { dw, pwl: pw, .. } => {
                    let g = dw.window(h, w)?;
                    (h, w, c) = (g.ho, g.wo, pw.co());
                    dws.push(g);
                }
                Step::Pointwise(f) => c = f.co(),
            }
        }
        if let Some(head) = &self.head {
            c = head.co();
        }
        Ok(Shapes {
            stem,
            dw: dws,
            out: (h, w, c),
        })
    }

    /// The last feature map (N×C×h×w) of `x` (N×3×H×W).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, ci, h, w) = x.dims4()?;
        if ci != self.stem.ci {
            return Err(crate::Error::Msg(format!(
                "input has {ci} channels, the network expects {}",
                self.stem.ci
            )));
        }
        let shapes = self.shapes(h, w)?;
        let x = x.contiguous()?;
        let (storage, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            return Err(crate::Error::Msg("the inference path runs on CPU tensors".into()));
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
        kernels::dense_from_nchw(
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
        let mut dws = shapes.dw.iter();
        for step in &self.steps {
            match step {
                Step::Separable { dw, se, pw, skip } => {
                    let g = dws.next().expect("a window per depthwise layer");
                    let orows = g.ho * g.wo;
                    let mid = sized(&mut s.mid, orows * c);
                    kernels::depthwise(&s.cur[..rows * c], c, g, &dw.w, &dw.bias, dw.act, mid);
                    if let Some(se) = se {
                        se.apply(mid, c);
                    }
                    let co = pw.co();
                    let skip = skip.then_some(&s.cur[..rows * c]);
                    let next = sized(&mut s.next, orows * co);
                    kernels::pointwise(mid, orows, c, &pw.w, &pw.bias, pw.act, skip, next, threads);
                    (rows, c) = (orows, co);
                }
                Step::Inverted { pw, dw, se, pwl, skip } => {
                    let g = dws.next().expect("a window per depthwise layer");
                    let e = pw.co();
                    let mid = sized(&mut s.mid, rows * e);
                    kernels::pointwise(&s.cur[..rows * c], rows, c, &pw.w, &pw.bias, pw.act, None, mid, threads);
                    let orows = g.ho * g.wo;
                    let mid2 = sized(&mut s.mid2, orows * e);
                    kernels::depthwise(mid, e, g, &dw.w, &dw.bias, dw.act, mid2);
                    if let Some(se) = se {
                        se.apply(mid2, e);
                    }
                    let co = pwl.co();
                    let skip = skip.then_some(&s.cur[..rows * c]);
                    let next = sized(&mut s.next, orows * co);
                    kernels::pointwise(mid2, orows, e, &pwl.w, &pwl.bias, pwl.act, skip, next, threads);
                    (rows, c) = (orows, co);
                }
                Step::Pointwise(f) => {
                    let co = f.co();
                    let next = sized(&mut s.next, rows * co);
                    kernels::pointwise(&s.cur[..rows * c], rows, c, &f.w, &f.bias, f.act, None, next, threads);
                    c = co;
                }
            }
            std::mem::swap(&mut s.cur, &mut s.next);
        }
        if let Some(f) = &self.head {
            let co = f.co();
            let next = sized(&mut s.next, rows * co);
            kernels::pointwise(&s.cur[..rows * c], rows, c, &f.w, &f.bias, f.act, None, next, threads);
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
