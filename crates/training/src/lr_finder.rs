//! fastai's learning-rate finder, generic over a closure that trains one batch at a given rate.

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Settings of the sweep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrFinderConfig {
    /// First rate (1e-7).
    pub start_lr: f64,
    /// Last rate (10).
    pub end_lr: f64,
    /// Number of steps (100).
    pub num_steps: usize,
    /// Exponential smoothing of the loss (0.9: over a sweep of ~100 steps fastai's 0.98 lags by dozens of steps,
    /// so the steepest point of the smoothed curve lands late).
    pub beta: f64,
    /// Stop when the smoothed loss exceeds this multiple of its minimum (4).
    pub diverge_factor: f64,
}

impl Default for LrFinderConfig {
    fn default() -> Self {
        Self {
            start_lr: 1e-7,
            end_lr: 10.0,
            num_steps: 100,
            beta: 0.9,
            diverge_factor: 4.0,
        }
    }
}

/// The curve and the suggested rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrFinderResult {
    /// Rates tried, up to where the smoothed loss diverged (excluded) or became non-finite.
    pub lrs: Vec<f64>,
    /// Smoothed (bias-corrected) losses, one per rate in `lrs`.
    pub losses: Vec<f64>,
    /// `(rate, loss)` of every step taken (including a diverging last step), unsmoothed.
    #[serde(default)]
    pub raw: Vec<(f64, f64)>,
    /// Rate where the smoothed loss falls fastest (per log-rate), skipping the first tenth of the sweep; `None`
    /// when it never falls.
    pub steepest: Option<f64>,
    /// The rate of the minimum smoothed loss, divided by 10.
    pub min_div10: f64,
    /// The suggestion: `steepest` when known, else `min_div10`.
    pub suggested: f64,
}

/// The rate of step `i` of the sweep.
fn rate(cfg: &LrFinderConfig, i: usize) -> f64 {
    let n = cfg.num_steps.max(2);
    cfg.start_lr * (cfg.end_lr / cfg.start_lr).powf(i as f64 / (n - 1) as f64)
}

/// Bias-corrected exponential smoothing of `raw` with `cfg.beta`, cut where the smoothed loss exceeds
/// `cfg.diverge_factor` times its minimum so far or a loss is not finite: the smoothed values kept.
fn smooth(cfg: &LrFinderConfig, raw: &[f64]) -> Vec<f64> {
    let (mut avg, mut best) = (0.0f64, f64::INFINITY);
    let mut out = Vec::with_capacity(raw.len());
    for (i, &loss) in raw.iter().enumerate() {
        if !loss.is_finite() {
            break;
        }
        avg = cfg.beta * avg + (1.0 - cfg.beta) * loss;
        let s = avg / (1.0 - cfg.beta.powi(i as i32 + 1));
        if s > cfg.diverge_factor * best {
            break;
        }
        best = best.min(s);
        out.push(s);
    }
    out
}

impl LrFinderResult {
    /// Analyse a sweep: `lrs[i]` and its raw loss `raw[i]` for each step taken. One smoothing ([`LrFinderConfig`]'s
    /// `beta`, cut at divergence) and one slope rule: the most negative forward difference of the smoothed loss per
    /// log-rate, after the first tenth of the steps (as fastai's plot; there the average still rests on a handful
    /// of noisy steps).
    pub fn from_sweep(cfg: &LrFinderConfig, lrs: &[f64], raw: &[f64]) -> Self {
        let n = lrs.len().min(raw.len());
        let mut losses = smooth(cfg, &raw[..n]);
        let kept = losses.iter().zip(lrs).take_while(|(_, &lr)| lr > 0.0).count();
        losses.truncate(kept);
        let lrs_kept = lrs[..kept].to_vec();
        let skip = (n / 10).min(kept.saturating_sub(2));
        let steepest = (skip..kept.saturating_sub(1))
            .map(|i| {
                let slope = (losses[i + 1] - losses[i]) / (lrs_kept[i + 1].ln() - lrs_kept[i].ln());
                (slope, lrs_kept[i])
            })
            .filter(|(slope, _)| slope.is_finite() && *slope < 0.0)
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, lr)| lr);
        let min_idx = losses
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i);
        let min_div10 = min_idx.map_or(cfg.start_lr, |i| lrs_kept[i]) / 10.0;
        Self {
            suggested: steepest.unwrap_or(min_div10),
            lrs: lrs_kept,
            losses,
            raw: lrs[..n].iter().copied().zip(raw[..n].iter().copied()).collect(),
            steepest,
            min_div10,
        }
    }
}

