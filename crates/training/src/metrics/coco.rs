//! COCO box evaluation, a re-implementation of pycocotools' `COCOeval(gt, dt, iouType='bbox')` `evaluate()`,
//! `accumulate()` and `summarize()` with the default parameters: IoU thresholds .50:.05:.95, 101 recall points,
//! area ranges all/small/medium/large, maxDets 1/10/100, crowd handling, per-category evaluation.
//!
//! Every step follows pycocotools (`cocoeval.py`, `maskApi.c::bbIou`), including its floating-point details: the
//! thresholds are numpy's `linspace` values, detections are sorted with a stable sort (numpy's mergesort), and the
//! summary means use numpy's pairwise summation, so the numbers agree with pycocotools to the last bits.
//! One deliberate difference: pycocotools marks "matched" by a non-zero annotation id, so a ground-truth annotation
//! with id 0 never counts as matched there; here matches are tracked by position and annotation ids do not matter.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// Number of IoU thresholds (.50:.05:.95).
pub const NUM_IOU_THRESHOLDS: usize = 10;
/// Number of recall points (0:.01:1).
pub const NUM_RECALL_POINTS: usize = 101;
/// The maxDets settings, ascending.
pub const MAX_DETS: [usize; 3] = [1, 10, 100];
/// The area ranges `[lo, hi]` (both inclusive) of all, small, medium and large objects, in pixels².
pub const AREA_RANGES: [[f64; 2]; 4] = [
    [0.0, 1e10],
    [0.0, 32.0 * 32.0],
    [32.0 * 32.0, 96.0 * 96.0],
    [96.0 * 96.0, 1e10],
];
/// Labels of [`AREA_RANGES`].
pub const AREA_LABELS: [&str; 4] = ["all", "small", "medium", "large"];

/// numpy's `np.spacing(1)` (the machine epsilon), added to precision denominators as pycocotools does.
const EPS: f64 = f64::EPSILON;

/// The IoU thresholds exactly as numpy's `linspace(.5, .95, 10)` computes them.
pub fn iou_thresholds() -> [f64; NUM_IOU_THRESHOLDS] {
    let step = (0.95f64 - 0.5) / (NUM_IOU_THRESHOLDS - 1) as f64;
    let mut t = [0.0; NUM_IOU_THRESHOLDS];
    for (i, v) in t.iter_mut().enumerate() {
        *v = i as f64 * step + 0.5;
    }
    t[NUM_IOU_THRESHOLDS - 1] = 0.95;
    t
}

/// The recall points exactly as numpy's `linspace(0, 1, 101)` computes them.
pub fn recall_points() -> [f64; NUM_RECALL_POINTS] {
    let step = 1.0f64 / (NUM_RECALL_POINTS - 1) as f64;
    let mut r = [0.0; NUM_RECALL_POINTS];
    for (i, v) in r.iter_mut().enumerate() {
        *v = i as f64 * step;
    }
    r[NUM_RECALL_POINTS - 1] = 1.0;
    r
}

/// One image of a COCO ground-truth file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoImage {
    /// Image id, referenced by annotations and detections.
    pub id: u64,
    /// Width in pixels (informative).
    #[serde(default)]
    pub width: u32,
    /// Height in pixels (informative).
    #[serde(default)]
    pub height: u32,
    /// File name (informative).
    #[serde(default)]
    pub file_name: String,
}

/// One ground-truth object of a COCO file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoAnnotation {
    /// Annotation id (informative here, see the module notes).
    #[serde(default)]
    pub id: u64,
    /// The image it belongs to.
    pub image_id: u64,
    /// Its category.
    pub category_id: u64,
    /// Box `[x, y, width, height]` in pixels.
    pub bbox: [f64; 4],
    /// Object area in pixels², which decides the area range (COCO: the mask's area); box area when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<f64>,
    /// A crowd region: never a false negative, and detections on it are neither true nor false positives.
    #[serde(default, serialize_with = "ser_crowd", deserialize_with = "de_crowd")]
    pub iscrowd: bool,
}

/// One category of a COCO file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoCategory {
    /// Category id (any integers, not necessarily contiguous).
    pub id: u64,
    /// Category name.
    #[serde(default)]
    pub name: String,
    /// Super-category (informative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supercategory: Option<String>,
}

