//! The NHWC kernels of the inference path: one image at a time, rows = pixels, columns = channels.
//!
//! Depthwise convolution keeps a block of channel accumulators in registers across every tap; pointwise convolution
//! is a GEMM in row blocks with bias, activation and the residual added while the block is still in cache. The hot
//! loops are compiled three times (AVX-512F, AVX2+FMA, chosen at run time, and the portable baseline).

use crate::conv::gemm;
use crate::ops::rows::exp_f32;
use crate::window::Window;

/// Define `fn $name(args)` running `$body(args)` compiled for AVX-512F, else AVX2+FMA, when the CPU has them, else
/// the portable build.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),*) => $body:ident) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn wide($($a: $t),*) {
                    $body($($a),*)
                }
                if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports the features `wide` was compiled for (checked just above).
                    return unsafe { wide($($a),*) };
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast($($a: $t),*) {
                    $body($($a),*)
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports the features `fast` was compiled for (checked just above).
                    return unsafe { fast($($a),*) };
                }
            }
            $body($($a),*)
        }
    };
}
pub(crate) use multiversion;

/// Rows of a pointwise GEMM block: the block's output stays in L2 for the epilogue.
const ROW_BLOCK: usize = 192;
/// Up to this many rows, one GEMM call: splitting would repack the weights for little cache benefit.
const SINGLE_BLOCK: usize = 4096;
/// Channels whose accumulators a depthwise pass keeps in registers.
const LANES: usize = 16;

/// The activations of the NHWC kernels' epilogues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Identity.
    None,
    /// max(x, 0).
    Relu,
    /// min(max(x, 0), 6).
    Relu6,
    /// x · sigmoid(x) (Swish).
    Silu,
    /// x · relu6(x + 3) / 6.
    HardSwish,
    /// relu6(x + 3) / 6.
    HardSigmoid,
    /// 1 / (1 + exp(-x)).
    Sigmoid,
}

/// Apply `act` to every value of `v` (SiLU and sigmoid through the vectorisable `exp` of `ops::rows`, ~1 ulp, so
/// the loops vectorise instead of calling libm's `expf` per value).
#[inline(always)]
pub fn activate(v: &mut [f32], act: Activation) {
    match act {
        Activation::None => {}
        Activation::Relu => v.iter_mut().for_each(|x| *x = x.max(0.0)),
        Activation::Relu6 => v.iter_mut().for_each(|x| *x = x.clamp(0.0, 6.0)),
        Activation::Silu => v.iter_mut().for_each(|x| *x /= 1.0 + exp_f32(-*x)),
        Activation::HardSwish => v.iter_mut().for_each(|x| *x *= (*x + 3.0).clamp(0.0, 6.0) / 6.0),
        Activation::HardSigmoid => v.iter_mut().for_each(|x| *x = (*x + 3.0).clamp(0.0, 6.0) / 6.0),
        Activation::Sigmoid => v.iter_mut().for_each(|x| *x = 1.0 / (1.0 + exp_f32(-*x))),
    }
}

/// `out (rows × co) = act(x (rows × ci) · Wᵀ + bias) [+ skip]` for `w` stored `co × ci`; `threads` for the GEMM.
#[allow(clippy::too_many_arguments)]
pub fn pointwise(
    x: &[f32],
    rows: usize,
    ci: usize,
    w: &[f32],
    bias: &[f32],
    act: Activation,
    skip: Option<&[f32]>,
    out: &mut [f32],
    threads: usize,
) {
    let co = bias.len();
    let block = if threads > 1 || rows <= SINGLE_BLOCK {
        rows.max(1)
    } else {
        ROW_BLOCK
    };
    for r0 in (0..rows).step_by(block) {
        let r = block.min(rows - r0);
        let o = &mut out[r0 * co..(r0 + r) * co];
        gemm(
            r,
            co,
            ci,
            o,
            false,
            &x[r0 * ci..(r0 + r) * ci],
            (ci, 1),
            w,
            (1, ci),
            threads,
        );
        let s = skip.map(|s| &s[r0 * co..(r0 + r) * co]);
        epilogue(o, bias, act, s);
    }
}

