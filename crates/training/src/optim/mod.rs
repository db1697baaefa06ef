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

/// Parameter groups and the schedule's learning-rate scale: the bookkeeping every optimizer shares.
#[derive(Debug)]
pub(crate) struct Groups {
    groups: Vec<ParamGroup>,
    scale: f64,
}

impl Groups {
    /// Check the groups (finite, non-negative rates; unique names); the scale starts at 1.
    pub(crate) fn new(groups: Vec<ParamGroup>) -> Result<Self> {
        let mut seen = std::collections::HashSet::new();
        for g in &groups {
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
        Ok(Self { groups, scale: 1.0 })
    }

    /// `update(lr, group, param, var, grad)` for every parameter with a gradient in `grads`, at its current rate.
    pub(crate) fn each_grad(
        &self,
        grads: &GradStore,
        mut update: impl FnMut(f64, &str, &str, &Var, &Tensor) -> Result<()>,
    ) -> Result<()> {
        for g in &self.groups {
            let lr = g.lr * self.scale;
            for (name, var) in &g.params {
                if let Some(grad) = grads.get(var.as_tensor()) {
                    update(lr, &g.name, name, var, grad)?;
                }
            }
        }
        Ok(())
    }

    /// `(group, param)` names of every parameter.
    pub(crate) fn names(&self) -> impl Iterator<Item = (&str, &str)> {
        self.groups
            .iter()
            .flat_map(|g| g.params.iter().map(move |(n, _)| (g.name.as_str(), n.as_str())))
    }

    /// Set the schedule's scale.
    pub(crate) fn set_scale(&mut self, scale: f64) {
        self.scale = scale;
    }

    /// The first group's current rate.
    pub(crate) fn lr(&self) -> f64 {
        self.groups.first().map(|g| g.lr * self.scale).unwrap_or(0.0)
    }

    /// The scale as a state scalar.
    pub(crate) fn scale_entry(&self) -> (String, f64) {
        ("lr_scale".to_string(), self.scale)
    }

    /// Restore the scale saved by [`Groups::scale_entry`] (1 when absent).
    pub(crate) fn load_scale(&mut self, state: &OptimState) {
        self.scale = state.scalars.get("lr_scale").copied().unwrap_or(1.0);
    }
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
