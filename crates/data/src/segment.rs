//! Semantic-segmentation datasets: images with per-pixel class masks.
//!
//! Layouts ([`open`]):
//! - a folder with `images/` and `masks/` whose files pair by stem (`images/a.jpg` ↔ `masks/a.png`);
//! - a `.csv` with `image,mask` columns (paths relative to the CSV, as [`crate::csv`] resolves them);
//! - [`open_train_val`]: a root with `train/` and `val/` (or `valid/`) of the folder layout; or one set and
//!   [`SegDataset::split`] (seeded).
//!
//! Masks are PNGs of class indices: 8/16-bit gray values, or palette indices (Pascal VOC's palette PNGs: the index
//! IS the class id); 255 is [`IGNORE`]. A [`ValueMap`] maps other encodings (Oxford-IIIT Pet trimaps
//! `1=pet,2=background,3=ignore`, colour-coded masks `#800000=road`) to classes. Class names come from
//! [`SegOptions::classes`], else `classes.txt` (one per line) in the set's folder or its parent, else the value
//! map's names in order of appearance.
//!
//! Outcomes: an image without a mask or a mask without an image is skipped and listed in [`SegDataset::skipped`];
//! no pair at all is [`DataError::Empty`]. When a mask is loaded, a size other than its image's, a value outside
//! the classes (not 255), or an RGB mask without a palette or value map is a [`DataError::Annotation`] naming the
//! file (and the value); an undecodable mask file is skipped or fatal per [`crate::DecodePolicy`], as an image.
//! Images are decoded as everywhere ([`crate::decode_image`]): gray images become three equal channels. Masks are
//! read without EXIF rotation: keep images and masks in the same orientation.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayImage, RgbImage};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::decode::SkippedFile;
use crate::error::{DataError, Result};
use crate::folder::has_image_extension;
use crate::loader::SampleSource;
use crate::target::{Annotated, TargetKind, IGNORE};

/// One image and its mask file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegSample {
    /// The image file.
    pub image: PathBuf,
    /// The mask file.
    pub mask: PathBuf,
}

/// What a raw mask value maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MapTarget {
    /// A class by name.
    Name(String),
    /// A class by index.
    Index(u8),
    /// [`IGNORE`].
    Ignore,
}

/// A raw mask value: a gray level / palette index, or an RGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Raw {
    Value(u16),
    Color([u8; 3]),
}

/// Raw mask values → class ids, parsed from `value=target,...`: a value is a gray level or palette index (`1`) or a
/// colour (`#800000`); a target is a class name, a class index or `ignore` (e.g. `1=pet,2=background,3=ignore`).
///
/// A mask value that the map does not list is an error naming the file and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueMap {
    entries: Vec<(Raw, MapTarget)>,
}

impl std::str::FromStr for ValueMap {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |message: String| DataError::InvalidOption {
            name: "value map",
            message,
        };
        let mut entries: Vec<(Raw, MapTarget)> = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, target) = item
                .split_once('=')
                .ok_or_else(|| bad(format!("`{item}` is not value=class (e.g. 1=pet,3=ignore)")))?;
            let (key, target) = (key.trim(), target.trim());
            let raw = if let Some(hex) = key.strip_prefix('#') {
                let v = u32::from_str_radix(hex, 16).ok().filter(|_| hex.len() == 6);
                let v = v.ok_or_else(|| bad(format!("`{key}` is not a #rrggbb colour")))?;
                Raw::Color([(v >> 16) as u8, (v >> 8) as u8, v as u8])
            } else {
                Raw::Value(
                    key.parse()
                        .map_err(|_| bad(format!("`{key}` is not a mask value (0-65535 or #rrggbb)")))?,
                )
            };
            let target = if target.eq_ignore_ascii_case("ignore") || target == "255" {
                MapTarget::Ignore
            } else if let Ok(i) = target.parse::<u8>() {
                MapTarget::Index(i)
            } else if target.is_empty() {
                return Err(bad(format!("`{item}` has no class")));
            } else {
                MapTarget::Name(target.to_string())
            };
            if entries.iter().any(|(r, _)| *r == raw) {
                return Err(bad(format!("value `{key}` is mapped twice")));
            }
            entries.push((raw, target));
        }
        if entries.is_empty() {
            return Err(bad("no entries".into()));
        }
        Ok(Self { entries })
    }
}

