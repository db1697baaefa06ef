//! Learning-rate schedules as multipliers of the base rate at optimizer step `t` (0-based).

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

/// A learning-rate schedule: the factor applied to every group's base rate at step `t`.
pub trait LrSchedule {
    /// The multiplier at step `t` (0-based, counted in optimizer steps).
    fn multiplier(&self, t: usize) -> f64;
}

/// The built-in schedules (serialisable, for configs and checkpoints).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// PyTorch's StepLR, per epoch: `gamma^(epoch / step_epochs)`.
    Step {
        /// Epochs between decays.
        step_epochs: usize,
        /// Decay factor.
        gamma: f64,
        /// Optimizer steps per epoch.
        steps_per_epoch: usize,
    },
    /// Linear warmup from ~0 to 1 over `warmup_steps`, then cosine decay to `min_factor` at `total_steps`.
    WarmupCosine {
        /// Warmup steps.
        warmup_steps: usize,
        /// Total steps.
        total_steps: usize,
        /// Final multiplier.
        min_factor: f64,
    },
    /// PyTorch's OneCycleLR (cosine): from 1/`div` up to 1 over `pct_start` of the steps, then down to
    /// 1/(`div`·`final_div`).
    OneCycle {
        /// Total steps.
        total_steps: usize,
        /// Fraction of steps spent increasing (0.3).
        pct_start: f64,
        /// Initial rate = max / div (25).
        div: f64,
        /// Final rate = initial / final_div (1e4).
        final_div: f64,
    },
}

impl Schedule {
    /// OneCycle with PyTorch's defaults (pct_start 0.3, div 25, final div 1e4).
    pub fn one_cycle(total_steps: usize) -> Self {
        Schedule::OneCycle {
            total_steps,
            pct_start: 0.3,
            div: 25.0,
            final_div: 1e4,
        }
    }
}

fn cos_anneal(start: f64, end: f64, pct: f64) -> f64 {
    end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0)
}

impl LrSchedule for Schedule {
    fn multiplier(&self, t: usize) -> f64 {
        match *self {
            Schedule::Constant => 1.0,
            Schedule::Step {
                step_epochs,
                gamma,
                steps_per_epoch,
            } => {
                let epoch = t / steps_per_epoch.max(1);
                gamma.powi((epoch / step_epochs.max(1)) as i32)
            }
            Schedule::WarmupCosine {
                warmup_steps,
                total_steps,
                min_factor,
            } => {
                if t < warmup_steps {
                    (t + 1) as f64 / warmup_steps as f64
                } else {
                    let span = total_steps.saturating_sub(warmup_steps).max(1) as f64;
                    let pct = ((t - warmup_steps) as f64 / span).min(1.0);
                    cos_anneal(1.0, min_factor, pct)
                }
            }
            Schedule::OneCycle {
                total_steps,
                pct_start,
                div,
                final_div,
            } => {
                let initial = 1.0 / div;
                let min = initial / final_div;
                let up_end = pct_start * total_steps as f64 - 1.0;
                let down_end = total_steps as f64 - 1.0;
                let t = t as f64;
                if t <= up_end {
                    cos_anneal(initial, 1.0, if up_end > 0.0 { t / up_end } else { 1.0 })
                } else {
                    let pct = ((t - up_end) / (down_end - up_end).max(1e-12)).min(1.0);
                    cos_anneal(1.0, min, pct)
                }
            }
        }
    }
}
