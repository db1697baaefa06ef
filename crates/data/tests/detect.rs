//! Detection datasets: YOLO and COCO layouts, bad labels, box batches, and the real chess COCO export.

mod common;

use std::fs;
use std::path::Path;

use candle_core::Device;
use data::detect::{open_coco, open_yolo};
use data::transforms::{Letterbox, Pipeline, RandomHorizontalFlip};
use data::{DataError, Loader, LoaderConfig, Targets};

fn yolo_root(dir: &Path, names: &str) {
    for (split, n) in [("train", 3), ("val", 1)] {
        for i in 0..n {
            common::write_image(&dir.join(format!("images/{split}/{i}.jpg")), 100, 50, i as u8);
        }
    }
    fs::write(
        dir.join("data.yaml"),
        format!("path: .\ntrain: images/train\nval: images/val\n{names}"),
    )
    .unwrap();
    fs::create_dir_all(dir.join("labels/train")).unwrap();
    // 0: two boxes, one partly outside (clipped) and one of zero size (skipped); 1: empty file; 2: no file.
    fs::write(
        dir.join("labels/train/0.txt"),
        "1 0.5 0.5 0.2 0.4\n0 0.95 0.5 0.2 0.2\n\n1 0.3 0.3 0 0.1\n",
    )
    .unwrap();
    fs::write(dir.join("labels/train/1.txt"), "").unwrap();
}

#[test]
fn yolo_layout_reads_boxes_in_pixels() {
    let dir = tempfile::tempdir().unwrap();
    yolo_root(dir.path(), "names:\n  0: cat\n  1: dog\n");
    let ds = open_yolo(dir.path(), "train").unwrap();
    assert_eq!(ds.classes, vec!["cat", "dog"]);
    assert_eq!(ds.category_ids, vec![0, 1]);
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.samples[0].hw, (50, 100));
    let b = &ds.samples[0].boxes;
    assert_eq!(b.len(), 2);
    assert_eq!((b[0].class, b[0].xyxy), (1, [40.0, 15.0, 60.0, 35.0]));
    assert_eq!(b[1].xyxy, [85.0, 20.0, 100.0, 30.0], "clipped to the image");
    assert_eq!(
        (ds.issues.clipped, ds.issues.degenerate, ds.issues.background),
        (1, 1, 2)
    );
    assert!(ds
        .issues
        .notes
        .iter()
        .any(|n| n.reason.starts_with("line 2:") && n.path.ends_with("0.txt")));
    assert!(ds.issues.notes.iter().any(|n| n.reason.starts_with("line 4:")));
    assert_eq!(open_yolo(&dir.path().join("data.yaml"), "val").unwrap().len(), 1);
    // The list form of `names` and a matching `nc`.
    fs::write(
        dir.path().join("data.yaml"),
        "train: images/train\nnc: 2\nnames: ['cat', 'dog']\n",
    )
    .unwrap();
    assert_eq!(open_yolo(dir.path(), "train").unwrap().num_boxes(), 2);
    fs::write(
        dir.path().join("data.yaml"),
        "train: images/train\nnc: 3\nnames: [cat, dog]\n",
    )
    .unwrap();
    let err = open_yolo(dir.path(), "train").unwrap_err().to_string();
    assert!(err.contains("data.yaml line 2") && err.contains("nc"), "{err}");
}

#[test]
fn yolo_bad_labels_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    yolo_root(dir.path(), "names: [cat, dog]\n");
    let label = dir.path().join("labels/train/1.txt");
    fs::write(&label, "0 0.5 0.5 0.1 0.1\n2 0.5 0.5 0.1 0.1\n").unwrap();
    let err = open_yolo(dir.path(), "train").unwrap_err();
    assert!(matches!(err, DataError::Annotation { line: Some(2), .. }), "{err}");
    assert!(
        err.to_string().contains("1.txt line 2") && err.to_string().contains("class 2"),
        "{err}"
    );
    fs::write(&label, "0 0.5 0.5 0.1\n").unwrap();
    let err = open_yolo(dir.path(), "train").unwrap_err().to_string();
    assert!(err.contains("1.txt line 1") && err.contains("class cx cy w h"), "{err}");
    fs::write(&label, "zero 0.5 0.5 0.1 0.1\n").unwrap();
    assert!(open_yolo(dir.path(), "train")
        .unwrap_err()
        .to_string()
        .contains("line 1"));
    let err = open_yolo(dir.path(), "test").unwrap_err().to_string();
    assert!(err.contains("test"), "{err}");
}

