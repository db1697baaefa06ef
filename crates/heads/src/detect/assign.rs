//! FCOS target assignment (Tian et al. 2019, "FCOS: Fully Convolutional One-Stage Object Detection", §3.1–3.2,
//! with centre sampling as in torchvision's `FCOSHead`): a location is a positive of a ground-truth box when it lies
//! inside the box, within `radius · stride` of the box centre (Chebyshev distance), and the largest of its four
//! distances to the box sides falls in its level's range (`[4·stride, 8·stride)`, the first level from 0 and the
//! last to infinity: FCOS's m_i = 0, 64, 128, 256, 512, ∞ for P3…P7); a location matching several boxes takes the
//! one with the smallest area.

use super::boxes::{area, Xyxy};

/// The locations of one feature level: `(h, w)` cells of `stride` pixels, centred at `(x·s + s/2, y·s + s/2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    /// Pixels per cell.
    pub stride: usize,
    /// Rows.
    pub h: usize,
    /// Columns.
    pub w: usize,
}

impl Level {
    /// Number of locations.
    pub fn len(&self) -> usize {
        self.h * self.w
    }

    /// Whether the level has no location.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Centre of location `i` (row-major), in pixels.
    pub fn center(&self, i: usize) -> (f32, f32) {
        let s = self.stride as f32;
        ((i % self.w) as f32 * s + s / 2.0, (i / self.w) as f32 * s + s / 2.0)
    }
}

/// Settings of [`assign`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AssignConfig {
    /// Centre-sampling radius in strides (torchvision: 1.5).
    pub center_radius: f32,
    /// A level's range is `[lower · stride, upper · stride)` (FCOS: 4 and 8).
    pub range: (f32, f32),
}

impl Default for AssignConfig {
    fn default() -> Self {
        Self {
            center_radius: 1.5,
            range: (4.0, 8.0),
        }
    }
}

/// For every location of `levels` (in order, each row-major), the index of the box of `gt` it is a positive of,
/// or `None` (background).
pub fn assign(levels: &[Level], gt: &[Xyxy], cfg: &AssignConfig) -> Vec<Option<usize>> {
    let mut out = Vec::with_capacity(levels.iter().map(Level::len).sum());
    let n = levels.len();
    for (li, level) in levels.iter().enumerate() {
        let s = level.stride as f32;
        let lower = if li == 0 { f32::NEG_INFINITY } else { cfg.range.0 * s };
        let upper = if li + 1 == n { f32::INFINITY } else { cfg.range.1 * s };
        for i in 0..level.len() {
            let (x, y) = level.center(i);
            let mut best: Option<(f32, usize)> = None;
            for (g, b) in gt.iter().enumerate() {
                let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
                if (x - cx).abs().max((y - cy).abs()) >= cfg.center_radius * s {
                    continue;
                }
                let d = [x - b[0], y - b[1], b[2] - x, b[3] - y];
                let (dmin, dmax) = (
                    d.iter().copied().fold(f32::INFINITY, f32::min),
                    d.iter().copied().fold(0f32, f32::max),
                );
                if dmin <= 0.0 || dmax <= lower || dmax >= upper {
                    continue;
                }
                let a = area(b);
                if best.is_none_or(|(ba, _)| a < ba) {
                    best = Some((a, g));
                }
            }
            out.push(best.map(|(_, g)| g));
        }
    }
    out
}

/// FCOS's regression target of a location at `(x, y)` for box `b`: distances to the left, top, right and bottom
/// sides divided by `stride` (torchvision's `BoxLinearCoder(normalize_by_size=True)`).
pub fn ltrb_target((x, y): (f32, f32), b: &Xyxy, stride: f32) -> [f32; 4] {
    [
        (x - b[0]) / stride,
        (y - b[1]) / stride,
        (b[2] - x) / stride,
        (b[3] - y) / stride,
    ]
}

/// FCOS's centerness target `√(min(l, r)/max(l, r) · min(t, b)/max(t, b))` of an `ltrb` target.
pub fn centerness(ltrb: &[f32; 4]) -> f32 {
    let [l, t, r, b] = *ltrb;
    let lr = l.min(r) / l.max(r).max(f32::MIN_POSITIVE);
    let tb = t.min(b) / t.max(b).max(f32::MIN_POSITIVE);
    (lr * tb).max(0.0).sqrt()
}

/// The box a location at `(x, y)` predicts from normalised distances `ltrb` (the inverse of [`ltrb_target`]).
pub fn decode((x, y): (f32, f32), ltrb: &[f32; 4], stride: f32) -> Xyxy {
    [
        x - ltrb[0] * stride,
        y - ltrb[1] * stride,
        x + ltrb[2] * stride,
        y + ltrb[3] * stride,
    ]
}
