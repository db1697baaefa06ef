//! Custom tensor operations candle 0.11 lacks or runs slowly: depthwise convolution (channels-first and
//! channels-last), max-pooling and a last-dimension bias add with backward; trainable LayerNorm, softmax and GELU
//! with hand-written backward; a fused multi-head self-attention with its backward and a fused linear layer over rows
//! for inference.
//!
//! On the CPU they run as candle custom ops with direct, vectorised loops parallel over (image, channel) planes or
//! chunks of rows (f32 and f64; other float dtypes go through f32). On other devices they fall back to candle's own
//! operations.

mod attention;
mod bias;
mod depthwise;
mod depthwise_nhwc;
mod gelu;
mod layer_norm;
mod linear;
mod maxpool;
pub(crate) mod plane;
pub(crate) mod rows;
mod softmax;

use candle_core::{DType, Tensor, D};

/// Run `f` on `x` (and `w`) converted to f32 when their dtype is not f32/f64, converting the result back.
fn via_float(xs: &[&Tensor], f: impl FnOnce(&[Tensor]) -> candle_core::Result<Tensor>) -> candle_core::Result<Tensor> {
    let dtype = xs[0].dtype();
    if matches!(dtype, DType::F32 | DType::F64) {
        let xs = xs
            .iter()
            .map(|t| t.contiguous())
            .collect::<candle_core::Result<Vec<_>>>()?;
        f(&xs)
    } else {
        let xs = xs
            .iter()
            .map(|t| t.to_dtype(DType::F32)?.contiguous())
            .collect::<candle_core::Result<Vec<_>>>()?;
        f(&xs)?.to_dtype(dtype)
    }
}

/// Depthwise 2-D convolution: `x` N×C×H×W, `w` C×1×k×k, zero padding `[top, bottom, left, right]`.
///
/// CPU: a direct custom op with its own backward (gradients for `x` and `w`). Other devices: candle's grouped
/// convolution.
pub fn depthwise_conv2d(
    x: &candle_core::Tensor,
    w: &candle_core::Tensor,
    stride: usize,
    pad: [usize; 4],
) -> candle_core::Result<candle_core::Tensor> {
    if x.device().is_cpu() {
        if w.dtype() != x.dtype() {
            candle_core::bail!(
                "depthwise_conv2d: weight dtype {:?} differs from input dtype {:?}",
                w.dtype(),
                x.dtype()
            );
        }
        return via_float(&[x, w], |t| {
            t[0].apply_op2(&t[1], depthwise::DepthwiseConv { stride, pad })
        });
    }
    let c = x.dim(1)?;
    let symmetric = pad.iter().all(|&p| p == pad[0]);
    if symmetric {
        x.conv2d(w, pad[0], stride, 1, c)
    } else {
        x.pad_with_zeros(2, pad[0], pad[1])?
            .pad_with_zeros(3, pad[2], pad[3])?
            .conv2d(w, 0, stride, 1, c)
    }
}

/// Depthwise 2-D convolution of a channels-last tensor: `x` N×H×W×C, `w` C×1×k×k (timm's layout), zero padding
/// `[top, bottom, left, right]` → N×Ho×Wo×C.
///
/// CPU: a custom op vectorised over channels (f32/f64; other dtypes through f32) with its own backward, which
/// computes the gradient of `x` and of `w` only when they record operations. Other devices: permuted to N×C×H×W
/// and back around [`depthwise_conv2d`].
pub fn depthwise_conv2d_nhwc(x: &Tensor, w: &Tensor, stride: usize, pad: [usize; 4]) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() {
        if w.dtype() != x.dtype() {
            candle_core::bail!(
                "depthwise_conv2d_nhwc: weight dtype {:?} differs from input dtype {:?}",
                w.dtype(),
                x.dtype()
            );
        }
        return via_float(&[x, w], |t| {
            t[0].apply_op2(&t[1], depthwise_nhwc::DepthwiseNhwc { stride, pad })
        });
    }
    depthwise_conv2d(&x.permute((0, 3, 1, 2))?, w, stride, pad)?.permute((0, 2, 3, 1))
}

/// `x + b` with the bias `b` (C) broadcast along the last dimension of `x` (… × C).
///
/// CPU f32/f64: a custom op whose backward hands the output gradient to `x` as it is and sums it per column for `b`
/// in parallel (each only when needed), where candle's broadcast backward reduces the leading dimensions in one
/// scalar loop. Other devices and dtypes: candle's `broadcast_add`.
pub fn add_bias(x: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) && b.dtype() == x.dtype() {
        return x.contiguous()?.apply_op2(&b.contiguous()?, bias::AddBias);
    }
    x.broadcast_add(b)
}

/// `x (rows × in) · wᵀ + b` for `w` stored `out × in`, plus `skip` (rows × out) when given.
///
/// When nothing records an operation (inference) on the CPU in f32: blocks of rows in parallel, each one GEMM with the
/// bias and the residual added while the block is in cache, no intermediate tensors. Otherwise (a gradient may be
/// needed, other devices or dtypes): the plain composition `x.matmul(wᵀ) + b (+ skip)`.
pub fn linear_rows(x: &Tensor, w: &Tensor, b: &Tensor, skip: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let tracked = x.track_op() || w.track_op() || b.track_op() || skip.is_some_and(|s| s.track_op());
    let f32s = [x, w, b].iter().all(|t| t.dtype() == DType::F32) && skip.is_none_or(|s| s.dtype() == DType::F32);
    if x.device().is_cpu() && f32s && !tracked && x.rank() == 2 && w.rank() == 2 && b.rank() == 1 {
        let op = linear::LinearRows {
            bias: b.to_vec1::<f32>()?,
        };
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        return match skip {
            Some(s) => x.apply_op3_no_bwd(&w, &s.contiguous()?, &op),
            None => x.apply_op2_no_bwd(&w, &op),
        };
    }
    let y = add_bias(&x.matmul(&w.t()?)?, b)?;
    match skip {
        Some(s) => y + s,
        None => Ok(y),
    }
}

