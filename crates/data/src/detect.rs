//! Object-detection datasets: images with class-labelled boxes, from YOLO folders or COCO JSON.
//!
//! - [`open_yolo`]: Ultralytics' layout, `images/<split>/*.jpg` and `labels/<split>/*.txt` (one `class cx cy w h`
//!   line per box, normalised to [0, 1]; a polygon line `class x1 y1 x2 y2 ...` counts as its enclosing box), class
//!   names from `data.yaml` (`names` as a list or a `{0: name}` map; optional `path`, `<split>` folders, `nc`).
//! - [`open_coco`]: COCO JSON (`images`, `annotations` with `bbox` = x, y, w, h in pixels, `categories`). Categories
//!   become contiguous class indices in id order; their ids stay in [`DetDataset::category_ids`] for export. A
//!   category that no box uses AND that is the `supercategory` of another category is dropped (Roboflow exports
//!   list the supercategory, e.g. `pieces`, as category 0); every other category is kept, used or not, so that
//!   splits of one export share class indices. `iscrowd` is kept on the box.
//!
//! Outcomes: an image without a label file, or with an empty one, or without annotations is a background image
//! (counted in [`LabelIssues::background`]). A box partly outside the image is clipped and counted; a box with zero
//! or negative size (or none left after clipping) is skipped and counted; each such case is listed in
//! [`LabelIssues::notes`] with its file and line (YOLO) or annotation id (COCO). A class id not in `names`, a
//! malformed line, an unknown category or an annotation pointing at a missing image is a [`DataError::Annotation`]
//! naming the file and line (or annotation). No image at all is [`DataError::Empty`].

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::Deserialize;

use crate::decode::{image_hw, SkippedFile};
use crate::error::{DataError, Result};
use crate::folder::has_image_extension;
use crate::loader::SampleSource;
use crate::target::{Annotated, BoxFilter, BoxTarget, TargetKind};
use crate::yaml::{self, Value};

/// One image and its boxes.
#[derive(Debug, Clone, PartialEq)]
pub struct DetSample {
    /// The image file.
    pub image: PathBuf,
    /// The image's `(height, width)` as decoded (the boxes' frame).
    pub hw: (usize, usize),
    /// Boxes in pixel `xyxy`, clipped to the image; empty for a background image.
    pub boxes: Vec<BoxTarget>,
    /// COCO's image id (`None` for YOLO).
    pub image_id: Option<i64>,
}

/// Label problems that were repaired or skipped (never silently).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelIssues {
    /// Boxes partly outside their image, clipped to it.
    pub clipped: usize,
    /// Boxes with zero or negative size, or entirely outside the image, skipped.
    pub degenerate: usize,
    /// Images without any box.
    pub background: usize,
    /// One entry per clipped or skipped box: the label file (or COCO JSON) and the line (or annotation id).
    pub notes: Vec<SkippedFile>,
}

/// A detection dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct DetDataset {
    /// The images, sorted by file name (YOLO) or in JSON order (COCO).
    pub samples: Vec<DetSample>,
    /// Class names; a box's class indexes this list.
    pub classes: Vec<String>,
    /// The source's id of each class (COCO category ids; YOLO: 0, 1, ...), for exporting predictions.
    pub category_ids: Vec<i64>,
    /// Where the dataset came from (data.yaml or the COCO JSON).
    pub source: PathBuf,
    /// Clipped and skipped boxes, background images.
    pub issues: LabelIssues,
    /// When augmentation drops a box it moved (set on every loaded sample).
    pub box_filter: BoxFilter,
}

impl DetDataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there is no image.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Number of boxes over all images.
    pub fn num_boxes(&self) -> usize {
        self.samples.iter().map(|s| s.boxes.len()).sum()
    }

    /// Boxes per class, indexed like `classes`.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for b in self.samples.iter().flat_map(|s| &s.boxes) {
            counts[b.class as usize] += 1;
        }
        counts
    }
}

