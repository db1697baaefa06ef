//! Training-mode BatchNorm (batch statistics) as two CPU passes with a fused backward, instead of ~10 candle ops
//! (and their full-size temporaries) forward and more backward.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_slice;

/// Per-channel `(mean, biased variance)` of `x` (N×C×H×W, contiguous), two passes per channel.
fn channel_stats(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<(f64, f64)> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let planes = (0..n).map(|b| &x[(b * c + ch) * hw..(b * c + ch + 1) * hw]);
            let count = (n * hw) as f64;
            let mean = planes
                .clone()
                .map(|p| p.iter().map(|&v| v as f64).sum::<f64>())
                .sum::<f64>()
                / count;
            let var = planes
                .map(|p| p.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>())
                .sum::<f64>()
                / count;
            (mean, var)
        })
        .collect()
}

struct Stats;

impl CustomOp1 for Stats {
    fn name(&self) -> &'static str {
        "graft-bn-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let st = channel_stats(cpu_slice(s, l, "batch norm: input")?, n, c, h * w);
        let mut out: Vec<f32> = st.iter().map(|s| s.0 as f32).collect();
        out.extend(st.iter().map(|s| s.1 as f32));
        Ok((CpuStorage::F32(out), Shape::from((2, c))))
    }
}

/// `y = (x − mean) · inv_std · gamma + beta` with `stats` = [mean; var] and `affine` = [gamma; beta], both 2×C.
struct Normalize {
    eps: f64,
}

impl CustomOp3 for Normalize {
    fn name(&self) -> &'static str {
        "graft-bn-train"
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
        let (_, c, h, w) = l1.shape().dims4()?;
        let x = cpu_slice(s1, l1, "batch norm: input")?;
        let (st, aff) = (
            cpu_slice(s2, l2, "batch norm: stats")?,
            cpu_slice(s3, l3, "batch norm: affine")?,
        );
        let hw = h * w;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(hw)
            .zip(x.par_chunks(hw))
            .enumerate()
            .for_each(|(i, (yo, xi))| {
                let ch = i % c;
                let inv = 1.0 / (st[c + ch] as f64 + self.eps).sqrt() as f32;
                let scale = inv * aff[ch];
                let shift = aff[c + ch] - st[ch] * scale;
                yo.iter_mut().zip(xi).for_each(|(o, &v)| *o = v * scale + shift);
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        stats: &Tensor,
        affine: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = x.dims4()?;
        let hw = h * w;
        let count = (n * hw) as f64;
        let (xv, st, aff) = (
            x.contiguous()?.flatten_all()?.to_vec1::<f32>()?,
            stats.flatten_all()?.to_vec1::<f32>()?,
            affine.flatten_all()?.to_vec1::<f32>()?,
        );
        let g = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let inv: Vec<f64> = (0..c).map(|ch| 1.0 / (st[c + ch] as f64 + self.eps).sqrt()).collect();
        // Per channel: Σ dy and Σ dy · x̂.
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (m, iv) = (st[ch] as f64, inv[ch]);
                let (mut sdy, mut sdyx) = (0f64, 0f64);
                for b in 0..n {
                    let o = (b * c + ch) * hw;
                    for (&gv, &xv) in g[o..o + hw].iter().zip(&xv[o..o + hw]) {
                        sdy += gv as f64;
                        sdyx += gv as f64 * (xv as f64 - m) * iv;
                    }
                }
                (sdy, sdyx)
            })
            .collect();
        let d_affine = if affine.track_op() {
            let mut d: Vec<f32> = sums.iter().map(|s| s.1 as f32).collect();
            d.extend(sums.iter().map(|s| s.0 as f32));
            Some(Tensor::from_vec(d, (2, c), &Device::Cpu)?)
        } else {
            None
        };
        let dx = if x.track_op() {
            let mut dx = vec![0f32; xv.len()];
            dx.par_chunks_mut(hw).enumerate().for_each(|(i, d)| {
                let ch = i % c;
                let (m, iv, gm) = (st[ch] as f64, inv[ch], aff[ch] as f64);
                let (sdy, sdyx) = sums[ch];
                let k = gm * iv / count;
                let o = i * hw;
                for ((d, &gv), &xv) in d.iter_mut().zip(&g[o..o + hw]).zip(&xv[o..o + hw]) {
                    let xhat = (xv as f64 - m) * iv;
                    *d = (k * (count * gv as f64 - sdy - xhat * sdyx)) as f32;
                }
            });
            Some(Tensor::from_vec(dx, x.dims(), &Device::Cpu)?)
        } else {
            None
        };
        Ok((dx, None, d_affine))
    }
}

/// Training-mode BatchNorm on the CPU in f32: `(y, batch mean, biased batch variance)`, differentiable in `x`,
/// `gamma` and `beta`; `None` on other devices or dtypes (callers use composed ops then).
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> candle_core::Result<Option<(Tensor, Tensor, Tensor)>> {
    if !matches!(x.device(), Device::Cpu) || x.dtype() != DType::F32 || x.rank() != 4 {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let stats = x.apply_op1_no_bwd(&Stats)?;
    let affine = Tensor::stack(&[gamma, beta], 0)?;
    let y = x.apply_op3(&stats, &affine, Normalize { eps })?;
    Ok(Some((y, stats.get(0)?, stats.get(1)?)))
}