impl ValueMap {
    /// The class names the map mentions, in order of first appearance.
    pub fn class_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (_, t) in &self.entries {
            if let MapTarget::Name(n) = t {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
        }
        names
    }

    /// Raw value → class id (or [`IGNORE`]) against `classes`; errors on an unknown name or index.
    fn resolve(&self, classes: &[String]) -> Result<HashMap<Raw, u8>> {
        let bad = |message: String| DataError::InvalidOption {
            name: "value map",
            message,
        };
        self.entries
            .iter()
            .map(|(raw, t)| {
                let id = match t {
                    MapTarget::Ignore => IGNORE,
                    MapTarget::Index(i) if (*i as usize) < classes.len() => *i,
                    MapTarget::Index(i) => {
                        return Err(bad(format!(
                            "class index {i} is out of range ({} classes)",
                            classes.len()
                        )))
                    }
                    MapTarget::Name(n) => match classes.iter().position(|c| c == n) {
                        Some(i) => i as u8,
                        None => {
                            return Err(bad(format!(
                                "class `{n}` is not one of the classes ({})",
                                classes.join(",")
                            )))
                        }
                    },
                };
                Ok((*raw, id))
            })
            .collect()
    }
}

/// How to read a segmentation dataset's classes and masks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegOptions {
    /// Class names (index = mask value); `None` reads `classes.txt` (or takes the value map's names).
    pub classes: Option<Vec<String>>,
    /// How raw mask values map to classes; `None`: values are class ids, 255 is ignore.
    pub value_map: Option<ValueMap>,
}

/// A segmentation dataset: image/mask pairs and their class list.
#[derive(Debug, Clone, PartialEq)]
pub struct SegDataset {
    /// The pairs, sorted by image file name (CSV: file order).
    pub samples: Vec<SegSample>,
    /// Class names; a mask value indexes this list.
    pub classes: Vec<String>,
    /// Where the dataset came from (folder or CSV file).
    pub source: PathBuf,
    /// Images without a mask and masks without an image, left out.
    pub skipped: Vec<SkippedFile>,
    lookup: Lookup,
}

/// Resolved raw value → class id table.
#[derive(Debug, Clone, PartialEq)]
enum Lookup {
    /// Values are class ids below this count, or 255.
    Direct(usize),
    /// Through a value map.
    Mapped(HashMap<Raw, u8>),
}

fn read_classes_file(path: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let classes: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if classes.is_empty() {
        return Err(DataError::Annotation {
            path: path.to_path_buf(),
            line: None,
            message: "no class names".into(),
        });
    }
    if classes.len() > 255 {
        return Err(DataError::Annotation {
            path: path.to_path_buf(),
            line: None,
            message: format!("{} classes; masks hold at most 255 (255 = ignore)", classes.len()),
        });
    }
    Ok(classes)
}

/// Classes from the options, `classes.txt` in `dir` or its parent, or the value map.
fn resolve_classes(dir: &Path, opts: &SegOptions) -> Result<(Vec<String>, Lookup)> {
    let classes = if let Some(c) = &opts.classes {
        c.clone()
    } else if let Some(file) = [dir.join("classes.txt"), dir.join("../classes.txt")]
        .into_iter()
        .find(|p| p.is_file())
    {
        read_classes_file(&file)?
    } else {
        match opts.value_map.as_ref().map(ValueMap::class_names) {
            Some(names) if !names.is_empty() => names,
            _ => {
                return Err(DataError::Empty {
                    path: dir.to_path_buf(),
                    message: "no classes.txt here or in the parent folder (give the class names)".into(),
                })
            }
        }
    };
    if classes.is_empty() {
        return Err(DataError::InvalidOption {
            name: "classes",
            message: "no class names".into(),
        });
    }
    let lookup = match &opts.value_map {
        Some(map) => Lookup::Mapped(map.resolve(&classes)?),
        None => Lookup::Direct(classes.len()),
    };
    Ok((classes, lookup))
}

fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if path.is_file() && !hidden && has_image_extension(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Opens `images/` + `masks/` in `dir`, or a `.csv` with `image,mask` columns.
pub fn open(path: &Path, opts: &SegOptions) -> Result<SegDataset> {
    if !path.exists() {
        return Err(DataError::NotFound(path.to_path_buf()));
    }
    if path.is_file() {
        return open_csv(path, opts);
    }
    let (images_dir, masks_dir) = (path.join("images"), path.join("masks"));
    if !images_dir.is_dir() || !masks_dir.is_dir() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            message: "expected images/ and masks/ folders (or a .csv with image,mask columns)".into(),
        });
    }
    let (classes, lookup) = resolve_classes(path, opts)?;
    let mut masks: HashMap<String, PathBuf> = HashMap::new();
    for m in list_images(&masks_dir)? {
        if let Some(other) = masks.insert(stem(&m), m.clone()) {
            return Err(DataError::Annotation {
                path: m,
                line: None,
                message: format!("two masks for one stem (also {})", other.display()),
            });
        }
    }
    let (mut samples, mut skipped) = (Vec::new(), Vec::new());
    for image in list_images(&images_dir)? {
        match masks.remove(&stem(&image)) {
            Some(mask) => samples.push(SegSample { image, mask }),
            None => skipped.push(SkippedFile {
                path: image,
                reason: "no mask with this stem in masks/".into(),
            }),
        }
    }
    let mut orphans: Vec<PathBuf> = masks.into_values().collect();
    orphans.sort();
    skipped.extend(orphans.into_iter().map(|path| SkippedFile {
        path,
        reason: "no image with this stem in images/".into(),
    }));
    finish(path, samples, classes, lookup, skipped)
}

fn finish(
    source: &Path,
    samples: Vec<SegSample>,
    classes: Vec<String>,
    lookup: Lookup,
    skipped: Vec<SkippedFile>,
) -> Result<SegDataset> {
    if samples.is_empty() {
        return Err(DataError::Empty {
            path: source.to_path_buf(),
            message: format!("no image with a mask ({} files skipped)", skipped.len()),
        });
    }
    Ok(SegDataset {
        samples,
        classes,
        source: source.to_path_buf(),
        skipped,
        lookup,
    })
}

fn open_csv(csv_path: &Path, opts: &SegOptions) -> Result<SegDataset> {
    let csv_err = |line: Option<u64>, message: String| DataError::Csv {
        csv: csv_path.to_path_buf(),
        line,
        message,
    };
    let base = csv_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let (classes, lookup) = resolve_classes(&base, opts)?;
    let mut reader = ::csv::ReaderBuilder::new()
        .trim(::csv::Trim::All)
        .from_path(csv_path)
        .map_err(|e| csv_err(None, e.to_string()))?;
    let headers = reader.headers().map_err(|e| csv_err(Some(1), e.to_string()))?.clone();
    let column = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            csv_err(
                Some(1),
                format!("no `{name}` column in the header (expected image,mask)"),
            )
        })
    };
    let (image_col, mask_col) = (column("image")?, column("mask")?);
    let (mut samples, mut skipped) = (Vec::new(), Vec::new());
    for record in reader.records() {
        let record = record.map_err(|e| csv_err(e.position().map(|p| p.line()), e.to_string()))?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let (image, mask) = (record.get(image_col).unwrap_or(""), record.get(mask_col).unwrap_or(""));
        if image.is_empty() || mask.is_empty() {
            return Err(csv_err(Some(line), "empty image or mask path".into()));
        }
        for entry in [image, mask] {
            if crate::csv::escapes(entry) {
                return Err(DataError::PathEscapes {
                    csv: csv_path.to_path_buf(),
                    line,
                    entry: entry.to_string(),
                });
            }
        }
        let (image, mask) = (base.join(image), base.join(mask));
        if !image.is_file() {
            return Err(DataError::MissingFile {
                csv: csv_path.to_path_buf(),
                line,
                file: image,
            });
        }
        if !mask.is_file() {
            skipped.push(SkippedFile {
                path: image,
                reason: format!("mask {} (line {line}) does not exist", mask.display()),
            });
            continue;
        }
        samples.push(SegSample { image, mask });
    }
    finish(csv_path, samples, classes, lookup, skipped)
}

