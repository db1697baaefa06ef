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

/// Elementwise `BCE(x, t) = max(x, 0) − x·t + log(1 + e^−|x|)` (stable, differentiable).
fn bce_elementwise(x: &Tensor, t: &Tensor) -> Result<Tensor> {
    let pos = x.relu()?;
    let soft = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok(((pos - (x * t)?)? + soft)?)
}

/// Sigmoid focal loss (Lin et al. 2017, torchvision's `sigmoid_focal_loss`), summed over every element:
/// `α_t · (1 − p_t)^γ · BCE(x, t)` with `p = sigmoid(x)`, `p_t = p·t + (1 − p)(1 − t)`, `α_t = α·t + (1 − α)(1 − t)`.
pub fn sigmoid_focal_loss(logits: &Tensor, targets: &Tensor, alpha: f64, gamma: f64) -> Result<Tensor> {
    let t = targets.to_dtype(logits.dtype())?;
    let ce = bce_elementwise(logits, &t)?;
    let p = (logits.neg()?.exp()? + 1.0)?.recip()?;
    let one_minus_t = (t.ones_like()? - &t)?;
    let p_t = ((&p * &t)? + ((p.ones_like()? - &p)? * &one_minus_t)?)?;
    let modulator = (p_t.ones_like()? - p_t)?.clamp(0.0, 1.0)?.powf(gamma)?;
    let alpha_t = ((&t * alpha)? + (one_minus_t * (1.0 - alpha))?)?;
    Ok((ce * modulator)?.mul(&alpha_t)?.sum_all()?)
}

/// Generalised IoU loss `1 − GIoU(pred, target)` per box pair (rows of N×…×4 `[x0, y0, x1, y1]` tensors), as
/// torchvision's `generalized_box_iou_loss` (eps 1e-7); returns the per-pair losses (shape without the last dim).
pub fn giou_loss(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    let last = pred.rank() - 1;
    let part = |t: &Tensor, i: usize| t.narrow(last, i, 1).and_then(|v| v.squeeze(last));
    let (px0, py0, px1, py1) = (part(pred, 0)?, part(pred, 1)?, part(pred, 2)?, part(pred, 3)?);
    let (tx0, ty0, tx1, ty1) = (part(target, 0)?, part(target, 1)?, part(target, 2)?, part(target, 3)?);
    let iw = (px1.minimum(&tx1)? - px0.maximum(&tx0)?)?.relu()?;
    let ih = (py1.minimum(&ty1)? - py0.maximum(&ty0)?)?.relu()?;
    let inter = (iw * ih)?;
    let area_p = ((&px1 - &px0)? * (&py1 - &py0)?)?;
    let area_t = ((&tx1 - &tx0)? * (&ty1 - &ty0)?)?;
    let union = ((area_p + area_t)? - &inter)?;
    let iou = (&inter / (&union + 1e-7)?)?;
    let hw = (px1.maximum(&tx1)? - px0.minimum(&tx0)?)?;
    let hh = (py1.maximum(&ty1)? - py0.minimum(&ty0)?)?;
    let hull = (hw * hh)?;
    let giou = (iou - ((&hull - &union)? / (&hull + 1e-7)?)?)?;
    Ok((giou.ones_like()? - giou)?)
}

/// The three parts of the FCOS loss (each divided by the number of positive locations, at least 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FcosLossParts {
    /// Focal loss of the classification logits over every location and class.
    pub cls: f64,
    /// GIoU loss of the decoded boxes at positive locations.
    pub bbox: f64,
    /// BCE of the centerness logits at positive locations.
    pub ctr: f64,
}

/// torchvision's `FCOSHead.compute_loss`: focal loss (α 0.25, γ 2) + GIoU loss of the boxes decoded from the
/// predicted distances + centerness BCE, each summed and divided by max(1, positives); returns the total (with its
/// graph) and the parts.
pub fn fcos_loss(out: &heads::DetOutput, t: &heads::DetTargets) -> Result<(Tensor, FcosLossParts)> {
    let norm = t.num_fg.max(1) as f64;
    let cls = (sigmoid_focal_loss(&out.cls, &t.cls, 0.25, 2.0)? / norm)?;
    // Decode every location's box: centre ∓ distance · stride.
    let (n, l, _) = out.reg.dims3()?;
    let s = t.strides.reshape((1, l, 1))?.broadcast_as((n, l, 2))?;
    let c = t.centers.reshape((1, l, 2))?.broadcast_as((n, l, 2))?;
    let lt = out.reg.narrow(2, 0, 2)?.mul(&s)?;
    let rb = out.reg.narrow(2, 2, 2)?.mul(&s)?;
    let pred = Tensor::cat(&[(&c - lt)?, (&c + rb)?], 2)?;
    let bbox = ((giou_loss(&pred, &t.boxes)? * &t.fg)?.sum_all()? / norm)?;
    let ctr = ((bce_elementwise(&out.ctr, &t.ctr)? * &t.fg)?.sum_all()? / norm)?;
    let parts = FcosLossParts {
        cls: cls.to_dtype(DType::F32)?.to_scalar::<f32>()? as f64,
        bbox: bbox.to_dtype(DType::F32)?.to_scalar::<f32>()? as f64,
        ctr: ctr.to_dtype(DType::F32)?.to_scalar::<f32>()? as f64,
    };
    Ok((((cls + bbox)? + ctr)?, parts))
}
