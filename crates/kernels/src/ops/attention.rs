//! Fused multi-head self-attention on the CPU (f32), with a hand-written backward.
//!
//! Reads q, k and v straight from the `qkv` projection (B×N×3C, timm's `(3, heads, head_dim)` column order), so no
//! permuted copies are made; per (image, head) it computes `S = q·kᵀ`, a row softmax of `scale · S` in place and
//! `P·v`, and writes the heads side by side (B×N×C, timm's `transpose(1, 2).reshape(B, N, C)`).
//!
//! The backward keeps nothing from the forward but its input: per (image, head) it recomputes `P` (one N×N GEMM and
//! a softmax, a few per cent of a training step) rather than holding B·heads·N² probabilities per block until the
//! backward, then `dV = Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = scale · P ⊙ (dP − Σ_row dP⊙P)`, `dQ = dS·K`, `dK = dSᵀ·Q`,
//! written into one B×N×3C gradient in the layout of `qkv`.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::rows::{exp_f32, max, sum_map, sum_zip};
use crate::conv::{cpu_slice, gemm_at};
use crate::nhwc::multiversion;

const NAME: &str = "fused_attention";

/// The op: `heads` heads, logits scaled by `scale` (timm: head_dim^-0.5).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FusedAttention {
    pub heads: usize,
    pub scale: f32,
}

/// The dimensions of one call: batch, tokens, width, heads and head width.
#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    n: usize,
    c: usize,
    heads: usize,
    hd: usize,
}

impl Dims {
    fn new(l: &Layout, heads: usize) -> Result<Self> {
        let &[b, n, c3] = l.dims() else {
            bail!("{NAME}: qkv must be B×N×3C, got {:?}", l.dims());
        };
        if heads == 0 || c3 % (3 * heads) != 0 {
            bail!("{NAME}: qkv width {c3} is not 3 × heads ({heads}) × head_dim");
        }
        let c = c3 / 3;
        Ok(Self {
            b,
            n,
            c,
            heads,
            hd: c / heads,
        })
    }

    /// Offsets of q, k and v of task `t` (image `t / heads`, head `t % heads`) in `qkv`.
    fn qkv_offsets(&self, t: usize) -> [usize; 3] {
        let (bi, h) = (t / self.heads, t % self.heads);
        let base = bi * self.n * 3 * self.c + h * self.hd;
        [base, base + self.c, base + 2 * self.c]
    }
}

/// One thread's GEMM into `dst` with rows `drs` apart ([`crate::conv`]'s).
#[allow(clippy::too_many_arguments)]
fn gemm(
    mnk: (usize, usize, usize),
    dst: &mut [f32],
    drs: usize,
    accumulate: bool,
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
) {
    gemm_at(mnk, dst, drs, accumulate, a, a_strides, b, b_strides, 1)
}

#[inline(always)]
fn softmax_rows_body(s: &mut [f32], n: usize, scale: f32) {
    for row in s.chunks_exact_mut(n) {
        let m = max(row);
        for x in row.iter_mut() {
            *x = exp_f32((*x - m) * scale);
        }
        let inv = 1.0 / sum_map(row, |v| v);
        row.iter_mut().for_each(|x| *x *= inv);
    }
}

multiversion! {
    /// `P = softmax(scale · S)` per row of `n`, in place (`scale > 0`).
    fn softmax_rows(s: &mut [f32], n: usize, scale: f32) => softmax_rows_body
}

#[inline(always)]
fn softmax_grad_body(p: &[f32], dp: &mut [f32], n: usize, scale: f32) {
    for (p, dp) in p.chunks_exact(n).zip(dp.chunks_exact_mut(n)) {
        let s = sum_zip(p, dp, |p, d| p * d);
        for (d, &p) in dp.iter_mut().zip(p) {
            *d = scale * p * (*d - s);
        }
    }
}

multiversion! {
    /// `dS = scale · P ⊙ (dP − Σ_row dP⊙P)` per row of `n`, in place in `dp`.
    fn softmax_grad(p: &[f32], dp: &mut [f32], n: usize, scale: f32) => softmax_grad_body
}

/// Scratch of one worker: the N×N probabilities and their gradient.
#[derive(Default)]
struct Scratch {
    p: Vec<f32>,
    dp: Vec<f32>,
}

impl FusedAttention {
    /// `P = softmax(scale · q·kᵀ)` of task `t` into `p` (N×N).
    fn probs(&self, g: &Dims, qkv: &[f32], t: usize, p: &mut Vec<f32>) {
        let (n, c3) = (g.n, 3 * g.c);
        let [qo, ko, _] = g.qkv_offsets(t);
        p.resize(n * n, 0.0);
        // S (n×n) = q (n×hd, rows 3C apart) · kᵀ (hd×n: element (d, j) = k[j, d]).
        gemm((n, n, g.hd), p, n, false, &qkv[qo..], (c3, 1), &qkv[ko..], (1, c3));
        softmax_rows(p, n, self.scale);
    }