/// Opens `root/train` and `root/val` (or `root/valid`), each an `images/` + `masks/` folder; the validation set
/// must have the training classes.
pub fn open_train_val(root: &Path, opts: &SegOptions) -> Result<(SegDataset, SegDataset)> {
    let train = open(&root.join("train"), opts)?;
    let val_dir = ["val", "valid"]
        .iter()
        .map(|v| root.join(v))
        .find(|p| p.is_dir())
        .ok_or_else(|| DataError::NotFound(root.join("val")))?;
    let val = open(&val_dir, opts)?;
    if val.classes != train.classes {
        return Err(DataError::InvalidOption {
            name: "classes",
            message: format!(
                "{} has classes {} but {} has {}",
                val_dir.display(),
                val.classes.join(","),
                root.join("train").display(),
                train.classes.join(",")
            ),
        });
    }
    Ok((train, val))
}

/// The PNG palette of a palette-type (colour type 3) PNG, read from its chunks; `None` for other files.
fn png_palette(bytes: &[u8]) -> Option<Vec<[u8; 3]>> {
    if bytes.len() < 8 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" {
        return None;
    }
    let mut pos = 8;
    let mut indexed = false;
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().ok()?) as usize;
        let kind = &bytes[pos + 4..pos + 8];
        let body = bytes.get(pos + 8..pos + 8 + len)?;
        match kind {
            b"IHDR" => indexed = body.get(9) == Some(&3),
            b"PLTE" if indexed => return Some(body.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect()),
            b"IDAT" | b"IEND" => return None,
            _ => {}
        }
        pos += 12 + len;
    }
    None
}

/// A decoded mask before mapping.
enum RawMask {
    Values(GrayImageU16),
    Colors(RgbImage),
}

type GrayImageU16 = image::ImageBuffer<image::Luma<u16>, Vec<u16>>;

fn decode_raw_mask(path: &Path) -> std::result::Result<RawMask, String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    let img = image::load_from_memory(&bytes).map_err(|e| e.to_string())?;
    if let Some(palette) = png_palette(&bytes) {
        let mut index: HashMap<[u8; 3], u16> = HashMap::new();
        for (i, c) in palette.iter().enumerate() {
            index.entry(*c).or_insert(i as u16);
        }
        let rgb = img.to_rgb8();
        let (w, h) = rgb.dimensions();
        let mut values = Vec::with_capacity((w * h) as usize);
        for p in rgb.pixels() {
            values.push(*index.get(&p.0).ok_or("a pixel colour is not in the PNG palette")?);
        }
        return Ok(RawMask::Values(GrayImageU16::from_raw(w, h, values).expect("sized")));
    }
    Ok(match img {
        DynamicImage::ImageLuma8(_) | DynamicImage::ImageLumaA8(_) => {
            let l = img.to_luma8();
            let values = l.iter().map(|&v| v as u16).collect();
            RawMask::Values(GrayImageU16::from_raw(l.width(), l.height(), values).expect("sized"))
        }
        DynamicImage::ImageLuma16(_) | DynamicImage::ImageLumaA16(_) => RawMask::Values(img.to_luma16()),
        other => RawMask::Colors(other.to_rgb8()),
    })
}