/// A COCO ground-truth set: the `images`, `annotations` and `categories` of an instances JSON file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CocoGt {
    /// The images evaluated (images without annotations count: their detections are false positives).
    #[serde(default)]
    pub images: Vec<CocoImage>,
    /// Ground-truth objects.
    #[serde(default)]
    pub annotations: Vec<CocoAnnotation>,
    /// The categories evaluated.
    #[serde(default)]
    pub categories: Vec<CocoCategory>,
}

/// One scored detection, an entry of a COCO results JSON list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoDet {
    /// The image it was detected in.
    pub image_id: u64,
    /// Predicted category.
    pub category_id: u64,
    /// Box `[x, y, width, height]` in pixels.
    pub bbox: [f64; 4],
    /// Confidence.
    pub score: f64,
}

/// How a box's four numbers are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BoxFormat {
    /// `[x1, y1, x2, y2]` corners.
    Xyxy,
    /// `[x, y, width, height]` (COCO's layout).
    Xywh,
}

impl BoxFormat {
    /// The box in COCO's `[x, y, width, height]`.
    pub fn to_xywh(self, b: [f64; 4]) -> [f64; 4] {
        match self {
            BoxFormat::Xywh => b,
            BoxFormat::Xyxy => [b[0], b[1], b[2] - b[0], b[3] - b[1]],
        }
    }
}

/// A ground-truth box of one image, for [`CocoGt::from_image_boxes`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GtBox {
    /// Category id.
    pub category_id: u64,
    /// The box, in the layout passed along.
    pub bbox: [f64; 4],
    /// A crowd region.
    pub iscrowd: bool,
}

/// A scored detection of one image, for [`CocoDet::from_image_boxes`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetBox {
    /// Predicted category id.
    pub category_id: u64,
    /// The box, in the layout passed along.
    pub bbox: [f64; 4],
    /// Confidence.
    pub score: f64,
}

fn ser_crowd<S: Serializer>(v: &bool, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u8(u8::from(*v))
}

fn de_crowd<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Crowd {
        Bool(bool),
        Int(i64),
    }
    Ok(match Crowd::deserialize(d)? {
        Crowd::Bool(b) => b,
        Crowd::Int(i) => i != 0,
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::io(path, format!("not a valid COCO JSON file: {e}")))
}

impl CocoGt {
    /// Parses a COCO instances JSON document (other fields, such as segmentations, are ignored).
    pub fn from_json(text: &str) -> Result<Self> {
        parse_json(text, Path::new("<COCO ground truth>"))
    }

    /// Reads a COCO instances JSON file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        parse_json(&text, path)
    }

    /// A ground truth from per-image box lists: image `i` gets id `i`, annotations ids from 1, areas are the box
    /// areas, and `categories[c]` names category id `c`.
    pub fn from_image_boxes(images: &[Vec<GtBox>], format: BoxFormat, categories: &[String]) -> Self {
        let mut annotations = Vec::new();
        for (i, boxes) in images.iter().enumerate() {
            for b in boxes {
                let bbox = format.to_xywh(b.bbox);
                annotations.push(CocoAnnotation {
                    id: annotations.len() as u64 + 1,
                    image_id: i as u64,
                    category_id: b.category_id,
                    bbox,
                    area: Some(bbox[2] * bbox[3]),
                    iscrowd: b.iscrowd,
                });
            }
        }
        Self {
            images: (0..images.len())
                .map(|i| CocoImage {
                    id: i as u64,
                    width: 0,
                    height: 0,
                    file_name: String::new(),
                })
                .collect(),
            annotations,
            categories: categories
                .iter()
                .enumerate()
                .map(|(c, name)| CocoCategory {
                    id: c as u64,
                    name: name.clone(),
                    supercategory: None,
                })
                .collect(),
        }
    }
}

impl CocoDet {
    /// Parses a COCO results JSON document (a list of detections).
    pub fn from_json(text: &str) -> Result<Vec<Self>> {
        parse_json(text, Path::new("<COCO detections>"))
    }

    /// Reads a COCO results JSON file.
    pub fn load(path: &Path) -> Result<Vec<Self>> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        parse_json(&text, path)
    }

    /// Detections from per-image box lists; image `i` gets id `i`, as [`CocoGt::from_image_boxes`] numbers them.
    pub fn from_image_boxes(images: &[Vec<DetBox>], format: BoxFormat) -> Vec<Self> {
        images
            .iter()
            .enumerate()
            .flat_map(|(i, boxes)| {
                boxes.iter().map(move |b| CocoDet {
                    image_id: i as u64,
                    category_id: b.category_id,
                    bbox: format.to_xywh(b.bbox),
                    score: b.score,
                })
            })
            .collect()
    }
}

