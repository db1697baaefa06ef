//! Losses with PyTorch's semantics, built only from differentiable candle ops.

use candle_core::{DType, Tensor, D};

use crate::error::{Error, Result};

/// Numerically stable log-softmax over `dim`: `x − max − log Σ exp(x − max)`.
pub fn log_softmax(x: &Tensor, dim: D) -> Result<Tensor> {
    let max = x.max_keepdim(dim)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(dim)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

/// Options of [`cross_entropy`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CrossEntropy {
    /// Label smoothing ε in [0, 1).
    pub label_smoothing: f64,
    /// Per-class weights (the weighted mean divides by the sum of the targets' weights, as PyTorch).
    pub class_weights: Option<Vec<f32>>,
}

/// Cross-entropy of `logits` (N×C) against class indices `targets` (N, u32), mean-reduced as PyTorch's
/// `F.cross_entropy(logits, targets, weight, label_smoothing)`.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor, opts: &CrossEntropy) -> Result<Tensor> {
    let (n, c) = logits.dims2()?;
    let y: Vec<u32> = targets.flatten_all()?.to_dtype(DType::U32)?.to_vec1()?;
    if y.len() != n {
        return Err(Error::Config(format!("{} targets for {n} logits rows", y.len())));
    }
    let w = match &opts.class_weights {
        Some(w) if w.len() != c => return Err(Error::Config(format!("{} class weights for {c} classes", w.len()))),
        Some(w) => w.clone(),
        None => vec![1.0; c],
    };
    let eps = opts.label_smoothing as f32;
    if !(0.0..1.0).contains(&eps) {
        return Err(Error::Config(format!("label smoothing {eps} is not in [0, 1)")));
    }
    let mut denom = 0f32;
    for &t in &y {
        let t = t as usize;
        if t >= c {
            return Err(Error::Config(format!("label {t} is out of range for {c} classes")));
        }
        denom += w[t];
    }
    // loss = −Σ_ic M_ic · logp_ic with M = ((1−ε)·w_y·onehot + (ε/C)·w_c) / Σ_i w_{y_i}.
    let mut m = vec![0f32; n * c];
    for (i, &t) in y.iter().enumerate() {
        for (j, wj) in w.iter().enumerate() {
            m[i * c + j] = eps / c as f32 * wj / denom;
        }
        m[i * c + t as usize] += (1.0 - eps) * w[t as usize] / denom;
    }
    let m = Tensor::from_vec(m, (n, c), logits.device())?.to_dtype(logits.dtype())?;
    Ok((log_softmax(logits, D::Minus1)? * m)?.sum_all()?.neg()?)
}

/// Stable binary cross-entropy with logits, mean over every element: per element
/// `(1 − y)·x + (1 + (pw − 1)·y)·(log(1 + e^−|x|) + max(−x, 0))` times `weight`; without `pos_weight` this is
/// `max(x, 0) − x·y + log(1 + e^−|x|)`. `targets` has the logits' shape (float); `pos_weight` and `weight` broadcast
/// along the last dimension (per class).
pub fn bce_with_logits(
    logits: &Tensor,
    targets: &Tensor,
    pos_weight: Option<&[f32]>,
    weight: Option<&[f32]>,
) -> Result<Tensor> {
    let y = targets.to_dtype(logits.dtype())?;
    if y.dims() != logits.dims() {
        return Err(Error::Config(format!(
            "targets {:?} do not match logits {:?}",
            y.dims(),
            logits.dims()
        )));
    }
    let c = logits.dim(D::Minus1)?;
    let per_class = |v: &[f32], what: &str| -> Result<Tensor> {
        if v.len() != c {
            return Err(Error::Config(format!("{} {what} for {c} outputs", v.len())));
        }
        Ok(Tensor::from_slice(v, c, logits.device())?.to_dtype(logits.dtype())?)
    };
    let x = logits;
    let softplus_neg_abs = (x.abs()?.neg()?.exp()? + 1.0)?.log()?; // log(1 + e^−|x|)
    let mut loss = match pos_weight {
        None => ((x.relu()? - (x * &y)?)? + softplus_neg_abs)?,
        Some(pw) => {
            let log_sig_neg = (softplus_neg_abs + x.neg()?.relu()?)?; // −log σ(x)
            let pw = per_class(pw, "pos_weight values")?;
            let coef = (y.broadcast_mul(&(pw - 1.0)?)? + 1.0)?;
            (((1.0 - &y)? * x)? + (coef * log_sig_neg)?)?
        }
    };
    if let Some(w) = weight {
        loss = loss.broadcast_mul(&per_class(w, "weights")?)?;
    }
    Ok(loss.mean_all()?)
}