impl SegDataset {
    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there is no pair.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Reads sample `index`'s mask as class ids: `Ok(Err(reason))` when the file cannot be decoded, `Err` when a
    /// value is not a class (naming the file and the value) or an RGB mask has no palette or value map.
    pub fn read_mask(&self, index: usize) -> Result<std::result::Result<GrayImage, String>> {
        let path = &self.samples[index].mask;
        let raw = match decode_raw_mask(path) {
            Ok(raw) => raw,
            Err(reason) => return Ok(Err(crate::text::one_line(&reason))),
        };
        let err = |message: String| DataError::Annotation {
            path: path.clone(),
            line: None,
            message,
        };
        let n = self.classes.len();
        let (w, h, ids) = match (raw, &self.lookup) {
            (RawMask::Values(v), Lookup::Direct(_)) => {
                let (w, h) = v.dimensions();
                let mut ids = Vec::with_capacity(v.len());
                for &x in v.iter() {
                    if x == IGNORE as u16 || (x as usize) < n {
                        ids.push(x as u8);
                    } else {
                        return Err(err(format!(
                            "mask value {x} is not a class ({n} classes: 0..={}, 255 = ignore)",
                            n - 1
                        )));
                    }
                }
                (w, h, ids)
            }
            (RawMask::Colors(_), Lookup::Direct(_)) => {
                return Err(err(
                    "RGB mask without a palette: give a value map (e.g. #800000=road) or save class indices".into(),
                ))
            }
            (raw, Lookup::Mapped(map)) => {
                let (w, h, keys): (u32, u32, Vec<Raw>) = match raw {
                    RawMask::Values(v) => (v.width(), v.height(), v.iter().map(|&x| Raw::Value(x)).collect()),
                    RawMask::Colors(c) => (c.width(), c.height(), c.pixels().map(|p| Raw::Color(p.0)).collect()),
                };
                let mut ids = Vec::with_capacity(keys.len());
                for key in keys {
                    let gray = match key {
                        Raw::Color([r, g, b]) if r == g && g == b => Some(Raw::Value(r as u16)),
                        _ => None,
                    };
                    match map.get(&key).or_else(|| gray.and_then(|g| map.get(&g))) {
                        Some(&id) => ids.push(id),
                        None => {
                            let shown = match key {
                                Raw::Value(v) => v.to_string(),
                                Raw::Color([r, g, b]) => format!("#{r:02x}{g:02x}{b:02x}"),
                            };
                            return Err(err(format!("mask value {shown} is not in the value map")));
                        }
                    }
                }
                (w, h, ids)
            }
        };
        Ok(Ok(GrayImage::from_raw(w, h, ids).expect("sized")))
    }

    /// Decodes every mask once and returns the first invalid one's error (undecodable files count as errors here):
    /// a check to run before training rather than meet mid-epoch.
    pub fn check_masks(&self) -> Result<()> {
        for (i, s) in self.samples.iter().enumerate() {
            if let Err(reason) = self.read_mask(i)? {
                return Err(DataError::Decode {
                    path: s.mask.clone(),
                    reason,
                });
            }
        }
        Ok(())
    }

    /// A seeded random split: `round(n × val_fraction)` pairs (at least 1, leaving at least 1) go to validation.
    pub fn split(&self, val_fraction: f64, seed: u64) -> Result<(SegDataset, SegDataset)> {
        if !(val_fraction > 0.0 && val_fraction < 1.0) {
            return Err(DataError::InvalidOption {
                name: "val_fraction",
                message: format!("{val_fraction} is not strictly between 0 and 1"),
            });
        }
        let n = self.samples.len();
        if n < 2 {
            return Err(DataError::Empty {
                path: self.source.clone(),
                message: format!("{n} pair(s) cannot be split"),
            });
        }
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        bytes[24..].copy_from_slice(b"segsplit");
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::from_seed(bytes));
        let n_val = ((n as f64 * val_fraction).round() as usize).clamp(1, n - 1);
        let (mut val, mut train) = (order[..n_val].to_vec(), order[n_val..].to_vec());
        val.sort_unstable();
        train.sort_unstable();
        let pick = |idx: &[usize], skipped: Vec<SkippedFile>| SegDataset {
            samples: idx.iter().map(|&i| self.samples[i].clone()).collect(),
            skipped,
            ..self.clone()
        };
        Ok((pick(&train, self.skipped.clone()), pick(&val, Vec::new())))
    }
}

impl SampleSource for SegDataset {
    fn num_samples(&self) -> usize {
        self.samples.len()
    }
    fn image_path(&self, index: usize) -> &Path {
        &self.samples[index].image
    }
    fn target_kind(&self) -> TargetKind {
        TargetKind::Masks
    }
    fn annotate(&self, index: usize, image: RgbImage) -> Result<std::result::Result<Annotated, String>> {
        let mask = match self.read_mask(index)? {
            Ok(m) => m,
            Err(reason) => return Ok(Err(format!("mask {}: {reason}", self.samples[index].mask.display()))),
        };
        if mask.dimensions() != image.dimensions() {
            return Err(DataError::Annotation {
                path: self.samples[index].mask.clone(),
                line: None,
                message: format!(
                    "mask is {}×{} but its image {} is {}×{} (width×height)",
                    mask.width(),
                    mask.height(),
                    self.samples[index].image.display(),
                    image.width(),
                    image.height()
                ),
            });
        }
        Ok(Ok(Annotated::new(image).with_mask(mask)))
    }
}