fn coco_json(images: &str, annotations: &str) -> String {
    format!(
        r#"{{"images": [{images}], "annotations": [{annotations}],
        "categories": [{{"id": 0, "name": "things", "supercategory": "none"}},
                       {{"id": 3, "name": "b", "supercategory": "things"}},
                       {{"id": 7, "name": "a", "supercategory": "things"}},
                       {{"id": 9, "name": "unused", "supercategory": "things"}}]}}"#
    )
}

#[test]
fn coco_maps_categories_and_keeps_crowds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::write_image(&d.join("x.jpg"), 40, 30, 1);
    common::write_image(&d.join("y.jpg"), 40, 30, 2);
    let images = r#"{"id": 5, "file_name": "x.jpg", "width": 40, "height": 30},
                    {"id": 6, "file_name": "y.jpg", "width": 40, "height": 30}"#;
    let anns = r#"{"id": 1, "image_id": 5, "category_id": 7, "bbox": [2, 3, 10, 5], "iscrowd": 0},
                  {"id": 2, "image_id": 5, "category_id": 3, "bbox": [35, 20, 10, 20], "iscrowd": 1},
                  {"id": 3, "image_id": 5, "category_id": 3, "bbox": [1, 1, 0, 4]}"#;
    fs::write(d.join("a.json"), coco_json(images, anns)).unwrap();
    let ds = open_coco(&d.join("a.json"), None).unwrap();
    // The unused supercategory is dropped; the unused ordinary category is kept; id order.
    assert_eq!(ds.classes, vec!["b", "a", "unused"]);
    assert_eq!(ds.category_ids, vec![3, 7, 9]);
    assert_eq!(ds.samples[0].image_id, Some(5));
    let b = &ds.samples[0].boxes;
    assert_eq!(b.len(), 2);
    assert_eq!((b[0].class, b[0].xyxy, b[0].iscrowd), (1, [2.0, 3.0, 12.0, 8.0], false));
    assert_eq!(
        (b[1].class, b[1].xyxy, b[1].iscrowd),
        (0, [35.0, 20.0, 40.0, 30.0], true)
    );
    assert_eq!(
        (ds.issues.clipped, ds.issues.degenerate, ds.issues.background),
        (1, 1, 1)
    );
    assert!(ds.issues.notes.iter().any(|n| n.reason.contains("annotation id 3")));

    // An annotation pointing at a missing image id, an unknown category, a missing file: one line each.
    let bad = coco_json(
        images,
        r#"{"id": 4, "image_id": 99, "category_id": 7, "bbox": [1, 1, 2, 2]}"#,
    );
    fs::write(d.join("b.json"), bad).unwrap();
    let err = open_coco(&d.join("b.json"), None).unwrap_err().to_string();
    assert!(err.contains("annotation id 4") && err.contains("image id 99"), "{err}");
    let bad = coco_json(
        images,
        r#"{"id": 4, "image_id": 5, "category_id": 8, "bbox": [1, 1, 2, 2]}"#,
    );
    fs::write(d.join("c.json"), bad).unwrap();
    assert!(open_coco(&d.join("c.json"), None)
        .unwrap_err()
        .to_string()
        .contains("category id 8"));
    let missing = r#"{"id": 5, "file_name": "gone.jpg", "width": 40, "height": 30}"#;
    fs::write(d.join("d.json"), coco_json(missing, "")).unwrap();
    assert!(open_coco(&d.join("d.json"), None)
        .unwrap_err()
        .to_string()
        .contains("gone.jpg"));
    fs::write(d.join("e.json"), "{\"images\": [\n oops").unwrap();
    let err = open_coco(&d.join("e.json"), None).unwrap_err().to_string();
    assert!(err.contains("e.json line 2"), "{err}");
}