/// Sweep rates exponentially from `start_lr` to `end_lr`, calling `step(lr)` (one training step at `lr`,
/// returning its loss) until the smoothed loss diverges or becomes non-finite; then [`LrFinderResult::from_sweep`].
pub fn lr_find<F: FnMut(f64) -> Result<f32>>(cfg: &LrFinderConfig, mut step: F) -> Result<LrFinderResult> {
    let n = cfg.num_steps.max(2);
    let (mut lrs, mut raw) = (Vec::new(), Vec::new());
    for i in 0..n {
        let lr = rate(cfg, i);
        let loss = step(lr)? as f64;
        lrs.push(lr);
        raw.push(loss);
        if smooth(cfg, &raw).len() < raw.len() {
            break;
        }
    }
    Ok(LrFinderResult::from_sweep(cfg, &lrs, &raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep(best_log10: f64) -> (Vec<f64>, Vec<f64>) {
        // Loss flat at low rates, falls steepest around 10^best_log10, then explodes.
        (0..100)
            .map(|i| {
                let log10 = -7.0 + 8.0 * i as f64 / 99.0;
                let fall = 1.0 / (1.0 + (-(log10 - best_log10) * 3.0).exp());
                let blow = if log10 > best_log10 + 1.5 {
                    (log10 - best_log10 - 1.5).exp() * 5.0
                } else {
                    0.0
                };
                (10f64.powf(log10), 2.0 - 1.5 * fall + blow)
            })
            .unzip()
    }

    fn steepest(lrs: &[f64], raw: &[f64]) -> Option<f64> {
        LrFinderResult::from_sweep(&LrFinderConfig::default(), lrs, raw).steepest
    }

    #[test]
    fn suggests_near_the_steepest_descent() {
        for target in [-4.0, -2.5] {
            let (lrs, raw) = sweep(target);
            let lr = steepest(&lrs, &raw).unwrap();
            assert!((lr.log10() - target).abs() < 0.7, "suggested {lr:e} for 1e{target}");
        }
        // A wild first batch must not pull the suggestion to the start of the sweep.
        let (lrs, mut noisy) = sweep(-3.0);
        noisy[0] = 6.0;
        let lr = steepest(&lrs, &noisy).unwrap();
        assert!((lr.log10() + 3.0).abs() < 0.7, "suggested {lr:e} with a noisy start");
        let (lrs, rising): (Vec<f64>, Vec<f64>) = (1..50).map(|i| (i as f64 * 1e-5, i as f64)).unzip();
        assert_eq!(steepest(&lrs, &rising), None);
        assert_eq!(steepest(&[], &[]), None);
    }

    #[test]
    fn the_sweep_stops_at_divergence_and_keeps_every_raw_loss() {
        let (_, curve) = sweep(-3.0);
        let mut i = 0;
        let res = lr_find(&LrFinderConfig::default(), |_| {
            i += 1;
            Ok(curve[i - 1] as f32)
        })
        .unwrap();
        assert!(i < 100, "stopped when the loss diverged");
        assert_eq!(res.raw.len(), i);
        assert!(res.raw.iter().zip(&curve).all(|(r, &c)| r.1 == c as f32 as f64));
        assert_eq!(res.lrs.len(), i - 1, "the diverging step is not on the smoothed curve");
        assert_eq!(res.suggested, res.steepest.unwrap());
        let (lrs, raw): (Vec<f64>, Vec<f64>) = res.raw.iter().copied().unzip();
        let expected = LrFinderResult::from_sweep(&LrFinderConfig::default(), &lrs, &raw);
        assert_eq!(res.steepest, expected.steepest);
    }
}
