//! What a sample is labelled with, carried through every transform: boxes, masks and the placement record.
//!
//! Coordinates are continuous pixel coordinates: pixel `(col x, row y)` covers `[x, x + 1) × [y, y + 1)`, so an
//! image of width `W` spans `[0, W]`. Boxes are `xyxy` in those coordinates (torchvision v2's `XYXY` format).

use candle_core::{Device, Tensor};
use image::{GrayImage, Luma, RgbImage};

use crate::error::Result;

/// The mask value of pixels that carry no label (outside the image, or marked so): losses and metrics skip them.
pub const IGNORE: u8 = 255;

/// One object's box: pixel `xyxy` (x0 < x1, y0 < y1) and its class index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxTarget {
    /// `[x0, y0, x1, y1]` in pixels.
    pub xyxy: [f32; 4],
    /// Class index into the dataset's class list.
    pub class: u32,
    /// COCO's `iscrowd` (a crowd region: evaluation ignores matches to it); `false` for YOLO labels.
    pub iscrowd: bool,
}

impl BoxTarget {
    /// A non-crowd box of `class`.
    pub fn new(xyxy: [f32; 4], class: u32) -> Self {
        Self {
            xyxy,
            class,
            iscrowd: false,
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> f32 {
        self.xyxy[2] - self.xyxy[0]
    }

    /// Height in pixels.
    pub fn height(&self) -> f32 {
        self.xyxy[3] - self.xyxy[1]
    }
}

/// When a geometric step drops a box it moved (albumentations' `min_visibility` / torchvision's
/// `SanitizeBoundingBoxes(min_size)` / Ultralytics' `box_candidates`).
///
/// After a step maps a box (rotations: the axis-aligned box enclosing the rotated corners) and clips it to the new
/// image, the box is dropped when its clipped width or height is below `min_size` pixels, or when the clipped area is
/// below `min_visible` of its unclipped area (the part the crop or rotation cut away).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxFilter {
    /// Smallest kept width and height in pixels (default 2, as Ultralytics).
    pub min_size: f32,
    /// Smallest kept fraction of the box left inside the image (default 0.1, as Ultralytics' area ratio).
    pub min_visible: f32,
}

impl Default for BoxFilter {
    fn default() -> Self {
        Self {
            min_size: 2.0,
            min_visible: 0.1,
        }
    }
}

/// A 2-D affine map of continuous pixel coordinates: `x' = m[0] x + m[1] y + m[2]`, `y' = m[3] x + m[4] y + m[5]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    /// The six coefficients, row-major.
    pub m: [f64; 6],
}

impl Affine {
    /// The identity.
    pub const IDENTITY: Affine = Affine {
        m: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
    };

    /// Scale by `(sx, sy)`, then translate by `(tx, ty)`.
    pub fn scale_translate(sx: f64, sy: f64, tx: f64, ty: f64) -> Self {
        Self {
            m: [sx, 0.0, tx, 0.0, sy, ty],
        }
    }

    /// This map followed by `next`.
    pub fn then(&self, next: &Affine) -> Affine {
        let [a, b, c, d, e, f] = self.m;
        let [p, q, r, s, t, u] = next.m;
        Affine {
            m: [
                p * a + q * d,
                p * b + q * e,
                p * c + q * f + r,
                s * a + t * d,
                s * b + t * e,
                s * c + t * f + u,
            ],
        }
    }

    /// The inverse map (the identity when the map is singular, which no transform produces).
    pub fn inverse(&self) -> Affine {
        let [a, b, c, d, e, f] = self.m;
        let det = a * e - b * d;
        if det == 0.0 || !det.is_finite() {
            return Affine::IDENTITY;
        }
        let (ia, ib, id, ie) = (e / det, -b / det, -d / det, a / det);
        Affine {
            m: [ia, ib, -(ia * c + ib * f), id, ie, -(id * c + ie * f)],
        }
    }

    /// Map one point.
    pub fn apply(&self, x: f64, y: f64) -> (f64, f64) {
        let [a, b, c, d, e, f] = self.m;
        (a * x + b * y + c, d * x + e * y + f)
    }

    /// The axis-aligned box enclosing the four mapped corners of `xyxy`.
    pub fn map_box(&self, xyxy: [f32; 4]) -> [f64; 4] {
        let [x0, y0, x1, y1] = xyxy.map(f64::from);
        let corners = [(x0, y0), (x1, y0), (x0, y1), (x1, y1)].map(|(x, y)| self.apply(x, y));
        let (mut lo_x, mut lo_y, mut hi_x, mut hi_y) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
        for (x, y) in corners {
            lo_x = lo_x.min(x);
            lo_y = lo_y.min(y);
            hi_x = hi_x.max(x);
            hi_y = hi_y.max(y);
        }
        [lo_x, lo_y, hi_x, hi_y]
    }
}

