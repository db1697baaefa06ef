//! Optimizers with PyTorch's update rules, parameter groups and exact-resume state.

mod adam;
mod fused;
mod sgd;

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

pub use adam::{Adam, AdamConfig};
pub use sgd::{Sgd, SgdConfig};

pub use backbones::ParamRole;

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
    /// How the group's parameters take weight decay.
    pub weight_decay: GroupDecay,
}

/// How a [`ParamGroup`]'s parameters take weight decay (timm's per-group `weight_decay`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum GroupDecay {
    /// The optimizer's weight decay; AdamW skips the parameters the name fallback [`decays`] rejects (for groups
    /// not split by role).
    #[default]
    ByName,
    /// The optimizer's weight decay on every parameter (the decay part of [`split_no_decay`]).
    All,
    /// This weight decay on every parameter, replacing the optimizer's (0: the no-decay twins).
    Value(f64),
}

impl GroupDecay {
    /// The decay for a parameter named `name` of rank `rank` when the optimizer's is `base`; `decoupled` (AdamW)
    /// applies the name fallback to [`GroupDecay::ByName`] groups.
    pub fn resolve(self, base: f64, name: &str, rank: usize, decoupled: bool) -> f64 {
        match self {
            GroupDecay::ByName if decoupled && !decays(name, rank) => 0.0,
            GroupDecay::ByName | GroupDecay::All => base,
            GroupDecay::Value(v) => v,
        }
    }
}

impl ParamGroup {
    /// A group from a name, parameters and base learning rate (the optimizer's weight decay).
    pub fn new(name: &str, params: Vec<(String, Var)>, lr: f64) -> Self {
        Self {
            name: name.to_string(),
            params,
            lr,
            weight_decay: GroupDecay::ByName,
        }
    }

    /// The group with its weight-decay rule set (see [`GroupDecay`]).
    pub fn with_weight_decay(mut self, weight_decay: GroupDecay) -> Self {
        self.weight_decay = weight_decay;
        self
    }
}

/// Whether a parameter takes weight decay: by its role when `roles` has it (only a [`ParamRole::Weight`] of rank
/// ≥ 2 not named `*.bias` does, as timm's `param_groups_weight_decay` with the model's `no_weight_decay` set), else
/// by [`decays`] (the fallback for parameters without a role, such as a classifier head's plain `Var`s).
pub fn takes_decay(name: &str, rank: usize, roles: &HashMap<String, ParamRole>) -> bool {
    match roles.get(name) {
        Some(r) => r.decays() && rank > 1 && !name.ends_with(".bias"),
        None => decays(name, rank),
    }
}

/// Split each group into its decay part (same name and rate, [`GroupDecay::All`]) and a no-decay twin `<name>.no_decay` ([`GroupDecay::Value`] 0), as timm's
/// `param_groups_weight_decay`: norms, biases, position embeddings, tokens and layer scales go to the twin by their
/// [`ParamRole`] in `roles`, parameters missing from `roles` by the fallback [`decays`]. Empty parts are dropped (a
/// group with no parameters at all is kept as it was); groups that already carry a [`GroupDecay::Value`] are kept
/// as they are, so splitting twice changes nothing.
pub fn split_no_decay(groups: Vec<ParamGroup>, roles: &HashMap<String, ParamRole>) -> Vec<ParamGroup> {
    let mut out = Vec::with_capacity(groups.len() * 2);
    for g in groups {
        if matches!(g.weight_decay, GroupDecay::Value(_)) {
            out.push(g);
            continue;
        }
        let (decay, no_decay): (Vec<_>, Vec<_>) = g
            .params
            .iter()
            .cloned()
            .partition(|(n, v)| takes_decay(n, v.rank(), roles));
        let rule = GroupDecay::All;
        if no_decay.is_empty() {
            out.push(ParamGroup {
                weight_decay: if decay.is_empty() { g.weight_decay } else { rule },
                ..g
            });
            continue;
        }
        let twin = ParamGroup {
            name: format!("{}.no_decay", g.name),
            params: no_decay,
            lr: g.lr,
            weight_decay: GroupDecay::Value(0.0),
        };
        if !decay.is_empty() {
            out.push(ParamGroup {
                params: decay,
                weight_decay: rule,
                ..g
            });
        }
        out.push(twin);
    }
    out
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
            if let GroupDecay::Value(wd) = g.weight_decay {
                if !(wd.is_finite() && wd >= 0.0) {
                    return Err(Error::Config(format!(
                        "group `{}` has an invalid weight decay {wd}",
                        g.name
                    )));
                }
            }
            if !seen.insert(g.name.clone()) {
                return Err(Error::Config(format!("two parameter groups are named `{}`", g.name)));
            }
        }
        Ok(Self { groups, scale: 1.0 })
    }

    /// `update(lr, weight_decay, group, param, var, grad)` for every parameter with a gradient in `grads`, at its
    /// current rate, with its group's weight-decay rule.
    pub(crate) fn each_grad(
        &self,
        grads: &GradStore,
        mut update: impl FnMut(f64, GroupDecay, &str, &str, &Var, &Tensor) -> Result<()>,
    ) -> Result<()> {
        for g in &self.groups {
            let lr = g.lr * self.scale;
            for (name, var) in &g.params {
                if let Some(grad) = grads.get(var.as_tensor()) {
                    update(lr, g.weight_decay, &g.name, name, var, grad)?;
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

/// The name fallback for parameters without a [`ParamRole`] (a head's plain `Var`s) and for AdamW groups that were
/// not split by role ([`GroupDecay::ByName`]): decay applies except to 1-d tensors, biases and names with `bn` or
/// `norm`. Wherever roles are known, [`split_no_decay`] decides by role instead.
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