multiversion! {
    /// Bias, activation and residual over rows of `bias.len()` channels.
    fn epilogue(o: &mut [f32], bias: &[f32], act: Activation, skip: Option<&[f32]>) => epilogue_body
}

#[inline(always)]
fn epilogue_body(o: &mut [f32], bias: &[f32], act: Activation, skip: Option<&[f32]>) {
    let co = bias.len();
    for (i, row) in o.chunks_exact_mut(co).enumerate() {
        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        activate(row, act);
        if let Some(s) = skip {
            row.iter_mut().zip(&s[i * co..(i + 1) * co]).for_each(|(v, s)| *v += s);
        }
    }
}

multiversion! {
    /// Depthwise convolution of `x` (`h × w × c`) by `wk` (`k·k × c`, tap-major) + `bias`, then `act`, into `out`
    /// (`ho × wo × c`).
    pub fn depthwise(x: &[f32], c: usize, g: &Window, wk: &[f32], bias: &[f32], act: Activation, out: &mut [f32])
        => depthwise_body
}

#[inline(always)]
fn depthwise_body(x: &[f32], c: usize, g: &Window, wk: &[f32], bias: &[f32], act: Activation, out: &mut [f32]) {
    let full = c - c % LANES;
    for oy in 0..g.ho {
        let (ky0, ky1) = g.row_taps(oy);
        let iy0 = oy * g.stride + ky0 - g.pad[0];
        for ox in 0..g.wo {
            let (kx0, kx1) = g.col_taps(ox);
            let ix0 = ox * g.stride + kx0 - g.pad[2];
            let o = &mut out[(oy * g.wo + ox) * c..][..c];
            for c0 in (0..full).step_by(LANES) {
                let mut acc: [f32; LANES] = bias[c0..c0 + LANES].try_into().expect("LANES channels");
                for (dy, ky) in (ky0..ky1).enumerate() {
                    for (dx, kx) in (kx0..kx1).enumerate() {
                        let xi = &x[((iy0 + dy) * g.w + ix0 + dx) * c + c0..][..LANES];
                        let wi = &wk[(ky * g.k + kx) * c + c0..][..LANES];
                        for j in 0..LANES {
                            acc[j] += xi[j] * wi[j];
                        }
                    }
                }
                o[c0..c0 + LANES].copy_from_slice(&acc);
            }
            if full < c {
                let rest = &mut o[full..];
                rest.copy_from_slice(&bias[full..]);
                for (dy, ky) in (ky0..ky1).enumerate() {
                    for (dx, kx) in (kx0..kx1).enumerate() {
                        let xi = &x[((iy0 + dy) * g.w + ix0 + dx) * c + full..][..c - full];
                        let wi = &wk[(ky * g.k + kx) * c + full..][..c - full];
                        for ((a, xv), wv) in rest.iter_mut().zip(xi).zip(wi) {
                            *a += xv * wv;
                        }
                    }
                }
            }
            activate(o, act);
        }
    }
}

/// Squeeze-excite on `x` (`rows × c`): mean over rows, reduce (`r × c`) + bias, act, expand (`c × r`) + bias, gate,
/// channel-wise scale in place.
#[allow(clippy::too_many_arguments)]
pub fn squeeze_excite(
    x: &mut [f32],
    c: usize,
    reduce: (&[f32], &[f32]),
    act: Activation,
    expand: (&[f32], &[f32]),
    gate: Activation,
) {
    let rows = x.len() / c;
    let mut mean = vec![0f32; c];
    for row in x.chunks_exact(c) {
        mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
    }
    mean.iter_mut().for_each(|m| *m /= rows as f32);
    let dense = |w: &[f32], b: &[f32], v: &[f32], act: Activation| -> Vec<f32> {
        let mut y: Vec<f32> = b
            .iter()
            .enumerate()
            .map(|(o, b)| {
                b + w[o * v.len()..(o + 1) * v.len()]
                    .iter()
                    .zip(v)
                    .map(|(w, v)| w * v)
                    .sum::<f32>()
            })
            .collect();
        activate(&mut y, act);
        y
    };
    let s = dense(reduce.0, reduce.1, &mean, act);
    let g = dense(expand.0, expand.1, &s, gate);
    for row in x.chunks_exact_mut(c) {
        row.iter_mut().zip(&g).for_each(|(v, g)| *v *= g);
    }
}