/// Evaluation of one category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryEval {
    /// Category id.
    pub id: u64,
    /// Category name.
    pub name: String,
    /// AP@[.5:.95] (area all, maxDets 100); `None` when the category has no non-crowd ground truth.
    pub ap: Option<f64>,
    /// AP@.5 (area all, maxDets 100); `None` when the category has no non-crowd ground truth.
    pub ap50: Option<f64>,
    /// Non-crowd ground-truth objects.
    pub num_gt: usize,
    /// Detections evaluated (at most 100 per image).
    pub num_det: usize,
    /// The interpolated precision-recall curve at IoU .5 (area all, maxDets 100): `(recall, precision)` at the
    /// 101 recall points; empty when the category has no non-crowd ground truth.
    pub pr_curve: Vec<(f64, f64)>,
}

/// The 12 numbers of pycocotools' `summarize()` (-1 where undefined, as there) and per-category results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoStats {
    /// AP @[IoU=.50:.95, area all, maxDets 100].
    pub ap: f64,
    /// AP @[IoU=.50].
    pub ap50: f64,
    /// AP @[IoU=.75].
    pub ap75: f64,
    /// AP of small objects (area < 32²).
    pub ap_small: f64,
    /// AP of medium objects (32² ≤ area < 96²).
    pub ap_medium: f64,
    /// AP of large objects (area ≥ 96²).
    pub ap_large: f64,
    /// AR with at most 1 detection per image.
    pub ar1: f64,
    /// AR with at most 10 detections per image.
    pub ar10: f64,
    /// AR with at most 100 detections per image.
    pub ar100: f64,
    /// AR of small objects.
    pub ar_small: f64,
    /// AR of medium objects.
    pub ar_medium: f64,
    /// AR of large objects.
    pub ar_large: f64,
    /// Per-category results, in ascending category id.
    pub per_category: Vec<CategoryEval>,
}

impl CocoStats {
    /// The 12 numbers in pycocotools' order: AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl.
    pub fn as_array(&self) -> [f64; 12] {
        [
            self.ap,
            self.ap50,
            self.ap75,
            self.ap_small,
            self.ap_medium,
            self.ap_large,
            self.ar1,
            self.ar10,
            self.ar100,
            self.ar_small,
            self.ar_medium,
            self.ar_large,
        ]
    }

    /// The 12 numbers as pycocotools prints them.
    pub fn summary(&self) -> String {
        const LINES: [(&str, &str, &str, usize); 12] = [
            ("Average Precision  (AP)", "0.50:0.95", "all", 100),
            ("Average Precision  (AP)", "0.50", "all", 100),
            ("Average Precision  (AP)", "0.75", "all", 100),
            ("Average Precision  (AP)", "0.50:0.95", "small", 100),
            ("Average Precision  (AP)", "0.50:0.95", "medium", 100),
            ("Average Precision  (AP)", "0.50:0.95", "large", 100),
            ("Average Recall     (AR)", "0.50:0.95", "all", 1),
            ("Average Recall     (AR)", "0.50:0.95", "all", 10),
            ("Average Recall     (AR)", "0.50:0.95", "all", 100),
            ("Average Recall     (AR)", "0.50:0.95", "small", 100),
            ("Average Recall     (AR)", "0.50:0.95", "medium", 100),
            ("Average Recall     (AR)", "0.50:0.95", "large", 100),
        ];
        LINES
            .iter()
            .zip(self.as_array())
            .map(|((title, iou, area, m), v)| {
                format!(" {title} @[ IoU={iou:<9} | area={area:>6} | maxDets={m:>3} ] = {v:.3}\n")
            })
            .collect()
    }
}

/// A ground-truth object prepared for one (image, category).
struct Gt {
    bbox: [f64; 4],
    area: f64,
    crowd: bool,
}

/// A detection prepared for one (image, category).
struct Dt {
    bbox: [f64; 4],
    area: f64,
    score: f64,
}

/// pycocotools' `evaluateImg` result for one (category, area range, image), maxDets 100.
struct EvalImg {
    /// Scores, highest first.
    scores: Vec<f64>,
    /// `[t][d]`: matched to some ground truth.
    matched: Vec<Vec<bool>>,
    /// `[t][d]`: ignored.
    ignored: Vec<Vec<bool>>,
    /// Ground truths ignored (crowd or outside the area range).
    gt_ignored: Vec<bool>,
}