/// Max-pooling with a square `kernel`, `stride` and symmetric `padding` (padded cells never win; floor output size).
///
/// CPU: a custom op whose backward routes each gradient to the first maximum of its window, for any kernel and
/// stride. Other devices: candle's forward over a `-inf`-padded input, whose backward fails when `kernel != stride`.
pub fn max_pool2d(
    x: &candle_core::Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> candle_core::Result<candle_core::Tensor> {
    if x.device().is_cpu() {
        return via_float(&[x], |t| {
            t[0].apply_op1(maxpool::MaxPool {
                kernel,
                stride,
                padding,
            })
        });
    }
    let x = if padding > 0 {
        let (n, c, h, w) = x.dims4()?;
        let neg = Tensor::full(f32::NEG_INFINITY, (n, c, h + 2 * padding, w + 2 * padding), x.device())?
            .to_dtype(x.dtype())?;
        neg.slice_assign(&[0..n, 0..c, padding..padding + h, padding..padding + w], x)?
    } else {
        x.clone()
    };
    x.max_pool2d_with_stride(kernel, stride)
}

/// Multi-head self-attention from timm's `qkv` projection: B×N×3C → B×N×C, `softmax(scale · q·kᵀ) · v` per head.
///
/// One fused pass on the CPU in f32 with its own backward (the gradient of `qkv`, recomputing the probabilities
/// rather than storing them); other devices and dtypes are an error, so callers keep a plain composition for them.
pub fn fused_attention(qkv: &Tensor, heads: usize, scale: f64) -> candle_core::Result<Tensor> {
    if !qkv.device().is_cpu() || qkv.dtype() != DType::F32 {
        candle_core::bail!(
            "fused_attention: CPU f32 only, got {:?} on {:?}",
            qkv.dtype(),
            qkv.device()
        );
    }
    qkv.contiguous()?.apply_op1(attention::FusedAttention {
        heads,
        scale: scale as f32,
    })
}

/// [`fused_attention`] as a composition of candle tensor ops, every one with a backward (any device and dtype):
/// timm's `(B, N, 3, heads, hd) → (3, B, heads, N, hd)` split, `softmax(scale · q·kᵀ) · v`, heads side by side.
pub fn attention_composed(qkv: &Tensor, heads: usize, scale: f64) -> candle_core::Result<Tensor> {
    let (b, n, c3) = qkv.dims3()?;
    if heads == 0 || c3 % (3 * heads) != 0 {
        candle_core::bail!("attention: qkv width {c3} is not 3 × heads ({heads}) × head_dim");
    }
    let c = c3 / 3;
    let qkv = qkv.reshape((b, n, 3, heads, c / heads))?.permute((2, 0, 3, 1, 4))?;
    let q = (qkv.get(0)? * scale)?.contiguous()?;
    let k = qkv.get(1)?.contiguous()?;
    let v = qkv.get(2)?.contiguous()?;
    let attn = softmax_last_dim(&q.matmul(&k.t()?)?)?;
    attn.matmul(&v)?.transpose(1, 2)?.reshape((b, n, c))
}

/// LayerNorm over the last dimension with scale `weight` and shift `bias` (both of the last dimension's length),
/// biased variance, as PyTorch's `F.layer_norm`.
///
/// CPU: one custom op with its own backward (gradients for `x`, `weight` and `bias`). Other devices:
/// [`layer_norm_composed`].
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    if !x.device().is_cpu() {
        return layer_norm_composed(x, weight, bias, eps);
    }
    if weight.dtype() != x.dtype() || bias.dtype() != x.dtype() {
        candle_core::bail!(
            "layer_norm: weight/bias dtypes {:?}/{:?} differ from input dtype {:?}",
            weight.dtype(),
            bias.dtype(),
            x.dtype()
        );
    }
    via_float(&[x, weight, bias], |t| {
        t[0].apply_op3(&t[1], &t[2], layer_norm::LayerNorm { eps })
    })
}

/// [`layer_norm`] as a composition of candle tensor ops, every one with a backward (any device and dtype).
pub fn layer_norm_composed(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let y = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    y.broadcast_mul(weight)?.broadcast_add(bias)
}

/// Softmax over the last dimension.
///
/// CPU: one custom op whose backward is `dx = y ⊙ (dy − Σ dy⊙y)` per row. Other devices:
/// [`softmax_last_dim_composed`].
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    if !x.device().is_cpu() {
        return softmax_last_dim_composed(x);
    }
    via_float(&[x], |t| t[0].apply_op1(softmax::Softmax))
}

/// [`softmax_last_dim`] as a composition of candle tensor ops, every one with a backward (any device and dtype).
pub fn softmax_last_dim_composed(x: &Tensor) -> candle_core::Result<Tensor> {
    // The maximum only stabilises the exponent; the result does not depend on it, so it carries no gradient.
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// GELU with the exact error function, `x·Φ(x)` (PyTorch's `nn.GELU()`).
///
/// CPU: one custom op with a one-pass backward `dy·(Φ(x) + x·φ(x))`. Other devices: candle's `gelu_erf`.
pub fn gelu_erf(x: &Tensor) -> candle_core::Result<Tensor> {
    if !x.device().is_cpu() {
        return x.gelu_erf();
    }
    via_float(&[x], |t| t[0].apply_op1(gelu::Gelu))
}
