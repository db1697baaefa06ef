//! Fused multi-head self-attention for inference on the CPU (f32): no gradient.
//!
//! Reads q, k and v straight from the `qkv` projection (B×N×3C, timm's `(3, heads, head_dim)` column order), so no
//! permuted copies are made; per (image, head) it computes `S = q·kᵀ`, a row softmax of `scale · S` in place and
//! `S·v`, and writes the heads side by side (B×N×C, timm's `transpose(1, 2).reshape(B, N, C)`).

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape};
use rayon::prelude::*;

use crate::conv::{cpu_slice, gemm};

const NAME: &str = "fused_attention";

/// The op: `heads` heads, logits scaled by `scale` (timm: head_dim^-0.5).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FusedAttention {
    pub heads: usize,
    pub scale: f32,
}

impl CustomOp1 for FusedAttention {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let &[b, n, c3] = l.dims() else {
            bail!("{NAME}: qkv must be B×N×3C, got {:?}", l.dims());
        };
        if c3 % (3 * self.heads) != 0 {
            bail!("{NAME}: qkv width {c3} is not 3 × heads ({}) × head_dim", self.heads);
        }
        let qkv = cpu_slice(s, l, NAME)?;
        let c = c3 / 3;
        let hd = c / self.heads;
        let heads = self.heads;
        // One (image, head) per task: its output N×hd, then interleaved into B×N×C.
        let mut per_head = vec![0f32; b * heads * n * hd];
        let tasks = b * heads;
        let threads = rayon::current_num_threads().max(1);
        let inner = if tasks >= threads { 1 } else { threads };
        let run = |scores: &mut Vec<f32>, (t, out): (usize, &mut [f32])| {
            let (bi, h) = (t / heads, t % heads);
            let base = bi * n * c3;
            let q = &qkv[base + h * hd..];
            let k = &qkv[base + c + h * hd..];
            let v = &qkv[base + 2 * c + h * hd..];
            scores.resize(n * n, 0.0);
            // S (n×n) = q (n×hd, rows 3C apart) · kᵀ (hd×n: element (d, j) = k[j, d]).
            gemm(n, n, hd, scores, false, q, (c3, 1), k, (1, c3), inner);
            for row in scores.chunks_exact_mut(n) {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                let mut sum = 0f32;
                for x in row.iter_mut() {
                    *x = ((*x - max) * self.scale).exp();
                    sum += *x;
                }
                let inv = 1.0 / sum;
                row.iter_mut().for_each(|x| *x *= inv);
            }
            // O (n×hd) = P (n×n) · v (n×hd, rows 3C apart).
            gemm(n, hd, n, out, false, scores, (n, 1), v, (c3, 1), inner);
        };
        if inner == 1 {
            per_head.par_chunks_mut(n * hd).enumerate().for_each_init(Vec::new, run);
        } else {
            let mut scores = Vec::new();
            per_head
                .chunks_mut(n * hd)
                .enumerate()
                .for_each(|job| run(&mut scores, job));
        }
        let mut out = vec![0f32; b * n * c];
        out.par_chunks_mut(n * c).enumerate().for_each(|(bi, ob)| {
            for h in 0..heads {
                let src = &per_head[(bi * heads + h) * n * hd..(bi * heads + h + 1) * n * hd];
                for (i, row) in src.chunks_exact(hd).enumerate() {
                    ob[i * c + h * hd..i * c + (h + 1) * hd].copy_from_slice(row);
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, n, c))))
    }
}