/// Where a sample's pixels went: the map from the original image (as decoded) to the current one.
///
/// Every geometric step composes its own map into this record, so after a pipeline (a letterbox, a
/// resize-and-pad, or any augmentation) [`Placement::to_original_boxes`], [`Placement::to_original_mask`] and
/// [`Placement::to_original_logits`] bring predictions made on the model input back to original pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// Original `(height, width)`.
    pub original_hw: (usize, usize),
    /// Current `(height, width)` (the model input's, after a pipeline).
    pub hw: (usize, usize),
    /// Original coordinates → current coordinates.
    pub to_input: Affine,
}

impl Placement {
    /// The identity placement of an image of `(height, width)`.
    pub fn identity(hw: (usize, usize)) -> Self {
        Self {
            original_hw: hw,
            hw,
            to_input: Affine::IDENTITY,
        }
    }

    /// This placement followed by a step mapping coordinates by `step` into an image of `hw`.
    pub fn then(&self, step: &Affine, hw: (usize, usize)) -> Self {
        Self {
            original_hw: self.original_hw,
            hw,
            to_input: self.to_input.then(step),
        }
    }

    /// The scale `(sx, sy)` and offset `(ox, oy)` of an axis-aligned placement (`input = original · s + o`), as a
    /// letterbox records them; `None` after a rotation.
    pub fn scale_offset(&self) -> Option<((f64, f64), (f64, f64))> {
        let [a, b, c, d, e, f] = self.to_input.m;
        (b == 0.0 && d == 0.0).then_some(((a, e), (c, f)))
    }

    /// Boxes predicted on the current image, mapped back to the original and clipped to it (none is dropped).
    pub fn to_original_boxes(&self, boxes: &[BoxTarget]) -> Vec<BoxTarget> {
        let inv = self.to_input.inverse();
        let (h, w) = (self.original_hw.0 as f64, self.original_hw.1 as f64);
        boxes
            .iter()
            .map(|b| {
                let [x0, y0, x1, y1] = inv.map_box(b.xyxy);
                BoxTarget {
                    xyxy: [
                        x0.clamp(0.0, w) as f32,
                        y0.clamp(0.0, h) as f32,
                        x1.clamp(0.0, w) as f32,
                        y1.clamp(0.0, h) as f32,
                    ],
                    ..*b
                }
            })
            .collect()
    }

    /// The current pixel `(col, row)` each original pixel center lands in, `None` outside the current image.
    fn source_pixel(&self, x: usize, y: usize) -> Option<(usize, usize)> {
        let (u, v) = self.to_input.apply(x as f64 + 0.5, y as f64 + 0.5);
        let (h, w) = self.hw;
        (u >= 0.0 && v >= 0.0 && u < w as f64 && v < h as f64).then_some((u as usize, v as usize))
    }

    /// A class mask predicted on the current image, brought back to the original size (nearest; [`IGNORE`] where
    /// an original pixel lands outside the current image).
    pub fn to_original_mask(&self, mask: &GrayImage) -> GrayImage {
        let (oh, ow) = self.original_hw;
        GrayImage::from_fn(ow as u32, oh as u32, |x, y| {
            match self.source_pixel(x as usize, y as usize) {
                Some((u, v)) if u < mask.width() as usize && v < mask.height() as usize => {
                    *mask.get_pixel(u as u32, v as u32)
                }
                _ => Luma([IGNORE]),
            }
        })
    }

    /// A logit (or probability) map `C×h×w` predicted on the current image, bilinearly resampled to the original
    /// `C×H×W` (edge values beyond the current image), on the map's device.
    pub fn to_original_logits(&self, logits: &Tensor) -> Result<Tensor> {
        let (c, h, w) = logits.dims3()?;
        let src: Vec<f32> = logits.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?;
        let (oh, ow) = self.original_hw;
        let mut out = vec![0f32; c * oh * ow];
        for y in 0..oh {
            for x in 0..ow {
                let (u, v) = self.to_input.apply(x as f64 + 0.5, y as f64 + 0.5);
                let (u, v) = (
                    (u - 0.5).clamp(0.0, (w - 1) as f64),
                    (v - 0.5).clamp(0.0, (h - 1) as f64),
                );
                let (u0, v0) = (u.floor() as usize, v.floor() as usize);
                let (u1, v1) = ((u0 + 1).min(w - 1), (v0 + 1).min(h - 1));
                let (fu, fv) = ((u - u0 as f64) as f32, (v - v0 as f64) as f32);
                for k in 0..c {
                    let p = |yy: usize, xx: usize| src[(k * h + yy) * w + xx];
                    let top = p(v0, u0) * (1.0 - fu) + p(v0, u1) * fu;
                    let bottom = p(v1, u0) * (1.0 - fu) + p(v1, u1) * fu;
                    out[(k * oh + y) * ow + x] = top * (1.0 - fv) + bottom * fv;
                }
            }
        }
        Ok(Tensor::from_vec(out, (c, oh, ow), logits.device())?)
    }
}