/// Inverse-frequency class weights, sklearn's 'balanced': `n_samples / (n_classes · count)` (0 for absent classes).
pub fn class_weights_auto(label_counts: &[usize]) -> Vec<f32> {
    let total: usize = label_counts.iter().sum();
    let k = label_counts.len() as f64;
    label_counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                (total as f64 / (k * c as f64)) as f32
            }
        })
        .collect()
}

/// Options of the per-pixel losses ([`segmentation_loss`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SegLoss {
    /// Weight of the cross-entropy term (0 turns it off).
    pub ce: f64,
    /// Weight of the Dice term (0 turns it off).
    pub dice: f64,
    /// Target value that is ignored by both terms (PyTorch's `ignore_index`; 255 as Pascal VOC).
    pub ignore_index: Option<u32>,
    /// Per-class weights of the cross-entropy (weighted mean, as PyTorch).
    pub class_weights: Option<Vec<f32>>,
}

impl Default for SegLoss {
    fn default() -> Self {
        Self {
            ce: 1.0,
            dice: 0.0,
            ignore_index: Some(255),
            class_weights: None,
        }
    }
}

/// Per-pixel loss of `logits` (N×K×H×W) against `targets` (N×H×W, u32): `ce · CE + dice · Dice`, where CE is
/// PyTorch's `F.cross_entropy(logits, targets, weight, ignore_index)` (mean over non-ignored pixels, weighted) and
/// Dice is segmentation_models_pytorch's multi-class `DiceLoss` (softmax probabilities, per class
/// `1 − 2·Σp·t / max(Σp + Σt, 1e-7)` over non-ignored pixels, averaged over the classes, classes absent from the
/// batch's targets contributing 0). A batch whose pixels are all ignored gives 0.
pub fn segmentation_loss(logits: &Tensor, targets: &Tensor, opts: &SegLoss) -> Result<Tensor> {
    let (n, k, h, w) = logits.dims4()?;
    let y: Vec<u32> = targets.flatten_all()?.to_dtype(DType::U32)?.to_vec1()?;
    if y.len() != n * h * w {
        return Err(Error::Config(format!(
            "targets of {} pixels for logits of {n}×{h}×{w}",
            y.len()
        )));
    }
    let weights = match &opts.class_weights {
        Some(cw) if cw.len() != k => {
            return Err(Error::Config(format!("{} class weights for {k} classes", cw.len())));
        }
        Some(cw) => cw.clone(),
        None => vec![1.0; k],
    };
    // One-hot targets scaled for the CE term and a validity mask, built on the host (pixel-major: N·H·W × K).
    let mut onehot = vec![0f32; n * h * w * k];
    let mut valid = vec![0f32; n * h * w];
    let mut denom = 0f64;
    for (i, &t) in y.iter().enumerate() {
        if opts.ignore_index == Some(t) {
            continue;
        }
        if t as usize >= k {
            return Err(Error::Config(format!(
                "mask value {t} is out of range for {k} classes (and is not the ignore index)"
            )));
        }
        onehot[i * k + t as usize] = 1.0;
        valid[i] = 1.0;
        denom += weights[t as usize] as f64;
    }
    let dev = logits.device();
    let rows = logits.permute((0, 2, 3, 1))?.reshape((n * h * w, k))?;
    let onehot = Tensor::from_vec(onehot, (n * h * w, k), dev)?.to_dtype(rows.dtype())?;
    let mut total = Tensor::zeros((), rows.dtype(), dev)?;
    if denom == 0.0 {
        return Ok((rows.sum_all()? * 0.0)?);
    }
    if opts.ce > 0.0 {
        let w = Tensor::from_vec(weights.clone(), (1, k), dev)?.to_dtype(rows.dtype())?;
        let m = onehot.broadcast_mul(&w)?;
        let ce = ((log_softmax(&rows, D::Minus1)? * m)?.sum_all()?.neg()? / denom)?;
        total = (total + (ce * opts.ce)?)?;
    }
    if opts.dice > 0.0 {
        let valid = Tensor::from_vec(valid, (n * h * w, 1), dev)?.to_dtype(rows.dtype())?;
        let max = rows.max_keepdim(D::Minus1)?.detach();
        let e = rows.broadcast_sub(&max)?.exp()?;
        let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?.broadcast_mul(&valid)?;
        let inter = (&p * &onehot)?.sum(0)?;
        let card = (p.sum(0)? + onehot.sum(0)?)?.clamp(1e-7, f64::MAX)?;
        let present = onehot.sum(0)?.gt(0f64)?.to_dtype(rows.dtype())?;
        let score = ((inter * 2.0)? / card)?;
        let dice = ((score.ones_like()? - score)? * present)?.mean_all()?;
        total = (total + (dice * opts.dice)?)?;
    }
    Ok(total)
}