impl SampleSource for DetDataset {
    fn num_samples(&self) -> usize {
        self.samples.len()
    }
    fn image_path(&self, index: usize) -> &Path {
        &self.samples[index].image
    }
    fn target_kind(&self) -> TargetKind {
        TargetKind::Boxes
    }
    fn annotate(&self, index: usize, image: RgbImage) -> Result<std::result::Result<Annotated, String>> {
        let s = &self.samples[index];
        let hw = (image.height() as usize, image.width() as usize);
        if hw != s.hw {
            return Err(DataError::Annotation {
                path: s.image.clone(),
                line: None,
                message: format!(
                    "image decodes to {}×{} (h×w) but its boxes are for {}×{}",
                    hw.0, hw.1, s.hw.0, s.hw.1
                ),
            });
        }
        let mut a = Annotated::new(image).with_boxes(s.boxes.clone());
        a.box_filter = self.box_filter;
        Ok(Ok(a))
    }
}

/// Clips `xyxy` to a `w × h` image: `Some((box, clipped))`, `None` when nothing is left.
fn clip(xyxy: [f64; 4], w: f64, h: f64) -> Option<([f32; 4], bool)> {
    let c = [
        xyxy[0].clamp(0.0, w),
        xyxy[1].clamp(0.0, h),
        xyxy[2].clamp(0.0, w),
        xyxy[3].clamp(0.0, h),
    ];
    if c[2] <= c[0] || c[3] <= c[1] {
        return None;
    }
    // Sub-pixel rounding of normalised coordinates is not worth reporting.
    let clipped = xyxy.iter().zip(&c).any(|(a, b)| (a - b).abs() > 0.01);
    Some((c.map(|v| v as f32), clipped))
}

fn annotation_err(path: &Path, line: Option<u64>, message: String) -> DataError {
    DataError::Annotation {
        path: path.to_path_buf(),
        line,
        message,
    }
}

/// Finds `data.yaml` (or `dataset.yaml`, `data.yml`) when `root` is a folder.
fn find_yaml(root: &Path) -> Result<PathBuf> {
    if root.is_file() {
        return Ok(root.to_path_buf());
    }
    if !root.exists() {
        return Err(DataError::NotFound(root.to_path_buf()));
    }
    ["data.yaml", "dataset.yaml", "data.yml"]
        .iter()
        .map(|n| root.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| DataError::Empty {
            path: root.to_path_buf(),
            message: "no data.yaml (YOLO layout: data.yaml, images/<split>, labels/<split>)".into(),
        })
}

/// Class names from `data.yaml`'s `names` (list or `{index: name}` map with indices 0..n-1), checked against `nc`.
fn yolo_names(yaml_path: &Path, entries: &[yaml::Entry]) -> Result<Vec<String>> {
    let err = |line, message: String| annotation_err(yaml_path, Some(line), message);
    let Some((_, names, line)) = entries.iter().find(|(k, ..)| k == "names") else {
        return Err(annotation_err(yaml_path, None, "no `names` entry".into()));
    };
    let names = match names {
        Value::List(l) => l.clone(),
        Value::Map(m) => {
            let mut by_index: Vec<(usize, String)> = Vec::new();
            for (k, v) in m {
                let i = k
                    .parse()
                    .map_err(|_| err(*line, format!("`names` key `{k}` is not a class index")))?;
                by_index.push((i, v.clone()));
            }
            by_index.sort();
            if by_index.iter().enumerate().any(|(pos, (i, _))| pos != *i) {
                return Err(err(*line, "`names` indices must be 0, 1, ... without gaps".into()));
            }
            by_index.into_iter().map(|(_, v)| v).collect()
        }
        Value::Scalar(_) => return Err(err(*line, "`names` must be a list or a map".into())),
    };
    if names.is_empty() {
        return Err(err(*line, "`names` is empty".into()));
    }
    if let Some((_, Value::Scalar(nc), nc_line)) = entries.iter().find(|(k, ..)| k == "nc") {
        if nc.parse::<usize>().ok() != Some(names.len()) {
            return Err(err(*nc_line, format!("nc is {nc} but `names` has {}", names.len())));
        }
    }
    Ok(names)
}

