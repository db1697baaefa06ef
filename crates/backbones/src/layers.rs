//! Building blocks shared by every architecture: convolution, BatchNorm, linear, activations.
//!
//! Each layer takes its parameters from a [`ParamStore`] under timm's names and implements a `forward(x, train)`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::{Tensor, D};

use crate::error::Result;
use crate::params::{Buffer, Param, ParamRole, ParamStore};

pub use kernels::Padding;

/// Configuration of a [`Conv2d`].
#[derive(Debug, Clone, Copy)]
pub struct ConvConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Padding mode.
    pub padding: Padding,
    /// Groups (`in_channels` for a depthwise convolution).
    pub groups: usize,
    /// Whether the convolution has a bias.
    pub bias: bool,
}

impl Default for ConvConfig {
    fn default() -> Self {
        Self {
            in_channels: 1,
            out_channels: 1,
            kernel: 1,
            stride: 1,
            padding: Padding::Symmetric(0),
            groups: 1,
            bias: false,
        }
    }
}

/// A 2-D convolution with timm's parameter names `{prefix}.weight` and `{prefix}.bias`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// Weight, `out × in/groups × k × k`.
    pub weight: Param,
    /// Optional bias, `out`.
    pub bias: Option<Param>,
    /// The configuration.
    pub cfg: ConvConfig,
}

impl Conv2d {
    /// Take the parameters under `prefix` from `store`.
    pub fn new(store: &ParamStore, prefix: &str, cfg: ConvConfig) -> Result<Self> {
        let weight = store.param(
            &format!("{prefix}.weight"),
            (cfg.out_channels, cfg.in_channels / cfg.groups, cfg.kernel, cfg.kernel),
        )?;
        let bias = if cfg.bias {
            Some(store.param_with_role(&format!("{prefix}.bias"), cfg.out_channels, ParamRole::Bias, false)?)
        } else {
            None
        };
        Ok(Self { weight, bias, cfg })
    }

    /// Whether this is a depthwise convolution (one filter per input channel).
    pub fn is_depthwise(&self) -> bool {
        self.cfg.groups > 1 && self.cfg.groups == self.cfg.in_channels && self.cfg.out_channels == self.cfg.in_channels
    }

    /// Apply the convolution to `x` (N×C×H×W).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let c = &self.cfg;
        let pad = c.padding.amounts(h, w, c.kernel, c.stride, 1);
        let w_t = self.weight.tensor();
        let y = if self.is_depthwise() {
            crate::ops::depthwise_conv2d(x, &w_t, c.stride, pad)?
        } else if c.groups == 1 {
            crate::conv::conv2d(x, &w_t, c.stride, pad)?
        } else {
            let symmetric = pad.iter().all(|&p| p == pad[0]);
            if symmetric {
                x.conv2d(&w_t, pad[0], c.stride, 1, c.groups)?
            } else {
                let xp = x.pad_with_zeros(2, pad[0], pad[1])?.pad_with_zeros(3, pad[2], pad[3])?;
                xp.conv2d(&w_t, 0, c.stride, 1, c.groups)?
            }
        };
        match &self.bias {
            Some(b) => Ok(y.broadcast_add(&b.tensor().reshape((1, c.out_channels, 1, 1))?)?),
            None => Ok(y),
        }
    }
}

/// BatchNorm over channels with timm's names `{prefix}.weight|bias|running_mean|running_var`.
///
/// Uses batch statistics (and updates the running ones) only when called with `train = true`, its own scale is
/// trainable, and BatchNorm training is enabled on the store; otherwise it normalises with the running statistics.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    /// Scale (gamma).
    pub weight: Param,
    /// Shift (beta).
    pub bias: Param,
    /// Running mean.
    pub running_mean: Buffer,
    /// Running variance.
    pub running_var: Buffer,
    /// Epsilon added to the variance (1e-5 in PyTorch, 1e-3 for TF-ported models).
    pub eps: f64,
    /// Running-statistics momentum (PyTorch convention: new = (1 - m) · old + m · batch).
    pub momentum: f64,
    train_enabled: Arc<AtomicBool>,
}