/// A dense `k × k` convolution of one NCHW image `x` (`ci × h × w`) by `w` (`co × ci·k·k`) + bias, then `act`,
/// into NHWC `out` (`ho × wo × co`); `col` is scratch.
#[allow(clippy::too_many_arguments)]
pub fn dense_from_nchw(
    x: &[f32],
    ci: usize,
    g: &Window,
    w: &[f32],
    bias: &[f32],
    act: Activation,
    col: &mut Vec<f32>,
    out: &mut [f32],
    threads: usize,
) {
    let (k, kd, hw) = (g.k, ci * g.k * g.k, g.ho * g.wo);
    if col.len() < hw * kd {
        col.resize(hw * kd, 0.0);
    }
    for oy in 0..g.ho {
        let (ky0, ky1) = g.row_taps(oy);
        for ox in 0..g.wo {
            let (kx0, kx1) = g.col_taps(ox);
            let row = &mut col[(oy * g.wo + ox) * kd..][..kd];
            let interior = ky0 == 0 && ky1 == k && kx0 == 0 && kx1 == k;
            if !interior {
                row.fill(0.0);
            }
            for c in 0..ci {
                for ky in ky0..ky1 {
                    let iy = oy * g.stride + ky - g.pad[0];
                    let ix = ox * g.stride + kx0 - g.pad[2];
                    let src = &x[(c * g.h + iy) * g.w + ix..][..kx1 - kx0];
                    row[(c * k + ky) * k + kx0..(c * k + ky) * k + kx1].copy_from_slice(src);
                }
            }
        }
    }
    pointwise(col, hw, kd, w, bias, act, None, out, threads);
}

/// A dense `k × k` convolution of one NHWC map `x` (`h × w × ci`) by `w` (`co × k·k·ci`, tap-major: `(ky, kx, ci)`)
/// + bias, then `act`, into NHWC `out` (`ho × wo × co`); `col` is the im2col scratch (`ho·wo × k·k·ci`).
#[allow(clippy::too_many_arguments)]
pub fn dense(
    x: &[f32],
    ci: usize,
    g: &Window,
    w: &[f32],
    bias: &[f32],
    act: Activation,
    col: &mut Vec<f32>,
    out: &mut [f32],
    threads: usize,
) {
    let (k, hw) = (g.k, g.ho * g.wo);
    let kd = ci * k * k;
    if col.len() < hw * kd {
        col.resize(hw * kd, 0.0);
    }
    for oy in 0..g.ho {
        let (ky0, ky1) = g.row_taps(oy);
        for ox in 0..g.wo {
            let (kx0, kx1) = g.col_taps(ox);
            let row = &mut col[(oy * g.wo + ox) * kd..][..kd];
            if !(ky0 == 0 && ky1 == k && kx0 == 0 && kx1 == k) {
                row.fill(0.0);
            }
            // The taps kx0..kx1 of one kernel row are consecutive pixels: one copy of (kx1 − kx0)·ci values.
            let ix = ox * g.stride + kx0 - g.pad[2];
            for ky in ky0..ky1 {
                let iy = oy * g.stride + ky - g.pad[0];
                let src = &x[(iy * g.w + ix) * ci..][..(kx1 - kx0) * ci];
                row[(ky * k + kx0) * ci..(ky * k + kx1) * ci].copy_from_slice(src);
            }
        }
    }
    pointwise(&col[..hw * kd], hw, kd, w, bias, act, None, out, threads);
}