/// Ultralytics' label path: the last `images` component of the image folder becomes `labels`.
fn labels_dir(images: &Path) -> PathBuf {
    let comps: Vec<_> = images.components().collect();
    match comps.iter().rposition(|c| c.as_os_str() == "images") {
        Some(pos) => comps
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == pos {
                    std::ffi::OsStr::new("labels")
                } else {
                    c.as_os_str()
                }
            })
            .collect(),
        None => images.join("labels"),
    }
}

/// Opens the `split` (e.g. `train`, `val`) of a YOLO dataset; `root` is its folder or its `data.yaml`.
pub fn open_yolo(root: &Path, split: &str) -> Result<DetDataset> {
    let yaml_path = find_yaml(root)?;
    let text = fs::read_to_string(&yaml_path).map_err(|source| DataError::Io {
        path: yaml_path.clone(),
        source,
    })?;
    let entries = yaml::parse(&text).map_err(|(line, m)| annotation_err(&yaml_path, Some(line), m))?;
    let names = yolo_names(&yaml_path, &entries)?;
    let scalar = |key: &str| {
        entries.iter().find_map(|(k, v, _)| match v {
            Value::Scalar(s) if k == key && !s.is_empty() => Some(s.clone()),
            _ => None,
        })
    };
    let yaml_dir = yaml_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = match scalar("path") {
        Some(p) if Path::new(&p).is_absolute() => PathBuf::from(p),
        Some(p) if yaml_dir.join(&p).is_dir() => yaml_dir.join(p),
        _ => yaml_dir.clone(),
    };
    let images_dir = base.join(scalar(split).unwrap_or_else(|| format!("images/{split}")));
    if !images_dir.is_dir() {
        return Err(DataError::Empty {
            path: images_dir,
            message: format!("split `{split}`: no such image folder"),
        });
    }
    let labels = labels_dir(&images_dir);
    let mut files: Vec<PathBuf> = fs::read_dir(&images_dir)
        .map_err(|source| DataError::Io {
            path: images_dir.clone(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && has_image_extension(p))
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    files.sort();
    let mut issues = LabelIssues::default();
    let mut samples = Vec::with_capacity(files.len());
    for image in files {
        let hw = image_hw(&image)?;
        let stem = image.file_stem().unwrap_or_default();
        let label_file = labels.join(stem).with_extension("txt");
        let boxes = if label_file.is_file() {
            read_yolo_labels(&label_file, hw, names.len(), &mut issues)?
        } else {
            Vec::new()
        };
        if boxes.is_empty() {
            issues.background += 1;
        }
        samples.push(DetSample {
            image,
            hw,
            boxes,
            image_id: None,
        });
    }
    if samples.is_empty() {
        return Err(DataError::Empty {
            path: images_dir,
            message: "no image files".into(),
        });
    }
    Ok(DetDataset {
        samples,
        category_ids: (0..names.len() as i64).collect(),
        classes: names,
        source: yaml_path,
        issues,
        box_filter: BoxFilter::default(),
    })
}

/// Reads one YOLO label file for an image of `hw`.
fn read_yolo_labels(
    path: &Path,
    hw: (usize, usize),
    num_classes: usize,
    issues: &mut LabelIssues,
) -> Result<Vec<BoxTarget>> {
    let text = fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (h, w) = (hw.0 as f64, hw.1 as f64);
    let mut boxes = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let no = i as u64 + 1;
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let err = |m: String| annotation_err(path, Some(no), m);
        let malformed = || {
            err(format!(
                "expected `class cx cy w h` (normalised), got `{}`",
                line.trim()
            ))
        };
        if fields.len() < 5 || (fields.len() > 5 && fields.len() % 2 == 0) {
            return Err(malformed());
        }
        let class: usize = fields[0].parse().map_err(|_| malformed())?;
        if class >= num_classes {
            return Err(err(format!(
                "class {class} is not in names ({num_classes} classes: 0..={})",
                num_classes - 1
            )));
        }
        let nums: Vec<f64> = fields[1..]
            .iter()
            .map(|f| f.parse::<f64>().ok().filter(|v| v.is_finite()))
            .collect::<Option<_>>()
            .ok_or_else(malformed)?;
        let xyxy = if nums.len() == 4 {
            let [cx, cy, bw, bh] = [nums[0], nums[1], nums[2], nums[3]];
            if bw <= 0.0 || bh <= 0.0 {
                issues.degenerate += 1;
                issues.notes.push(SkippedFile {
                    path: path.to_path_buf(),
                    reason: format!("line {no}: box of zero or negative size skipped"),
                });
                continue;
            }
            [
                (cx - bw / 2.0) * w,
                (cy - bh / 2.0) * h,
                (cx + bw / 2.0) * w,
                (cy + bh / 2.0) * h,
            ]
        } else {
            let xs = nums.iter().step_by(2).map(|x| x * w);
            let ys = nums.iter().skip(1).step_by(2).map(|y| y * h);
            let fold =
                |it: &mut dyn Iterator<Item = f64>| it.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
            let ((x0, x1), (y0, y1)) = (fold(&mut xs.into_iter()), fold(&mut ys.into_iter()));
            [x0, y0, x1, y1]
        };
        push_clipped(
            &mut boxes,
            xyxy,
            w,
            h,
            class as u32,
            false,
            issues,
            path,
            &format!("line {no}"),
        );
    }
    Ok(boxes)
}

/// Clips and keeps a box, recording what happened.
#[allow(clippy::too_many_arguments)]
fn push_clipped(
    boxes: &mut Vec<BoxTarget>,
    xyxy: [f64; 4],
    w: f64,
    h: f64,
    class: u32,
    iscrowd: bool,
    issues: &mut LabelIssues,
    path: &Path,
    at: &str,
) {
    let note = |reason: String| SkippedFile {
        path: path.to_path_buf(),
        reason: format!("{at}: {reason}"),
    };
    match clip(xyxy, w, h) {
        None => {
            issues.degenerate += 1;
            issues
                .notes
                .push(note("box has no area inside the image, skipped".into()));
        }
        Some((b, clipped)) => {
            if clipped {
                issues.clipped += 1;
                issues.notes.push(note("box partly outside the image, clipped".into()));
            }
            boxes.push(BoxTarget {
                xyxy: b,
                class,
                iscrowd,
            });
        }
    }
}

#[derive(Deserialize)]
struct CocoFile {
    images: Vec<CocoImage>,
    #[serde(default)]
    annotations: Vec<CocoAnnotation>,
    categories: Vec<CocoCategory>,
}

#[derive(Deserialize)]
struct CocoImage {
    id: i64,
    file_name: String,
    width: Option<usize>,
    height: Option<usize>,
}

#[derive(Deserialize)]
struct CocoAnnotation {
    id: Option<i64>,
    image_id: i64,
    category_id: i64,
    bbox: Vec<f64>,
    #[serde(default)]
    iscrowd: serde_json::Value,
}

#[derive(Deserialize)]
struct CocoCategory {
    id: i64,
    name: String,
    #[serde(default)]
    supercategory: Option<String>,
}

/// Opens a COCO JSON file; image `file_name`s are relative to `images` (default: the JSON's folder, as Roboflow
/// exports them).
pub fn open_coco(json: &Path, images: Option<&Path>) -> Result<DetDataset> {
    if !json.is_file() {
        return Err(DataError::NotFound(json.to_path_buf()));
    }
    let text = fs::read_to_string(json).map_err(|source| DataError::Io {
        path: json.to_path_buf(),
        source,
    })?;
    let coco: CocoFile = serde_json::from_str(&text)
        .map_err(|e| annotation_err(json, Some(e.line() as u64), format!("not COCO JSON: {e}")))?;
    let err = |m: String| annotation_err(json, None, m);
    let image_dir = images
        .map(Path::to_path_buf)
        .unwrap_or_else(|| json.parent().map(Path::to_path_buf).unwrap_or_default());

    // Categories → contiguous classes in id order, minus unused supercategories.
    let mut cats: Vec<&CocoCategory> = coco.categories.iter().collect();
    cats.sort_by_key(|c| c.id);
    if let Some(pair) = cats.windows(2).find(|p| p[0].id == p[1].id) {
        return Err(err(format!("category id {} appears twice", pair[0].id)));
    }
    let used: BTreeSet<i64> = coco.annotations.iter().map(|a| a.category_id).collect();
    let supers: BTreeSet<&str> = cats
        .iter()
        .filter_map(|c| c.supercategory.as_deref().filter(|s| *s != c.name))
        .collect();
    cats.retain(|c| used.contains(&c.id) || !supers.contains(c.name.as_str()));
    if cats.is_empty() {
        return Err(err("no categories".into()));
    }
    let class_of: HashMap<i64, u32> = cats.iter().enumerate().map(|(i, c)| (c.id, i as u32)).collect();

    let mut samples = Vec::with_capacity(coco.images.len());
    let mut by_id: HashMap<i64, usize> = HashMap::new();
    for img in &coco.images {
        if crate::csv::escapes(&img.file_name) {
            return Err(err(format!(
                "image id {}: file_name `{}` escapes the image folder",
                img.id, img.file_name
            )));
        }
        let path = image_dir.join(&img.file_name);
        if !path.is_file() {
            return Err(err(format!(
                "image id {}: file {} does not exist",
                img.id,
                path.display()
            )));
        }
        let hw = match (img.height, img.width) {
            (Some(h), Some(w)) if h > 0 && w > 0 => (h, w),
            _ => image_hw(&path)?,
        };
        if by_id.insert(img.id, samples.len()).is_some() {
            return Err(err(format!("image id {} appears twice", img.id)));
        }
        samples.push(DetSample {
            image: path,
            hw,
            boxes: Vec::new(),
            image_id: Some(img.id),
        });
    }
    let mut issues = LabelIssues::default();
    for (n, a) in coco.annotations.iter().enumerate() {
        let at = match a.id {
            Some(id) => format!("annotation id {id}"),
            None => format!("annotation #{n}"),
        };
        let Some(&si) = by_id.get(&a.image_id) else {
            return Err(err(format!(
                "{at} points at image id {}, which is not in images",
                a.image_id
            )));
        };
        let Some(&class) = class_of.get(&a.category_id) else {
            return Err(err(format!("{at}: category id {} is not in categories", a.category_id)));
        };
        let &[x, y, bw, bh] = a.bbox.as_slice() else {
            return Err(err(format!("{at}: bbox must be [x, y, width, height]")));
        };
        let finite = [x, y].iter().all(|v| v.is_finite());
        if !(bw > 0.0 && bh > 0.0 && finite) {
            issues.degenerate += 1;
            issues.notes.push(SkippedFile {
                path: json.to_path_buf(),
                reason: format!("{at}: box of zero or negative size skipped"),
            });
            continue;
        }
        let crowd = match &a.iscrowd {
            serde_json::Value::Bool(b) => *b,
            serde_json::Value::Number(v) => v.as_f64().is_some_and(|v| v != 0.0),
            _ => false,
        };
        let s = &mut samples[si];
        let (h, w) = (s.hw.0 as f64, s.hw.1 as f64);
        let at = format!("{at} ({})", s.image.file_name().unwrap_or_default().to_string_lossy());
        push_clipped(
            &mut s.boxes,
            [x, y, x + bw, y + bh],
            w,
            h,
            class,
            crowd,
            &mut issues,
            json,
            &at,
        );
    }
    issues.background = samples.iter().filter(|s| s.boxes.is_empty()).count();
    if samples.is_empty() {
        return Err(DataError::Empty {
            path: json.to_path_buf(),
            message: "no images".into(),
        });
    }
    Ok(DetDataset {
        samples,
        classes: cats.iter().map(|c| c.name.clone()).collect(),
        category_ids: cats.iter().map(|c| c.id).collect(),
        source: json.to_path_buf(),
        issues,
        box_filter: BoxFilter::default(),
    })
}