impl BatchNorm2d {
    /// Take the parameters under `prefix` from `store`.
    pub fn new(store: &ParamStore, prefix: &str, channels: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: store.param_with_role(&format!("{prefix}.weight"), channels, ParamRole::Norm, true)?,
            bias: store.param_with_role(&format!("{prefix}.bias"), channels, ParamRole::Norm, false)?,
            running_mean: store.buffer(&format!("{prefix}.running_mean"), channels, false)?,
            running_var: store.buffer(&format!("{prefix}.running_var"), channels, true)?,
            eps,
            momentum: 0.1,
            train_enabled: store.batchnorm_train_flag(),
        })
    }

    /// Whether a call with `train = true` would use batch statistics.
    pub fn uses_batch_stats(&self, train: bool) -> bool {
        train && self.train_enabled.load(Ordering::Relaxed) && self.weight.is_trainable()
    }

    /// The current scale, shift, running statistics and epsilon, for folding (`kernels::fold_bn`).
    pub fn stats(&self) -> kernels::BatchNormStats {
        kernels::BatchNormStats {
            gamma: self.weight.tensor(),
            beta: self.bias.tensor(),
            mean: self.running_mean.tensor(),
            var: self.running_var.tensor(),
            eps: self.eps,
        }
    }

    /// The per-channel affine `(scale, shift)` equivalent to eval-mode normalisation.
    pub fn eval_affine(&self) -> Result<(Tensor, Tensor)> {
        Ok(self.stats().scale_shift()?)
    }

    /// Normalise `x` (N×C×H×W).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = x.dim(1)?;
        if !self.uses_batch_stats(train) {
            let (scale, shift) = self.eval_affine()?;
            return Ok(x
                .broadcast_mul(&scale.reshape((1, c, 1, 1))?)?
                .broadcast_add(&shift.reshape((1, c, 1, 1))?)?);
        }
        let (n, _, h, w) = x.dims4()?;
        let count = (n * h * w) as f64;
        if let Some((y, mean, var)) =
            crate::conv::batch_norm_train(x, &self.weight.tensor(), &self.bias.tensor(), self.eps)?
        {
            self.update_running(&mean, &var, count)?;
            return Ok(y);
        }
        let mean = x.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?; // 1×C×1×1
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
        let inv_std = (var.clone() + self.eps)?.sqrt()?.recip()?;
        let y = centered
            .broadcast_mul(&inv_std)?
            .broadcast_mul(&self.weight.tensor().reshape((1, c, 1, 1))?)?
            .broadcast_add(&self.bias.tensor().reshape((1, c, 1, 1))?)?;
        self.update_running(&mean, &var, count)?;
        Ok(y)
    }

    /// `act(self.forward(x, train))`, the activation fused into the training-mode BatchNorm's passes on the CPU.
    pub fn forward_act(&self, x: &Tensor, train: bool, act: Activation) -> Result<Tensor> {
        if self.uses_batch_stats(train) {
            let (n, _, h, w) = x.dims4()?;
            let fused =
                crate::conv::batch_norm_act_train(x, &self.weight.tensor(), &self.bias.tensor(), self.eps, act.into())?;
            if let Some((y, mean, var)) = fused {
                self.update_running(&mean, &var, (n * h * w) as f64)?;
                return Ok(y);
            }
        }
        act.forward(&self.forward(x, train)?)
    }

    /// Running statistics from the batch mean and biased variance: unbiased variance, as PyTorch.
    fn update_running(&self, mean: &Tensor, var: &Tensor, count: f64) -> Result<()> {
        let m = self.momentum;
        let batch_mean = mean.flatten_all()?.detach();
        let unbiased = if count > 1.0 { count / (count - 1.0) } else { 1.0 };
        let batch_var = (var.flatten_all()?.detach() * unbiased)?;
        let rm = ((self.running_mean.tensor() * (1.0 - m))? + (batch_mean * m)?)?;
        let rv = ((self.running_var.tensor() * (1.0 - m))? + (batch_var * m)?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)?;
        Ok(())
    }
}

/// A fully connected layer with timm's names `{prefix}.weight` (out × in) and `{prefix}.bias`.
#[derive(Debug, Clone)]
pub struct Linear {
    /// Weight, `out × in`.
    pub weight: Param,
    /// Bias, `out`.
    pub bias: Option<Param>,
}