#[test]
fn loader_batches_boxes_with_placements() {
    let dir = tempfile::tempdir().unwrap();
    yolo_root(dir.path(), "names: [cat, dog]\n");
    let ds = open_yolo(dir.path(), "train").unwrap();
    let pipeline = Pipeline {
        steps: vec![
            Box::new(Letterbox::new(64, 64).unwrap()),
            Box::new(RandomHorizontalFlip::new(1.0).unwrap()),
        ],
        mean: [0.0; 3],
        std: [1.0; 3],
        output_hw: (64, 64),
    };
    let cfg = LoaderConfig {
        batch_size: 4,
        shuffle: false,
        ..Default::default()
    };
    let loader = Loader::new(ds.clone(), pipeline, cfg, Device::Cpu).unwrap();
    let b = loader.epoch(0).next().unwrap().unwrap();
    assert_eq!(b.images.dims(), &[3, 3, 64, 64]);
    let Targets::Boxes(boxes) = &b.targets else {
        panic!("{:?}", b.targets)
    };
    assert_eq!(boxes.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 0, 0]);
    // 100×50 → 64×32 at top 16, then mirrored: the dog box [40,15,60,35] lands at [25.6,25.6,38.4,38.4].
    let dog = boxes[0][0];
    assert_eq!(dog.class, 1);
    for (got, want) in dog.xyxy.iter().zip([25.6, 25.6, 38.4, 38.4]) {
        assert!((got - want).abs() < 1e-3, "{:?}", dog.xyxy);
    }
    let p = b.placements[0];
    assert_eq!(p.original_hw, (50, 100));
    let back = p.to_original_boxes(&boxes[0]);
    for (got, want) in back[0].xyxy.iter().zip(ds.samples[0].boxes[0].xyxy) {
        assert!((got - want).abs() < 1e-3);
    }
}

#[test]
fn real_chess_coco_export() {
    let Some(root) = tests::assets::require("data/chess") else {
        return;
    };
    let train = open_coco(&root.join("train/_annotations.coco.json"), None).unwrap();
    assert_eq!(train.len(), 202);
    assert_eq!(train.num_boxes() + train.issues.degenerate, 2108);
    assert_eq!(train.issues.degenerate, 0);
    assert_eq!(train.classes.len(), 13, "`pieces` (id 0) is an unused supercategory");
    assert!(!train.classes.contains(&"pieces".to_string()));
    assert_eq!(train.category_ids, (1..=13).collect::<Vec<i64>>());
    assert_eq!(train.class_counts()[0], 1, "bishop labels one box");
    assert!(train.samples.iter().all(|s| s.hw == (428, 640)));
    for (split, images, boxes) in [("valid", 58, 386), ("test", 29, 376)] {
        let ds = open_coco(&root.join(format!("{split}/_annotations.coco.json")), None).unwrap();
        assert_eq!((ds.len(), ds.num_boxes()), (images, boxes), "{split}");
        assert_eq!(ds.classes, train.classes, "{split} shares the class indices");
    }
    let loader = Loader::new(
        train,
        Pipeline {
            steps: vec![Box::new(Letterbox::new(320, 320).unwrap())],
            mean: [0.0; 3],
            std: [1.0; 3],
            output_hw: (320, 320),
        },
        LoaderConfig {
            batch_size: 2,
            shuffle: false,
            ..Default::default()
        },
        Device::Cpu,
    )
    .unwrap();
    let b = loader.epoch(0).next().unwrap().unwrap();
    let Targets::Boxes(boxes) = &b.targets else { panic!() };
    assert!(boxes.iter().all(|bs| !bs.is_empty()));
    assert!(
        boxes
            .iter()
            .flatten()
            .all(|bx| bx.xyxy[1] >= 53.0 && bx.xyxy[3] <= 267.0),
        "inside the letterbox"
    );
}
