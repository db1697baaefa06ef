//! Synthetic segmentation and detection sets made from real photos: scaled ant and bee crops, cut out with an
//! ellipse or a polygon, pasted onto other hymenoptera images at random places, so every pixel's class and every
//! object's box is known. Deterministic for a seed.

use std::path::{Path, PathBuf};

use image::{imageops::FilterType, GrayImage, Luma, RgbImage};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Class names of the synthetic sets: index 0 is the background (segmentation only), 1 ant, 2 bee.
pub const SEG_CLASSES: [&str; 3] = ["background", "ant", "bee"];

/// One pasted object: class (1 ant, 2 bee) and its box `[x0, y0, x1, y1]` in pixels (exclusive max).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pasted {
    /// 1 = ant, 2 = bee.
    pub class: u8,
    /// Tight box of the pasted pixels.
    pub bbox: [u32; 4],
}

/// One synthetic image with its per-pixel classes and its objects.
#[derive(Debug, Clone)]
pub struct Synth {
    /// The composite.
    pub image: RgbImage,
    /// Class per pixel (0 background, 1 ant, 2 bee).
    pub mask: GrayImage,
    /// The objects, in paste order (later ones may cover earlier ones; boxes are of the visible pixels).
    pub objects: Vec<Pasted>,
}

fn images_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("jpg")));
    v.sort();
    v
}