impl Linear {
    /// Take the parameters under `prefix` from `store`.
    pub fn new(store: &ParamStore, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = store.param(&format!("{prefix}.weight"), (out_dim, in_dim))?;
        let bias = if bias {
            Some(store.param_with_role(&format!("{prefix}.bias"), out_dim, ParamRole::Bias, false)?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// Apply to `x` (N×in); the bias is added by `kernels::ops::add_bias`, whose backward sums the bias gradient
    /// per column in parallel.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.weight.tensor().t()?)?;
        match &self.bias {
            Some(b) => Ok(crate::ops::add_bias(&y, &b.tensor())?),
            None => Ok(y),
        }
    }
}

/// Activation functions used by the supported architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Identity.
    None,
    /// max(x, 0).
    Relu,
    /// min(max(x, 0), 6).
    Relu6,
    /// x · sigmoid(x) (Swish).
    Silu,
    /// x · relu6(x + 3) / 6.
    HardSwish,
    /// relu6(x + 3) / 6.
    HardSigmoid,
    /// 1 / (1 + exp(-x)).
    Sigmoid,
}

impl From<Activation> for kernels::Activation {
    fn from(a: Activation) -> Self {
        match a {
            Activation::None => Self::None,
            Activation::Relu => Self::Relu,
            Activation::Relu6 => Self::Relu6,
            Activation::Silu => Self::Silu,
            Activation::HardSwish => Self::HardSwish,
            Activation::HardSigmoid => Self::HardSigmoid,
            Activation::Sigmoid => Self::Sigmoid,
        }
    }
}

impl Activation {
    /// Apply the activation.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::None => x.clone(),
            Activation::Relu => x.relu()?,
            Activation::Relu6 => crate::conv::relu6(x)?,
            Activation::Silu => x.silu()?,
            Activation::HardSwish => (x * ((x + 3.0)?.clamp(0f32, 6f32)? / 6.0)?)?,
            Activation::HardSigmoid => ((x + 3.0)?.clamp(0f32, 6f32)? / 6.0)?,
            Activation::Sigmoid => candle_nn::ops::sigmoid(x)?,
        })
    }
}

/// Global average pooling: N×C×H×W → N×C.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    Ok(x.mean(D::Minus1)?.mean(D::Minus1)?)
}

/// LayerNorm with timm's names `{prefix}.weight` and `{prefix}.bias`, trainable: on the CPU one custom op with a
/// hand-written backward (`kernels::ops::layer_norm`), elsewhere plain tensor ops that all have a backward
/// (candle's fused `layer_norm` records no gradient; [`LayerNorm::forward_fused`] uses it off the CPU).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    /// Scale (gamma), `dim`.
    pub weight: Param,
    /// Shift (beta), `dim`.
    pub bias: Param,
    /// Epsilon added to the variance (timm: 1e-6).
    pub eps: f64,
}

impl LayerNorm {
    /// Take the parameters under `prefix` from `store`.
    pub fn new(store: &ParamStore, prefix: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: store.param_with_role(&format!("{prefix}.weight"), dim, ParamRole::Norm, true)?,
            bias: store.param_with_role(&format!("{prefix}.bias"), dim, ParamRole::Norm, false)?,
            eps,
        })
    }

    /// Normalise over the last dimension (`F.layer_norm`: biased variance).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(kernels::ops::layer_norm(
            x,
            &self.weight.tensor(),
            &self.bias.tensor(),
            self.eps,
        )?)
    }

    /// [`LayerNorm::forward`] for inference: no gradient (the result keeps no graph alive). On the CPU the same
    /// kernel on detached inputs (faster than candle's no-gradient `layer_norm`: 0.5 vs 0.8 ms at ViT-Tiny's
    /// 32×197×192), elsewhere candle's single-kernel `layer_norm`.
    pub fn forward_fused(&self, x: &Tensor) -> Result<Tensor> {
        if !x.device().is_cpu() {
            return Ok(candle_nn::ops::layer_norm(
                &x.contiguous()?,
                &self.weight.tensor(),
                &self.bias.tensor(),
                self.eps as f32,
            )?);
        }
        Ok(kernels::ops::layer_norm(
            &x.detach(),
            &self.weight.tensor().detach(),
            &self.bias.tensor().detach(),
            self.eps,
        )?)
    }

    /// Normalise N×C×H×W over its channels (timm's `LayerNorm2d`): NHWC through [`LayerNorm::forward`].
    pub fn forward_nchw(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.forward(&x.permute((0, 2, 3, 1))?.contiguous()?)?;
        Ok(y.permute((0, 3, 1, 2))?.contiguous()?)
    }
}

/// Softmax over the last dimension with a backward (candle's `softmax_last_dim` records none): on the CPU one
/// custom op (`kernels::ops::softmax_last_dim`), elsewhere plain tensor ops.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    Ok(kernels::ops::softmax_last_dim(x)?)
}

/// GELU with the exact error function (PyTorch's `nn.GELU()`): on the CPU one custom op with a one-pass backward
/// (`kernels::ops::gelu_erf`), elsewhere candle's `gelu_erf`.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    Ok(kernels::ops::gelu_erf(x)?)
}

/// `x · Wᵀ + b` for `x` of any rank ≥ 2 (leading dimensions flattened into rows).
pub fn linear_nd(linear: &Linear, x: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (lead, k) = dims.split_at(dims.len() - 1);
    let rows: usize = lead.iter().product();
    let y = linear.forward(&x.reshape((rows, k[0]))?)?;
    let mut out = lead.to_vec();
    out.push(y.dim(1)?);
    Ok(y.reshape(out)?)
}
