//! Optimizers with PyTorch's update rules, parameter groups and exact-resume state.

mod adam;
mod sgd;

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

pub use adam::{Adam, AdamConfig};
pub use sgd::{Sgd, SgdConfig};

use crate::error::{Error, Result};

/// Parameters sharing one base learning rate (discriminative rates: lower for backbone stages than the head).
#[derive(Debug, Clone)]
pub struct ParamGroup {
    /// Group name (for state keys and logs), e.g. `head`, `layer4`.
    pub name: String,
    /// The parameters, by name.
    pub params: Vec<(String, Var)>,
    /// Base learning rate (multiplied by the schedule's factor).
    pub lr: f64,
}

impl ParamGroup {
    /// A group from a name, parameters and base learning rate.
    pub fn new(name: &str, params: Vec<(String, Var)>, lr: f64) -> Self {
        Self {
            name: name.to_string(),
            params,
            lr,
        }
    }
}

/// An optimizer's state for exact resume: per-parameter tensors and scalars, keyed `group/param/slot`.
#[derive(Debug, Clone, Default)]
pub struct OptimState {
    /// Tensors such as momentum buffers and moment estimates.
    pub tensors: HashMap<String, Tensor>,
    /// Scalars such as step counts and the current learning-rate scale.
    pub scalars: HashMap<String, f64>,
}

/// A first-order optimizer over parameter groups.
pub trait Optimizer {
    /// Update every parameter that has a gradient in `grads`.
    fn step(&mut self, grads: &GradStore) -> Result<()>;
    /// Multiply every group's base learning rate by `scale` from now on (set by a schedule).
    fn set_lr_scale(&mut self, scale: f64);
    /// The current learning rate of the first group (base × scale).
    fn lr(&self) -> f64;
    /// The full state (for checkpoints).
    fn state(&self) -> OptimState;
    /// Restore a state produced by [`Optimizer::state`] on an optimizer over the same parameters.
    fn load_state(&mut self, state: &OptimState) -> Result<()>;
}

pub(crate) fn key(group: &str, param: &str, slot: &str) -> String {
    format!("{group}/{param}/{slot}")
}

pub(crate) fn check_groups(groups: &[ParamGroup]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for g in groups {
        if !(g.lr.is_finite() && g.lr >= 0.0) {
            return Err(Error::Config(format!(
                "group `{}` has an invalid learning rate {}",
                g.name, g.lr
            )));
        }
        if !seen.insert(g.name.clone()) {
            return Err(Error::Config(format!("two parameter groups are named `{}`", g.name)));
        }
    }
    Ok(())
}

/// Whether AdamW's decoupled weight decay applies: not to 1-d parameters, biases and norm layers.
pub fn decays(name: &str, rank: usize) -> bool {
    let lower = name.to_ascii_lowercase();
    !(rank <= 1 || lower.ends_with(".bias") || lower.contains("bn") || lower.contains("norm"))
}

pub(crate) fn get_tensor(state: &OptimState, k: &str) -> Result<Tensor> {
    state
        .tensors
        .get(k)
        .cloned()
        .ok_or_else(|| Error::Config(format!("optimizer state lacks `{k}`")))
}
