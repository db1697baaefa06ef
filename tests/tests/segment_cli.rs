//! End to end: `trainer train --task segment` on composites of hymenoptera photos (`tests::synth`: ant and bee
//! cut-outs pasted on other photos, classes background/ant/bee), with frozen real Lite0 weights; then `evaluate`,
//! `predict` (masks at the original size, overlays), `export` + `predict --model` (identical masks), a U-Net run,
//! and bad inputs through the binary (one line, exit code 2).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{log_of, require, run, trainer};

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// A train/ + val/ root of composites (`n_train` and `n_val` images of `size`²), written by `tests::synth`.
fn synth_root(hymenoptera: &Path, dir: &Path, n_train: usize, n_val: usize, size: u32) -> PathBuf {
    let set = tests::synth::make(hymenoptera, n_train + n_val, size, (1, 2), 7);
    tests::synth::write_segmentation(&dir.join("train"), &set[..n_train]);
    tests::synth::write_segmentation(&dir.join("val"), &set[n_train..]);
    dir.to_path_buf()
}

/// mIoU of predicting the majority class everywhere, over `masks` (classes absent from the truth and never
/// predicted are left out, as the CLI's metric does).
fn constant_miou(masks: &[image::GrayImage], classes: usize) -> f64 {
    let mut counts = vec![0u64; classes];
    for m in masks {
        for &v in m.as_raw() {
            if (v as usize) < classes {
                counts[v as usize] += 1;
            }
        }
    }
    let total: u64 = counts.iter().sum();
    let majority = (0..classes).max_by_key(|&c| counts[c]).unwrap();
    // The majority class: IoU = its pixels / all pixels; every other present class: IoU 0.
    let present = counts.iter().filter(|&&c| c > 0).count();
    counts[majority] as f64 / total as f64 / present as f64
}

fn masks_in(dir: &Path) -> Vec<image::GrayImage> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().map(|f| image::open(f).unwrap().to_luma8()).collect()
}

fn train_cmd(weights: &Path, data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut cmd = trainer();
    cmd.args([
        "train",
        "--task",
        "segment",
        "--model",
        "tf_efficientnet_lite0",
        "--weights",
    ])
    .arg(weights)
    .arg("--data")
    .arg(data)
    .args(["--mode", "feature-extract", "--seed", "0", "--out"])
    .arg(out)
    .args(extra);
    run(&mut cmd)
}