/// `maskApi.c::bbIou`: IoU of each detection with each ground truth; for a crowd ground truth the union is the
/// detection's area.
fn box_ious(dts: &[Dt], gts: &[Gt]) -> Vec<Vec<f64>> {
    dts.iter()
        .map(|d| {
            let da = d.bbox[2] * d.bbox[3];
            gts.iter()
                .map(|g| {
                    let (db, gb) = (&d.bbox, &g.bbox);
                    let ga = gb[2] * gb[3];
                    let w = (db[2] + db[0]).min(gb[2] + gb[0]) - db[0].max(gb[0]);
                    if w <= 0.0 {
                        return 0.0;
                    }
                    let h = (db[3] + db[1]).min(gb[3] + gb[1]) - db[1].max(gb[1]);
                    if h <= 0.0 {
                        return 0.0;
                    }
                    let i = w * h;
                    let u = if g.crowd { da } else { da + ga - i };
                    i / u
                })
                .collect()
        })
        .collect()
}

/// `COCOeval.evaluateImg` for one area range; `dts` are sorted by score and cut to maxDets already, `ious` is
/// `[d][g]` in the original ground-truth order.
fn evaluate_img(gts: &[Gt], dts: &[Dt], ious: &[Vec<f64>], area: [f64; 2], thresholds: &[f64]) -> EvalImg {
    let out_of = |a: f64| a < area[0] || a > area[1];
    let ignore: Vec<bool> = gts.iter().map(|g| g.crowd || out_of(g.area)).collect();
    // Ground truth sorted ignore-last, stably.
    let mut order: Vec<usize> = (0..gts.len()).collect();
    order.sort_by_key(|&g| ignore[g]);
    let gt_ignored: Vec<bool> = order.iter().map(|&g| ignore[g]).collect();
    let crowd: Vec<bool> = order.iter().map(|&g| gts[g].crowd).collect();
    let nd = dts.len();
    let mut matched = vec![vec![false; nd]; thresholds.len()];
    let mut ignored = vec![vec![false; nd]; thresholds.len()];
    if !gts.is_empty() && nd > 0 {
        for (ti, &t) in thresholds.iter().enumerate() {
            let mut gt_taken = vec![false; gts.len()];
            for d in 0..nd {
                let mut best = t.min(1.0 - 1e-10);
                let mut m: Option<usize> = None;
                for (gi, &g) in order.iter().enumerate() {
                    if gt_taken[gi] && !crowd[gi] {
                        continue;
                    }
                    if let Some(mi) = m {
                        if !gt_ignored[mi] && gt_ignored[gi] {
                            break;
                        }
                    }
                    if ious[d][g] < best {
                        continue;
                    }
                    best = ious[d][g];
                    m = Some(gi);
                }
                if let Some(mi) = m {
                    ignored[ti][d] = gt_ignored[mi];
                    matched[ti][d] = true;
                    gt_taken[mi] = true;
                }
            }
        }
    }
    // Unmatched detections outside the area range are ignored.
    for (ti, row) in ignored.iter_mut().enumerate() {
        for (d, ig) in row.iter_mut().enumerate() {
            if !matched[ti][d] && out_of(dts[d].area) {
                *ig = true;
            }
        }
    }
    EvalImg {
        scores: dts.iter().map(|d| d.score).collect(),
        matched,
        ignored,
        gt_ignored,
    }
}

