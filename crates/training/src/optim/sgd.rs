//! Stochastic gradient descent with momentum, Nesterov and weight decay (PyTorch's `torch.optim.SGD`).

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::Tensor;

use super::{fused, get_tensor, key, Groups, OptimState, Optimizer, ParamGroup};
use crate::error::{Error, Result};

/// SGD hyper-parameters (dampening is 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Momentum factor (0: plain SGD).
    pub momentum: f64,
    /// Nesterov momentum (needs momentum > 0).
    pub nesterov: bool,
    /// L2 penalty added to the gradient (a group's [`super::GroupDecay::Value`] replaces it).
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

/// SGD: `d = g + wd·p; buf = μ·buf + d (buf = d at first); d = nesterov ? d + μ·buf : buf; p -= lr·d`.
#[derive(Debug)]
pub struct Sgd {
    groups: Groups,
    cfg: SgdConfig,
    buffers: HashMap<String, Tensor>,
}

impl Sgd {
    /// An SGD optimizer over `groups`.
    pub fn new(groups: Vec<ParamGroup>, cfg: SgdConfig) -> Result<Self> {
        let groups = Groups::new(groups)?;
        if cfg.nesterov && cfg.momentum <= 0.0 {
            return Err(Error::Config("Nesterov momentum needs momentum > 0".into()));
        }
        Ok(Self {
            groups,
            cfg,
            buffers: HashMap::new(),
        })
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let SgdConfig {
            momentum,
            nesterov,
            weight_decay,
        } = self.cfg;
        let buffers = &mut self.buffers;
        self.groups.each_grad(grads, |lr, rule, group, name, var, grad| {
            let p = var.as_tensor();
            let weight_decay = rule.resolve(weight_decay, name, p.rank(), false);
            let k = key(group, name, "momentum_buffer");
            let grad = grad.to_dtype(p.dtype())?;
            if fused::applies(&[p, &grad]) {
                // One pass over the buffer and one over the parameter, in place.
                let wd = weight_decay as f32;
                if momentum != 0.0 {
                    match buffers.get(&k) {
                        Some(b) if fused::applies(&[p, b]) => b.inplace_op3(
                            &grad,
                            p,
                            &fused::SgdMomentum {
                                momentum: momentum as f32,
                                weight_decay: wd,
                            },
                        )?,
                        _ => {
                            let first = if weight_decay != 0.0 {
                                (&grad + (p * weight_decay)?)?
                            } else {
                                grad.copy()?
                            };
                            buffers.insert(k.clone(), first);
                        }
                    }
                }
                let buf = buffers.get(&k).unwrap_or(&grad);
                let apply = fused::SgdApply {
                    lr: lr as f32,
                    momentum: momentum as f32,
                    nesterov,
                    weight_decay: wd,
                };
                p.inplace_op3(buf, &grad, &apply)?;
                return Ok(());
            }
            let mut d = grad;
            if weight_decay != 0.0 {
                d = (d + (p * weight_decay)?)?;
            }
            if momentum != 0.0 {
                let buf = match buffers.get(&k) {
                    Some(b) => ((b * momentum)? + &d)?,
                    None => d.copy()?,
                };
                d = if nesterov {
                    (d + (&buf * momentum)?)?
                } else {
                    buf.clone()
                };
                buffers.insert(k, buf);
            }
            var.set(&(p - (d * lr)?)?)?;
            Ok(())
        })
    }

    fn set_lr_scale(&mut self, scale: f64) {
        self.groups.set_scale(scale);
    }

    fn lr(&self) -> f64 {
        self.groups.lr()
    }

    fn state(&self) -> OptimState {
        let tensors = self
            .buffers
            .iter()
            .map(|(k, t)| (k.clone(), fused::snapshot(t)))
            .collect();
        OptimState {
            tensors,
            scalars: HashMap::from([self.groups.scale_entry()]),
        }
    }

    fn load_state(&mut self, state: &OptimState) -> Result<()> {
        let mut buffers = HashMap::new();
        for (group, name) in self.groups.names() {
            let k = key(group, name, "momentum_buffer");
            if state.tensors.contains_key(&k) {
                buffers.insert(k.clone(), fused::snapshot(&get_tensor(state, &k)?));
            }
        }
        self.buffers = buffers;
        self.groups.load_scale(state);
        Ok(())
    }
}
