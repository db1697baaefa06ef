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
    /// Exponential smoothing of the loss (0.98).
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
            beta: 0.98,
            diverge_factor: 4.0,
        }
    }
}

/// The curve and the suggested rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrFinderResult {
    /// Rates tried.
    pub lrs: Vec<f64>,
    /// Smoothed (bias-corrected) losses.
    pub losses: Vec<f64>,
    /// Rate where the smoothed loss falls fastest (per log-rate), when the curve is long enough.
    pub steepest: Option<f64>,
    /// The rate of the minimum smoothed loss, divided by 10.
    pub min_div10: f64,
    /// The suggestion: `steepest` when known, else `min_div10`.
    pub suggested: f64,
}

/// Sweep rates exponentially from `start_lr` to `end_lr`, calling `step(lr)` (one training step at `lr`,
/// returning its loss) until the smoothed loss diverges or becomes non-finite.
pub fn lr_find<F: FnMut(f64) -> Result<f32>>(cfg: &LrFinderConfig, mut step: F) -> Result<LrFinderResult> {
    let n = cfg.num_steps.max(2);
    let ratio = (cfg.end_lr / cfg.start_lr).powf(1.0 / (n - 1) as f64);
    let (mut lrs, mut losses) = (Vec::new(), Vec::new());
    let (mut avg, mut best) = (0.0f64, f64::INFINITY);
    for i in 0..n {
        let lr = cfg.start_lr * ratio.powi(i as i32);
        let loss = step(lr)? as f64;
        if !loss.is_finite() {
            break;
        }
        avg = cfg.beta * avg + (1.0 - cfg.beta) * loss;
        let smoothed = avg / (1.0 - cfg.beta.powi(i as i32 + 1));
        lrs.push(lr);
        losses.push(smoothed);
        best = best.min(smoothed);
        if i > 0 && smoothed > cfg.diverge_factor * best {
            break;
        }
    }
    let min_idx = losses
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0);
    let min_div10 = lrs.get(min_idx).copied().unwrap_or(cfg.start_lr) / 10.0;
    // Steepest descent: the most negative slope d(loss)/d(log lr), skipping the noisy start and the last points.
    let skip_start = n / 10;
    let end = losses.len().saturating_sub(5);
    let steepest = (skip_start.max(1)..end.saturating_sub(1))
        .map(|i| {
            let slope = (losses[i + 1] - losses[i - 1]) / (lrs[i + 1].ln() - lrs[i - 1].ln());
            (i, slope)
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| lrs[i]);
    Ok(LrFinderResult {
        suggested: steepest.unwrap_or(min_div10),
        lrs,
        losses,
        steepest,
        min_div10,
    })
}