/// `n` composites of `size × size` from the hymenoptera `train` folder under `root`, with `objects.0 ..= objects.1`
/// objects each (30–45 % of the side, an ellipse or a hexagon cut-out, never overlapping; an object that finds no
/// free place in 30 tries is left out).
pub fn make(root: &Path, n: usize, size: u32, objects: (usize, usize), seed: u64) -> Vec<Synth> {
    let ants = images_in(&root.join("train/ants"));
    let bees = images_in(&root.join("train/bees"));
    assert!(
        !ants.is_empty() && !bees.is_empty(),
        "no hymenoptera images under {}",
        root.display()
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let load = |p: &PathBuf| image::open(p).expect("hymenoptera image decodes").to_rgb8();
    (0..n)
        .map(|_| {
            let bg_list = if rng.gen::<bool>() { &ants } else { &bees };
            let bg = load(bg_list.choose(&mut rng).unwrap());
            let mut image = image::imageops::resize(&bg, size, size, FilterType::Triangle);
            let mut mask = GrayImage::new(size, size);
            let k = rng.gen_range(objects.0..=objects.1);
            let mut placed: Vec<Pasted> = Vec::new();
            for _ in 0..k {
                let class: u8 = rng.gen_range(1..=2);
                let src = load(if class == 1 { &ants } else { &bees }.choose(&mut rng).unwrap());
                // The central 60 % of the photo holds the insect in most of the set.
                let (w, h) = src.dimensions();
                let crop = image::imageops::crop_imm(&src, w / 5, h / 5, w * 3 / 5, h * 3 / 5).to_image();
                let ow = (size as f32 * rng.gen_range(0.30..0.45)) as u32;
                let oh = (ow as f32 * rng.gen_range(0.75..1.25)).min(size as f32 * 0.6) as u32;
                // Objects do not overlap (so every box is fully visible): up to 30 tries, else the object is left out.
                let spot = (0..30).find_map(|_| {
                    let (x0, y0) = (rng.gen_range(0..=size - ow), rng.gen_range(0..=size - oh));
                    let free = placed
                        .iter()
                        .all(|p| x0 + ow <= p.bbox[0] || p.bbox[2] <= x0 || y0 + oh <= p.bbox[1] || p.bbox[3] <= y0);
                    free.then_some((x0, y0))
                });
                let Some((x0, y0)) = spot else { continue };
                let obj = image::imageops::resize(&crop, ow, oh, FilterType::Triangle);
                let hexagon = rng.gen::<bool>();
                let mut bbox = [u32::MAX, u32::MAX, 0, 0];
                for y in 0..oh {
                    for x in 0..ow {
                        // Normalised coordinates in [-1, 1].
                        let u = (x as f32 + 0.5) / ow as f32 * 2.0 - 1.0;
                        let v = (y as f32 + 0.5) / oh as f32 * 2.0 - 1.0;
                        let inside = if hexagon {
                            u.abs() <= 1.0 && v.abs() <= 0.866 && (u.abs() * 0.866 + v.abs() * 0.5) <= 0.866
                        } else {
                            u * u + v * v <= 1.0
                        };
                        if inside {
                            let (px, py) = (x0 + x, y0 + y);
                            image.put_pixel(px, py, *obj.get_pixel(x, y));
                            mask.put_pixel(px, py, Luma([class]));
                            bbox = [
                                bbox[0].min(px),
                                bbox[1].min(py),
                                bbox[2].max(px + 1),
                                bbox[3].max(py + 1),
                            ];
                        }
                    }
                }
                placed.push(Pasted { class, bbox });
            }
            let objects = placed;
            Synth { image, mask, objects }
        })
        .collect()
}

fn save_png_gray(mask: &GrayImage, path: &Path) {
    mask.save(path)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Write `set` as a segmentation folder: `images/NNN.png`, `masks/NNN.png` (class indices), `classes.txt`.
pub fn write_segmentation(dir: &Path, set: &[Synth]) {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::create_dir_all(dir.join("masks")).unwrap();
    for (i, s) in set.iter().enumerate() {
        s.image.save(dir.join(format!("images/{i:03}.png"))).unwrap();
        save_png_gray(&s.mask, &dir.join(format!("masks/{i:03}.png")));
    }
    std::fs::write(dir.join("classes.txt"), SEG_CLASSES.join("\n") + "\n").unwrap();
}

/// Write train and val sets in the YOLO layout: `images/{train,val}/NNN.jpg`, `labels/{train,val}/NNN.txt`
/// (`class cx cy w h`, normalised; class 0 ant, 1 bee; an image without objects gets an empty label file or none),
/// `data.yaml` with `names`.
pub fn write_yolo(dir: &Path, train: &[Synth], val: &[Synth]) {
    for (split, set) in [("train", train), ("val", val)] {
        std::fs::create_dir_all(dir.join(format!("images/{split}"))).unwrap();
        std::fs::create_dir_all(dir.join(format!("labels/{split}"))).unwrap();
        for (i, s) in set.iter().enumerate() {
            s.image.save(dir.join(format!("images/{split}/{i:03}.jpg"))).unwrap();
            let (w, h) = (s.image.width() as f32, s.image.height() as f32);
            let lines: Vec<String> = s
                .objects
                .iter()
                .map(|o| {
                    let [x0, y0, x1, y1] = o.bbox.map(|v| v as f32);
                    format!(
                        "{} {:.6} {:.6} {:.6} {:.6}",
                        o.class - 1,
                        (x0 + x1) / 2.0 / w,
                        (y0 + y1) / 2.0 / h,
                        (x1 - x0) / w,
                        (y1 - y0) / h
                    )
                })
                .collect();
            // Background images: every other one has an empty file, the rest none.
            if !lines.is_empty() || i % 2 == 0 {
                std::fs::write(dir.join(format!("labels/{split}/{i:03}.txt")), lines.join("\n")).unwrap();
            }
        }
    }
    std::fs::write(
        dir.join("data.yaml"),
        "path: .\ntrain: images/train\nval: images/val\nnames:\n  0: ant\n  1: bee\n",
    )
    .unwrap();
}

/// Write `set` as a COCO export (Roboflow's layout): the JPEGs and `_annotations.coco.json` in `dir`, with
/// category ids 1 (`ant`) and 3 (`bee`) (non-contiguous on purpose) and boxes `[x, y, w, h]` in pixels.
pub fn write_coco(dir: &Path, set: &[Synth]) {
    std::fs::create_dir_all(dir).unwrap();
    let (mut images, mut annotations) = (Vec::new(), Vec::new());
    for (i, s) in set.iter().enumerate() {
        let file = format!("{i:03}.jpg");
        s.image.save(dir.join(&file)).unwrap();
        images.push(
            serde_json::json!({"id": i, "file_name": file, "width": s.image.width(), "height": s.image.height()}),
        );
        for o in &s.objects {
            let [x0, y0, x1, y1] = o.bbox;
            annotations.push(serde_json::json!({
                "id": annotations.len() + 1, "image_id": i, "category_id": if o.class == 1 { 1 } else { 3 },
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0, "segmentation": []
            }));
        }
    }
    let doc = serde_json::json!({
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "ant", "supercategory": "insect"}, {"id": 3, "name": "bee", "supercategory": "insect"}],
    });
    std::fs::write(
        dir.join("_annotations.coco.json"),
        serde_json::to_vec_pretty(&doc).unwrap(),
    )
    .unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composites_have_consistent_masks_boxes_and_layouts() {
        let Some(root) = crate::assets::require("data/hymenoptera") else {
            return;
        };
        let set = make(&root, 6, 160, (0, 4), 7);
        assert_eq!(set.len(), 6);
        assert_eq!(make(&root, 6, 160, (0, 4), 7)[3].mask, set[3].mask, "not deterministic");
        let mut total = 0;
        for s in &set {
            assert_eq!(s.image.dimensions(), (160, 160));
            assert!(s.mask.pixels().all(|p| p[0] <= 2));
            for o in &s.objects {
                let [x0, y0, x1, y1] = o.bbox;
                assert!(x0 < x1 && y0 < y1 && x1 <= 160 && y1 <= 160);
                // The box is tight: its border rows and columns hold pixels of the object's class.
                let has = |x: u32, y: u32| s.mask.get_pixel(x, y)[0] == o.class;
                assert!((x0..x1).any(|x| has(x, y0)) && (x0..x1).any(|x| has(x, y1 - 1)));
                assert!((y0..y1).any(|y| has(x0, y)) && (y0..y1).any(|y| has(x1 - 1, y)));
            }
            // Every object pixel lies inside a box of its class (boxes do not overlap).
            for (x, y, p) in s.mask.enumerate_pixels() {
                if p[0] > 0 {
                    assert!(s.objects.iter().any(|o| o.class == p[0]
                        && x >= o.bbox[0]
                        && x < o.bbox[2]
                        && y >= o.bbox[1]
                        && y < o.bbox[3]));
                }
            }
            total += s.objects.len();
        }
        assert!(total > 0);
        let dir = std::env::temp_dir().join(format!("graft-synth-{}", std::process::id()));
        write_segmentation(&dir.join("seg"), &set);
        write_yolo(&dir.join("yolo"), &set[..4], &set[4..]);
        write_coco(&dir.join("coco"), &set);
        assert_eq!(std::fs::read_dir(dir.join("seg/masks")).unwrap().count(), 6);
        assert!(dir.join("yolo/data.yaml").exists());
        let coco: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("coco/_annotations.coco.json")).unwrap()).unwrap();
        assert_eq!(coco["annotations"].as_array().unwrap().len(), total);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
