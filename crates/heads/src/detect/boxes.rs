//! Axis-aligned boxes in pixel `[x0, y0, x1, y1]`: IoU, GIoU and (class-wise) non-maximum suppression.

/// A box `[x0, y0, x1, y1]` in pixels.
pub type Xyxy = [f32; 4];

/// Area of a box (0 for an empty one).
pub fn area(b: &Xyxy) -> f32 {
    (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0)
}

/// Intersection over union of two boxes (0 when both are empty).
pub fn iou(a: &Xyxy, b: &Xyxy) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// Generalised IoU (Rezatofighi et al. 2019): IoU − (enclosing area − union) / enclosing area, in [−1, 1].
pub fn giou(a: &Xyxy, b: &Xyxy) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = area(a) + area(b) - inter;
    let hull = (a[2].max(b[2]) - a[0].min(b[0])) * (a[3].max(b[3]) - a[1].min(b[1]));
    if union <= 0.0 || hull <= 0.0 {
        return 0.0;
    }
    inter / union - (hull - union) / hull
}

/// Greedy NMS: indices of `boxes` kept, by decreasing score (ties keep input order), dropping every box whose IoU
/// with an already kept box exceeds `iou_threshold` (torchvision's `nms`).
pub fn nms(boxes: &[Xyxy], scores: &[f32], iou_threshold: f32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut keep: Vec<usize> = Vec::new();
    let mut suppressed = vec![false; boxes.len()];
    for (k, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        for &j in &order[k + 1..] {
            if !suppressed[j] && iou(&boxes[i], &boxes[j]) > iou_threshold {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// Class-wise NMS (torchvision's `batched_nms`): boxes of different classes never suppress each other; the kept
/// indices are sorted by decreasing score.
pub fn batched_nms(boxes: &[Xyxy], scores: &[f32], classes: &[usize], iou_threshold: f32) -> Vec<usize> {
    let mut by_class: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, &c) in classes.iter().enumerate() {
        by_class.entry(c).or_default().push(i);
    }
    let mut keep = Vec::new();
    for idx in by_class.values() {
        let b: Vec<Xyxy> = idx.iter().map(|&i| boxes[i]).collect();
        let s: Vec<f32> = idx.iter().map(|&i| scores[i]).collect();
        keep.extend(nms(&b, &s, iou_threshold).into_iter().map(|k| idx[k]));
    }
    keep.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    keep
}