    /// Run `job(task, out)` for every (image, head) over chunks of `per` values of `out`, in parallel.
    fn per_task(&self, g: &Dims, per: usize, job: impl Fn(&mut Scratch, usize, &mut [f32]) + Sync) -> Vec<f32> {
        let mut out = vec![0f32; g.b * g.heads * per];
        if per > 0 {
            out.par_chunks_mut(per)
                .enumerate()
                .for_each_init(Scratch::default, |s, (t, o)| job(s, t, o));
        }
        out
    }
}

impl CustomOp1 for FusedAttention {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = Dims::new(l, self.heads)?;
        let qkv = cpu_slice(s, l, NAME)?;
        let (n, c, hd) = (g.n, g.c, g.hd);
        // One (image, head) per task: its output N×hd, then interleaved into B×N×C.
        let per_head = self.per_task(&g, n * hd, |s, t, out| {
            self.probs(&g, qkv, t, &mut s.p);
            let [_, _, vo] = g.qkv_offsets(t);
            // O (n×hd) = P (n×n) · v (n×hd, rows 3C apart).
            gemm((n, hd, n), out, hd, false, &s.p, (n, 1), &qkv[vo..], (3 * c, 1));
        });
        let mut out = vec![0f32; g.b * n * c];
        if !out.is_empty() {
            out.par_chunks_mut(n * c).enumerate().for_each(|(bi, ob)| {
                for h in 0..g.heads {
                    let t = bi * g.heads + h;
                    for (i, row) in per_head[t * n * hd..(t + 1) * n * hd].chunks_exact(hd).enumerate() {
                        ob[i * c + h * hd..i * c + (h + 1) * hd].copy_from_slice(row);
                    }
                }
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((g.b, n, c))))
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(qkv.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, self)?))
    }
}

/// The backward as an op of (qkv, output gradient) → qkv gradient (no backward of its own).
impl CustomOp2 for FusedAttention {
    fn name(&self) -> &'static str {
        "fused_attention_bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = Dims::new(l1, self.heads)?;
        if l2.dims() != [g.b, g.n, g.c] {
            bail!(
                "{NAME}: output gradient {:?} is not B×N×C for qkv {:?}",
                l2.dims(),
                l1.dims()
            );
        }
        let qkv = cpu_slice(s1, l1, NAME)?;
        let dout = cpu_slice(s2, l2, "fused_attention: output gradient")?;
        let (n, c, hd) = (g.n, g.c, g.hd);
        let c3 = 3 * c;
        // Per task: [dQ | dK | dV] as N×3hd, then interleaved into B×N×3C.
        let per_task = self.per_task(&g, n * 3 * hd, |s, t, out| {
            self.probs(&g, qkv, t, &mut s.p);
            let [qo, ko, vo] = g.qkv_offsets(t);
            let (bi, h) = (t / g.heads, t % g.heads);
            let dot = &dout[bi * n * c + h * hd..];
            // dV (n×hd) = Pᵀ (n×n) · dO (n×hd, rows C apart).
            gemm((n, hd, n), &mut out[2 * hd..], 3 * hd, false, &s.p, (1, n), dot, (c, 1));
            // dP (n×n) = dO (n×hd) · vᵀ (hd×n).
            s.dp.resize(n * n, 0.0);
            gemm((n, n, hd), &mut s.dp, n, false, dot, (c, 1), &qkv[vo..], (1, c3));
            softmax_grad(&s.p, &mut s.dp, n, self.scale);
            // dQ = dS · k; dK = dSᵀ · q.
            gemm((n, hd, n), out, 3 * hd, false, &s.dp, (n, 1), &qkv[ko..], (c3, 1));
            gemm(
                (n, hd, n),
                &mut out[hd..],
                3 * hd,
                false,
                &s.dp,
                (1, n),
                &qkv[qo..],
                (c3, 1),
            );
        });
        let mut dqkv = vec![0f32; g.b * n * c3];
        if !dqkv.is_empty() {
            dqkv.par_chunks_mut(n * c3).enumerate().for_each(|(bi, db)| {
                for h in 0..g.heads {
                    let t = bi * g.heads + h;
                    let src = &per_task[t * n * 3 * hd..(t + 1) * n * 3 * hd];
                    for (i, row) in src.chunks_exact(3 * hd).enumerate() {
                        for part in 0..3 {
                            let at = i * c3 + part * c + h * hd;
                            db[at..at + hd].copy_from_slice(&row[part * hd..(part + 1) * hd]);
                        }
                    }
                }
            });
        }
        Ok((CpuStorage::F32(dqkv), l1.shape().clone()))
    }
}