#[test]
fn segment_train_evaluate_predict_export() {
    let (Some(weights), Some(hym)) = (
        require("weights/tf_efficientnet_lite0.safetensors"),
        require("data/hymenoptera"),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = synth_root(&hym, &tmp.path().join("seg"), 32, 8, 160);
    let run_dir = tmp.path().join("run");
    let t0 = std::time::Instant::now();
    let out = train_cmd(
        &weights,
        &root,
        &run_dir,
        &[
            "--head",
            "fpn",
            "--imgsz",
            "128",
            "--epochs",
            "6",
            "--batch-size",
            "8",
            "--lr",
            "3e-3",
            "--augment",
            "torchvision",
        ],
    );
    assert!(out.status.success(), "train failed:\n{}", log_of(&out));
    println!("segment train: {:.0} s", t0.elapsed().as_secs_f64());

    // The run folder.
    for f in [
        "config.toml",
        "run.json",
        "best.safetensors",
        "last.safetensors",
        "metrics.csv",
        "metrics.json",
        "curves.png",
        "val_samples.png",
        "report.html",
    ] {
        assert!(run_dir.join(f).is_file(), "{f} missing from the run folder");
    }
    let samples = image::open(run_dir.join("val_samples.png")).expect("val_samples.png decodes");
    assert!(
        samples.width() >= 3 * 128 && samples.height() >= 4 * 128,
        "{:?}",
        (samples.width(), samples.height())
    );
    image::open(run_dir.join("curves.png")).expect("curves.png decodes");
    let run_json = read_json(&run_dir.join("run.json"));
    assert_eq!(run_json["task"], "segment");
    let csv = std::fs::read_to_string(run_dir.join("metrics.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    for col in ["miou", "iou/ant", "iou/bee", "iou/background", "pixel_accuracy"] {
        assert!(header.split(',').any(|c| c == col), "metrics.csv lacks {col}: {header}");
    }
    let report = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(
        report.contains("Per-class IoU") && report.contains("bee"),
        "report lacks per-class IoU"
    );
    assert!(report.contains("Worst validation images"));
    assert!(report.contains("best val miou"), "the report's summary names the score");

    // Better than predicting the majority class (background) everywhere. That baseline is about 0.25 here (≈ 75 %
    // background pixels / 3 classes present); a frozen ImageNet encoder with a trained FPN finds the pasted
    // insects' regions after a few epochs, so its mIoU is clearly above it. The margin, 0.1, is what one ant/bee
    // IoU of ~0.3 on top of a background IoU as good as the baseline's adds to the mean.
    let metrics = read_json(&run_dir.join("metrics.json"));
    assert_eq!(metrics["score_name"], "miou");
    let best = metrics["score"].as_f64().expect("metrics.json has the best score");
    let baseline = constant_miou(&masks_in(&root.join("val/masks")), 3);
    println!(
        "segment: best mIoU {best:.4} at epoch {} (constant baseline {baseline:.4}); metrics {}",
        metrics["best_epoch"], metrics["metrics"]
    );
    assert!(best > baseline + 0.1, "best mIoU {best:.4} vs constant {baseline:.4}");

    // evaluate: one confusion matrix at the original resolution.
    let ev = run(trainer()
        .args(["evaluate", "--run"])
        .arg(&run_dir)
        .arg("--data")
        .arg(root.join("val")));
    assert!(ev.status.success(), "evaluate failed:\n{}", log_of(&ev));
    let eval: serde_json::Value = serde_json::from_slice(&ev.stdout).expect("evaluate prints JSON");
    assert_eq!(eval["task"], "segment");
    assert_eq!(eval["images"], 8);
    for k in ["miou", "pixel_accuracy", "mean_dice", "iou/background"] {
        let v = eval["metrics"][k]
            .as_f64()
            .unwrap_or_else(|| panic!("evaluate lacks {k}: {eval}"));
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }
    let eval_miou = eval["metrics"]["miou"].as_f64().unwrap();
    assert!(
        eval_miou > baseline,
        "evaluate mIoU {eval_miou:.4} vs constant {baseline:.4}"
    );

    // predict: a mask per input at its original size (a 160² composite and a real 500×375-ish photo), classes only.
    let photo = std::fs::read_dir(hym.join("val/ants"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .min()
        .unwrap();
    let inputs = [root.join("val/images/000.png"), photo.clone()];
    let pred_dir = tmp.path().join("pred_run");
    let p = run(trainer()
        .args(["predict", "--run"])
        .arg(&run_dir)
        .arg("--out")
        .arg(&pred_dir)
        .arg("--overlay")
        .args(&inputs));
    assert!(p.status.success(), "predict failed:\n{}", log_of(&p));
    let stdout = String::from_utf8_lossy(&p.stdout);
    assert!(stdout.starts_with("path,mask,overlay"), "{stdout}");
    for input in &inputs {
        let stem = input.file_stem().unwrap().to_string_lossy().into_owned();
        let mask_file = pred_dir.join(format!("{stem}.png"));
        let mask = image::open(&mask_file).expect("mask decodes");
        let (w, h) = image::image_dimensions(input).unwrap();
        assert_eq!(
            (mask.width(), mask.height()),
            (w, h),
            "{} at the original size",
            mask_file.display()
        );
        // The palette PNG's colours are VOC's for classes 0-2 (black, dark red, dark green): values within the classes.
        let rgb = mask.to_rgb8();
        let voc = [[0u8, 0, 0], [128, 0, 0], [0, 128, 0]];
        assert!(rgb.pixels().all(|p| voc.contains(&p.0)), "values within the classes");
        let overlay = pred_dir.join(format!("{stem}_overlay.png"));
        let ov = image::open(&overlay).expect("overlay decodes");
        assert_eq!((ov.width(), ov.height()), (w, h));
    }

    // export + predict --model: byte-identical masks.
    let exported = tmp.path().join("seg.safetensors");
    let e = run(trainer()
        .args(["export", "--run"])
        .arg(&run_dir)
        .arg("--out")
        .arg(&exported));
    assert!(e.status.success(), "export failed:\n{}", log_of(&e));
    let model_dir = tmp.path().join("pred_model");
    let p2 = run(trainer()
        .args(["predict", "--model"])
        .arg(&exported)
        .arg("--out")
        .arg(&model_dir)
        .args(["--format", "jsonl"])
        .args(&inputs));
    assert!(p2.status.success(), "predict --model failed:\n{}", log_of(&p2));
    let first: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&p2.stdout).lines().next().unwrap()).unwrap();
    let fractions: f64 = first["classes"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!((fractions - 1.0).abs() < 1e-6, "class fractions sum to 1: {first}");
    for input in &inputs {
        let name = format!("{}.png", input.file_stem().unwrap().to_string_lossy());
        assert_eq!(
            std::fs::read(pred_dir.join(&name)).unwrap(),
            std::fs::read(model_dir.join(&name)).unwrap(),
            "{name}: --run and --model masks differ"
        );
    }
}

#[test]
fn segment_unet_head_trains() {
    let (Some(weights), Some(hym)) = (
        require("weights/tf_efficientnet_lite0.safetensors"),
        require("data/hymenoptera"),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = synth_root(&hym, &tmp.path().join("seg"), 8, 4, 128);
    let run_dir = tmp.path().join("unet");
    let mut extra = vec!["--head", "unet", "--imgsz", "96", "--epochs", "1", "--batch-size", "4"];
    let val = root.join("val");
    extra.extend(["--val", val.to_str().unwrap()]);
    extra.extend(["--loss", "ce+dice", "--class-weights", "auto"]);
    let out = train_cmd(&weights, &root.join("train"), &run_dir, &extra);
    assert!(out.status.success(), "unet train failed:\n{}", log_of(&out));
    assert!(
        log_of(&out).contains("inverse pixel frequency"),
        "class weights reported"
    );
    let metrics = read_json(&run_dir.join("metrics.json"));
    let score = metrics["score"].as_f64().expect("a validation mIoU");
    assert!((0.0..=1.0).contains(&score));
    let head = {
        let bytes = std::fs::read(run_dir.join("best.safetensors")).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        String::from_utf8_lossy(&bytes[8..8 + n]).into_owned()
    };
    assert!(head.contains("unet"), "the model file records the U-Net decoder");
}

/// One `train --task segment` on a broken set: exit code 2 and one error line containing `needle`.
fn assert_usage_error(data: &Path, needle: &str) {
    let tmp = tempfile::tempdir().unwrap();
    // The masks are checked before the weights are read: an empty placeholder file is enough.
    let weights = tmp.path().join("unused.safetensors");
    std::fs::write(&weights, b"").unwrap();
    let mut cmd = trainer();
    cmd.args([
        "train",
        "--task",
        "segment",
        "--model",
        "tf_efficientnet_lite0",
        "--weights",
    ])
    .arg(&weights)
    .arg("--data")
    .arg(data)
    .arg("--out")
    .arg(tmp.path().join("run"));
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit code 2 expected:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "one error line: {err}");
    assert!(lines[0].contains(needle) && lines[0].contains("--data"), "{err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
}

#[test]
fn broken_segmentation_sets_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let set = |name: &str, mask: image::GrayImage| {
        let d = tmp.path().join(name);
        std::fs::create_dir_all(d.join("images")).unwrap();
        std::fs::create_dir_all(d.join("masks")).unwrap();
        image::RgbImage::new(32, 24).save(d.join("images/a.png")).unwrap();
        mask.save(d.join("masks/a.png")).unwrap();
        std::fs::write(d.join("classes.txt"), "background\nfg\n").unwrap();
        d
    };
    // A value that is not a class (2 of 2 classes, not 255).
    let bad_value = set("value", image::GrayImage::from_pixel(32, 24, image::Luma([2])));
    assert_usage_error(&bad_value, "mask value 2");
    // A mask of another size than its image.
    let bad_size = set("size", image::GrayImage::new(30, 24));
    assert_usage_error(&bad_size, "masks/a.png is 30×24");
    // No pair at all.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(empty.join("images")).unwrap();
    std::fs::create_dir_all(empty.join("masks")).unwrap();
    std::fs::write(empty.join("classes.txt"), "a\nb\n").unwrap();
    assert_usage_error(&empty, "no image with a mask");
}
