//! Adam and AdamW (PyTorch's `torch.optim.Adam` / `AdamW`, without amsgrad).

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::Tensor;

use super::{fused, get_tensor, key, Groups, OptimState, Optimizer, ParamGroup};
use crate::error::Result;

/// Adam / AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Coefficient of the running mean of gradients.
    pub beta1: f64,
    /// Coefficient of the running mean of squared gradients.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Weight decay: an L2 term in the gradient (Adam) or decoupled `p -= lr·wd·p` (AdamW).
    pub weight_decay: f64,
    /// Decoupled decay (AdamW); groups without a weight-decay override skip 1-d parameters and biases
    /// ([`super::decays`]), [`super::split_no_decay`] sets it by parameter role.
    pub decoupled: bool,
}

impl AdamConfig {
    /// PyTorch's Adam defaults (betas 0.9/0.999, eps 1e-8, no decay).
    pub fn adam() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }

    /// PyTorch's AdamW defaults (weight decay 0.01, decoupled).
    pub fn adamw() -> Self {
        Self {
            weight_decay: 0.01,
            decoupled: true,
            ..Self::adam()
        }
    }
}

/// Adam with bias correction; AdamW when `decoupled`.
#[derive(Debug)]
pub struct Adam {
    groups: Groups,
    cfg: AdamConfig,
    state: HashMap<String, (Tensor, Tensor, u64)>,
}

impl Adam {
    /// An Adam / AdamW optimizer over `groups`.
    pub fn new(groups: Vec<ParamGroup>, cfg: AdamConfig) -> Result<Self> {
        Ok(Self {
            groups: Groups::new(groups)?,
            cfg,
            state: HashMap::new(),
        })
    }
}

impl Optimizer for Adam {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let AdamConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
            decoupled,
        } = self.cfg;
        let state = &mut self.state;
        self.groups.each_grad(grads, |lr, rule, group, name, var, grad| {
            let mut p = var.as_tensor().clone();
            let mut grad = grad.to_dtype(p.dtype())?;
            let weight_decay = rule.resolve(weight_decay, name, p.rank(), decoupled);
            let k = key(group, name, "");
            let (m, v, t) = match state.remove(&k) {
                Some(s) => s,
                None => (p.zeros_like()?, p.zeros_like()?, 0),
            };
            let t = t + 1;
            let bc1 = 1.0 - beta1.powi(t as i32);
            let bc2 = 1.0 - beta2.powi(t as i32);
            if fused::applies(&[&p, &grad, &m, &v]) {
                // One pass per moment and one over the parameter, in place.
                let l2 = if decoupled { 0.0 } else { weight_decay as f32 };
                for (moment, beta, square) in [(&m, beta1, false), (&v, beta2, true)] {
                    let op = fused::AdamMoment {
                        beta: beta as f32,
                        square,
                        weight_decay: l2,
                    };
                    moment.inplace_op3(&grad, &p, &op)?;
                }
                let apply = fused::AdamApply {
                    lr: lr as f32,
                    decoupled_decay: if decoupled { weight_decay as f32 } else { 0.0 },
                    bc: (bc1 as f32, bc2 as f32),
                    eps: eps as f32,
                };
                p.inplace_op3(&m, &v, &apply)?;
                state.insert(k, (m, v, t));
                return Ok(());
            }
            if weight_decay != 0.0 {
                if decoupled {
                    p = (&p * (1.0 - lr * weight_decay))?;
                } else {
                    grad = (grad + (&p * weight_decay)?)?;
                }
            }
            let m = ((m * beta1)? + (&grad * (1.0 - beta1))?)?;
            let v = ((v * beta2)? + (grad.sqr()? * (1.0 - beta2))?)?;
            let denom = ((v.sqrt()? / bc2.sqrt())? + eps)?;
            let p = (p - (m.div(&denom)? * (lr / bc1))?)?;
            var.set(&p)?;
            state.insert(k, (m, v, t));
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
        let mut out = OptimState::default();
        for (k, (m, v, t)) in &self.state {
            out.tensors.insert(format!("{k}exp_avg"), fused::snapshot(m));
            out.tensors.insert(format!("{k}exp_avg_sq"), fused::snapshot(v));
            out.scalars.insert(format!("{k}step"), *t as f64);
        }
        out.scalars.extend([self.groups.scale_entry()]);
        out
    }

    fn load_state(&mut self, state: &OptimState) -> Result<()> {
        let mut st = HashMap::new();
        for (group, name) in self.groups.names() {
            let k = key(group, name, "");
            if let Some(t) = state.scalars.get(&format!("{k}step")) {
                let m = fused::snapshot(&get_tensor(state, &format!("{k}exp_avg"))?);
                let v = fused::snapshot(&get_tensor(state, &format!("{k}exp_avg_sq"))?);
                st.insert(k, (m, v, *t as u64));
            }
        }
        self.state = st;
        self.groups.load_scale(state);
        Ok(())
    }
}