/// An image with its targets: what every transform step maps (torchvision v2's image + `Mask` + `BoundingBoxes`).
///
/// Geometric steps move `image`, `mask` and `boxes` together and compose their map into `placement`; photometric
/// steps change `image` only.
#[derive(Debug, Clone, PartialEq)]
pub struct Annotated {
    /// The image.
    pub image: RgbImage,
    /// Per-pixel class indices of the image's size ([`IGNORE`] = no label), for segmentation.
    pub mask: Option<GrayImage>,
    /// Object boxes in the image's pixel coordinates, for detection.
    pub boxes: Vec<BoxTarget>,
    /// The map from the original image to this one.
    pub placement: Placement,
    /// When a geometric step drops a box.
    pub box_filter: BoxFilter,
}

impl Annotated {
    /// An image without targets; its placement is the identity.
    pub fn new(image: RgbImage) -> Self {
        let hw = (image.height() as usize, image.width() as usize);
        Self {
            image,
            mask: None,
            boxes: Vec::new(),
            placement: Placement::identity(hw),
            box_filter: BoxFilter::default(),
        }
    }

    /// With a segmentation mask (of the image's size).
    pub fn with_mask(mut self, mask: GrayImage) -> Self {
        self.mask = Some(mask);
        self
    }

    /// With object boxes.
    pub fn with_boxes(mut self, boxes: Vec<BoxTarget>) -> Self {
        self.boxes = boxes;
        self
    }

    /// Whether a mask or boxes must follow the image.
    pub fn has_targets(&self) -> bool {
        self.mask.is_some() || !self.boxes.is_empty()
    }

    /// A photometric change: `f` maps the image, targets stay where they are.
    pub fn map_image(mut self, f: impl FnOnce(RgbImage) -> RgbImage) -> Self {
        self.image = f(self.image);
        self
    }

    /// A geometric change: the image and mask are mapped by `image` and `mask`, whose pixels moved by `step`;
    /// boxes are mapped, clipped and filtered with [`Annotated::box_filter`], and the placement records `step`.
    pub fn moved(
        mut self,
        step: &Affine,
        image: impl FnOnce(RgbImage) -> RgbImage,
        mask: impl FnOnce(GrayImage) -> GrayImage,
    ) -> Self {
        self.image = image(self.image);
        self.mask = self.mask.map(mask);
        let hw = (self.image.height() as usize, self.image.width() as usize);
        let (h, w) = (hw.0 as f64, hw.1 as f64);
        let filter = self.box_filter;
        self.boxes.retain_mut(|b| {
            let [x0, y0, x1, y1] = step.map_box(b.xyxy);
            let area = (x1 - x0) * (y1 - y0);
            let [cx0, cy0, cx1, cy1] = [x0.clamp(0.0, w), y0.clamp(0.0, h), x1.clamp(0.0, w), y1.clamp(0.0, h)];
            let (cw, ch) = (cx1 - cx0, cy1 - cy0);
            let keep = area > 0.0
                && cw >= filter.min_size as f64
                && ch >= filter.min_size as f64
                && cw * ch >= filter.min_visible as f64 * area;
            b.xyxy = [cx0 as f32, cy0 as f32, cx1 as f32, cy1 as f32];
            keep
        });
        self.placement = self.placement.then(step, hw);
        self
    }
}

/// Which kind of target a dataset gives its samples, and so which [`Targets`] variant its batches carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// One class index per image.
    Classes,
    /// A set of class indices per image (multi-label), of `num_classes` classes.
    ClassSets {
        /// Number of classes (the width of the multi-hot rows).
        num_classes: usize,
    },
    /// A class mask per image.
    Masks,
    /// Object boxes per image.
    Boxes,
}

/// A batch's targets, in batch order.
#[derive(Debug, Clone)]
pub enum Targets {
    /// Class indices, `N` u32 (the same tensor as `Batch::labels`).
    Classes(Tensor),
    /// Multi-hot class sets, `N×C` f32 of 0 and 1.
    ClassSets(Tensor),
    /// Class masks, `N×H×W` u32 aligned with the images, [`IGNORE`] (255) where unlabelled.
    Masks(Tensor),
    /// Boxes per image in input pixels (`xyxy`), possibly none (background images).
    Boxes(Vec<Vec<BoxTarget>>),
}