/// numpy's pairwise summation (`np.add.reduce` on a contiguous float64 array).
fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &v in a {
            res += v;
        }
        res
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - (n % 8) {
            for (acc, &v) in r.iter_mut().zip(&a[i..i + 8]) {
                *acc += v;
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += a[i];
            i += 1;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

/// `np.mean(s[s > -1])`, or `None` when nothing is defined.
fn mean_defined(values: impl Iterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = values.filter(|&x| x > -1.0).collect();
    (!v.is_empty()).then(|| pairwise_sum(&v) / v.len() as f64)
}

/// Sorts indices by descending score, keeping input order among equal scores (numpy's stable mergesort of -score).
fn by_score_desc(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap_or(std::cmp::Ordering::Equal));
    idx
}

fn check_finite(values: &[f64], what: impl Fn() -> String) -> Result<()> {
    if values.iter().any(|v| !v.is_finite()) {
        return Err(Error::Config(format!(
            "COCO evaluation: {} has a non-finite value",
            what()
        )));
    }
    Ok(())
}

/// pycocotools' `COCOeval(gt, dets, 'bbox')` then `evaluate()`, `accumulate()`, `summarize()`.
///
/// Images and categories are those listed in `gt`; annotations of other images or categories are left out, and
/// so are detections of unlisted categories. A detection on an image that `gt` does not list is an error (as
/// pycocotools' `loadRes` asserts), and so is a NaN score or a non-finite box value.
pub fn evaluate(gt: &CocoGt, dets: &[CocoDet]) -> Result<CocoStats> {
    let img_ids: Vec<u64> = gt
        .images
        .iter()
        .map(|i| i.id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let cat_ids: Vec<u64> = gt
        .categories
        .iter()
        .map(|c| c.id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let img_index: HashMap<u64, usize> = img_ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let cat_index: HashMap<u64, usize> = cat_ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let (ni, nk) = (img_ids.len(), cat_ids.len());

    let mut gts: Vec<Vec<Gt>> = (0..ni * nk).map(|_| Vec::new()).collect();
    for (n, a) in gt.annotations.iter().enumerate() {
        check_finite(&a.bbox, || format!("ground-truth annotation {n} (id {}) bbox", a.id))?;
        let area = a.area.unwrap_or(a.bbox[2] * a.bbox[3]);
        if area.is_nan() {
            return Err(Error::Config(format!(
                "COCO evaluation: ground-truth annotation {n} (id {}) has a NaN area",
                a.id
            )));
        }
        if let (Some(&i), Some(&k)) = (img_index.get(&a.image_id), cat_index.get(&a.category_id)) {
            gts[k * ni + i].push(Gt {
                bbox: a.bbox,
                area,
                crowd: a.iscrowd,
            });
        }
    }
    let mut dts: Vec<Vec<Dt>> = (0..ni * nk).map(|_| Vec::new()).collect();
    for (n, d) in dets.iter().enumerate() {
        let Some(&i) = img_index.get(&d.image_id) else {
            return Err(Error::Config(format!(
                "COCO evaluation: detection {n} is on image id {}, which the ground truth does not list",
                d.image_id
            )));
        };
        check_finite(&d.bbox, || format!("detection {n} bbox"))?;
        if d.score.is_nan() {
            return Err(Error::Config(format!("COCO evaluation: detection {n} has a NaN score")));
        }
        if let Some(&k) = cat_index.get(&d.category_id) {
            dts[k * ni + i].push(Dt {
                bbox: d.bbox,
                area: d.bbox[2] * d.bbox[3],
                score: d.score,
            });
        }
    }

    let thresholds = iou_thresholds();
    let rec_points = recall_points();
    let max_det = MAX_DETS[MAX_DETS.len() - 1];
    let (nt, nr, na, nm) = (NUM_IOU_THRESHOLDS, NUM_RECALL_POINTS, AREA_RANGES.len(), MAX_DETS.len());
    // precision[t][r][k][a][m] and recall[t][k][a][m], -1 where undefined.
    let mut precision = vec![-1.0f64; nt * nr * nk * na * nm];
    let mut recall = vec![-1.0f64; nt * nk * na * nm];
    let p_at = |t: usize, r: usize, k: usize, a: usize, m: usize| (((t * nr + r) * nk + k) * na + a) * nm + m;
    let r_at = |t: usize, k: usize, a: usize, m: usize| ((t * nk + k) * na + a) * nm + m;
    let mut num_gt = vec![0usize; nk];
    let mut num_det = vec![0usize; nk];

    for k in 0..nk {
        // evaluate(): per image, the detections sorted by score and cut to maxDets, their IoUs, then each area range.
        let mut per_area: Vec<Vec<EvalImg>> = (0..na).map(|_| Vec::new()).collect();
        for i in 0..ni {
            let g = &gts[k * ni + i];
            let all = &dts[k * ni + i];
            if g.is_empty() && all.is_empty() {
                continue;
            }
            let scores: Vec<f64> = all.iter().map(|d| d.score).collect();
            let d: Vec<Dt> = by_score_desc(&scores)
                .into_iter()
                .take(max_det)
                .map(|j| Dt {
                    bbox: all[j].bbox,
                    area: all[j].area,
                    score: all[j].score,
                })
                .collect();
            num_gt[k] += g.iter().filter(|g| !g.crowd).count();
            num_det[k] += d.len();
            let ious = box_ious(&d, g);
            for (a, range) in AREA_RANGES.iter().enumerate() {
                per_area[a].push(evaluate_img(g, &d, &ious, *range, &thresholds));
            }
        }
        // accumulate()
        for (a, evals) in per_area.iter().enumerate() {
            if evals.is_empty() {
                continue;
            }
            let npig = evals.iter().flat_map(|e| &e.gt_ignored).filter(|&&ig| !ig).count();
            if npig == 0 {
                continue;
            }
            for (m, &md) in MAX_DETS.iter().enumerate() {
                let scores: Vec<f64> = evals.iter().flat_map(|e| e.scores.iter().take(md).copied()).collect();
                let order = by_score_desc(&scores);
                let nd = order.len();
                for t in 0..nt {
                    let matched: Vec<bool> = evals
                        .iter()
                        .flat_map(|e| e.matched[t].iter().take(md).copied())
                        .collect();
                    let ignored: Vec<bool> = evals
                        .iter()
                        .flat_map(|e| e.ignored[t].iter().take(md).copied())
                        .collect();
                    let (mut tp, mut fp) = (0u64, 0u64);
                    let mut rc = Vec::with_capacity(nd);
                    let mut pr = Vec::with_capacity(nd);
                    for &j in &order {
                        if !ignored[j] {
                            if matched[j] {
                                tp += 1;
                            } else {
                                fp += 1;
                            }
                        }
                        let (tpf, fpf) = (tp as f64, fp as f64);
                        rc.push(tpf / npig as f64);
                        pr.push(tpf / (fpf + tpf + EPS));
                    }
                    recall[r_at(t, k, a, m)] = rc.last().copied().unwrap_or(0.0);
                    for i in (1..nd).rev() {
                        if pr[i] > pr[i - 1] {
                            pr[i - 1] = pr[i];
                        }
                    }
                    for (r, &thr) in rec_points.iter().enumerate() {
                        let pi = rc.partition_point(|&x| x < thr);
                        // Recall points past the last reached recall keep precision 0.
                        precision[p_at(t, r, k, a, m)] = pr.get(pi).copied().unwrap_or(0.0);
                    }
                }
            }
        }
    }

    // summarize()
    let (precision, recall) = (&precision, &recall);
    let m_last = nm - 1;
    let ap = |t: Option<usize>, a: usize| {
        let ts: Vec<usize> = t.map_or_else(|| (0..nt).collect(), |t| vec![t]);
        let vals = ts
            .into_iter()
            .flat_map(|t| (0..nr).flat_map(move |r| (0..nk).map(move |k| (t, r, k))))
            .map(|(t, r, k)| precision[p_at(t, r, k, a, m_last)]);
        mean_defined(vals).unwrap_or(-1.0)
    };
    let ar = |a: usize, m: usize| {
        let vals = (0..nt).flat_map(|t| (0..nk).map(move |k| recall[r_at(t, k, a, m)]));
        mean_defined(vals).unwrap_or(-1.0)
    };
    let t75 = thresholds.iter().position(|&t| t == 0.75).unwrap_or(5);
    let names: HashMap<u64, &str> = gt.categories.iter().map(|c| (c.id, c.name.as_str())).collect();
    let per_category = cat_ids
        .iter()
        .enumerate()
        .map(|(k, &id)| {
            let cat_ap = mean_defined(
                (0..nt)
                    .flat_map(|t| (0..nr).map(move |r| (t, r)))
                    .map(|(t, r)| precision[p_at(t, r, k, 0, m_last)]),
            );
            let ap50 = mean_defined((0..nr).map(|r| precision[p_at(0, r, k, 0, m_last)]));
            let pr_curve = if ap50.is_some() {
                (0..nr)
                    .map(|r| (rec_points[r], precision[p_at(0, r, k, 0, m_last)]))
                    .collect()
            } else {
                Vec::new()
            };
            CategoryEval {
                id,
                name: names.get(&id).copied().unwrap_or_default().to_string(),
                ap: cat_ap,
                ap50,
                num_gt: num_gt[k],
                num_det: num_det[k],
                pr_curve,
            }
        })
        .collect();
    Ok(CocoStats {
        ap: ap(None, 0),
        ap50: ap(Some(0), 0),
        ap75: ap(Some(t75), 0),
        ap_small: ap(None, 1),
        ap_medium: ap(None, 2),
        ap_large: ap(None, 3),
        ar1: ar(0, 0),
        ar10: ar(0, 1),
        ar100: ar(0, 2),
        ar_small: ar(1, 2),
        ar_medium: ar(2, 2),
        ar_large: ar(3, 2),
        per_category,
    })
}
