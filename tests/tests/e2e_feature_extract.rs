//! End to end on real data: `train` (feature extraction, Lite0 real weights, hymenoptera), then `evaluate`,
//! `predict`, `export` and `predict --model`, all through the built `trainer` binary.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{require, run, trainer};

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// `path -> top-1 class` from predict's CSV (`path,rank,class,probability`).
fn top1(csv: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in csv.lines().skip(1) {
        let cols: Vec<&str> = line.rsplitn(3, ',').collect(); // probability, class, "path,rank"
        assert_eq!(cols.len(), 3, "bad predict line {line}");
        let (path, rank) = cols[2].rsplit_once(',').expect("path,rank");
        if rank == "1" {
            out.insert(path.trim_matches('"').to_string(), cols[1].to_string());
        }
    }
    out
}

#[test]
fn feature_extraction_train_evaluate_predict_export() {
    let (Some(weights), Some(data)) = (
        require("weights/tf_efficientnet_lite0.safetensors"),
        require("data/hymenoptera"),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let run_dir = tmp.path().join("run");
    let train = |out: &Path| {
        let mut cmd = trainer();
        cmd.env("GRAFT_CACHE_DIR", &cache)
            .args(["train", "--model", "tf_efficientnet_lite0"]);
        cmd.arg("--weights").arg(&weights);
        cmd.arg("--data")
            .arg(data.join("train"))
            .arg("--val")
            .arg(data.join("val"));
        cmd.args(["--mode", "feature-extract", "--head", "linear", "--seed", "0", "--out"])
            .arg(out);
        run(&mut cmd)
    };

    // 1. Train: val accuracy >= 0.935 (PyTorch + timm linear probe on the same weights: 0.954).
    let out = train(&run_dir);
    assert!(out.status.success(), "train failed");
    let first_log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        first_log.contains("feature cache: miss"),
        "first run computes features:\n{first_log}"
    );
    let metrics = read_json(&run_dir.join("metrics.json"));
    let val_acc = metrics["val_accuracy"].as_f64().expect("metrics.json has val_accuracy");
    println!("feature-extract val accuracy {val_acc:.4}");
    assert!(val_acc >= 0.935, "val accuracy {val_acc} < 0.935");
    assert_eq!(metrics["classes"], serde_json::json!(["ants", "bees"]));
    assert!(metrics["best_epoch"].as_u64().is_some());
    assert!(!metrics["history"].as_array().expect("history").is_empty());

    // 2. The run folder has every file; PNGs decode; nothing half-written is left.
    for f in [
        "config.toml",
        "metrics.csv",
        "metrics.json",
        "best.safetensors",
        "last.safetensors",
        "curves.png",
        "confusion_matrix.png",
        "report.html",
    ] {
        assert!(run_dir.join(f).is_file(), "run folder lacks {f}");
    }
    for png in ["curves.png", "confusion_matrix.png"] {
        let img = image::open(run_dir.join(png)).unwrap_or_else(|e| panic!("{png} does not decode: {e}"));
        assert!(img.width() > 100 && img.height() > 100);
    }
    let report = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(report.contains("data:image/png;base64,"), "report embeds its plots");
    for entry in std::fs::read_dir(&run_dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        assert!(!name.ends_with(".tmp"), "leftover temporary file {name}");
    }

    // 3. A second run with the same inputs reuses the feature cache.
    let out = train(&tmp.path().join("run2"));
    assert!(out.status.success());
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(log.contains("feature cache: hit"), "second run hits the cache:\n{log}");
    let again = read_json(&tmp.path().join("run2/metrics.json"));
    assert_eq!(
        again["val_accuracy"], metrics["val_accuracy"],
        "same seed, same metrics"
    );

    // 4. evaluate on val reproduces metrics.json's accuracy.
    let out = run(trainer()
        .args(["evaluate", "--run"])
        .arg(&run_dir)
        .arg("--data")
        .arg(data.join("val")));
    assert!(out.status.success());
    let eval: serde_json::Value = serde_json::from_slice(&out.stdout).expect("evaluate prints JSON on stdout");
    let eval_acc = eval["accuracy"].as_f64().expect("accuracy");
    assert!(
        (eval_acc - val_acc).abs() < 1e-6,
        "evaluate {eval_acc} vs metrics.json {val_acc}"
    );

    // 5. predict on the val folder agrees with evaluate.
    let out = run(trainer().args(["predict", "--run"]).arg(&run_dir).arg(data.join("val")));
    assert!(out.status.success());
    let preds = top1(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(preds.len(), 153, "one prediction per val image");
    let correct = preds
        .iter()
        .filter(|(path, class)| Path::new(path).parent().unwrap().file_name().unwrap().to_string_lossy() == **class)
        .count();
    let pred_acc = correct as f64 / preds.len() as f64;
    assert!(
        (pred_acc - eval_acc).abs() < 1e-6,
        "predict accuracy {pred_acc} vs evaluate {eval_acc}"
    );

    // 6. export, then predict --model gives the same predictions without the run folder.
    let exported = tmp.path().join("model.safetensors");
    let out = run(trainer()
        .args(["export", "--run"])
        .arg(&run_dir)
        .arg("--out")
        .arg(&exported));
    assert!(out.status.success());
    let moved = tmp.path().join("moved-away");
    std::fs::rename(&run_dir, &moved).unwrap();
    let out = run(trainer()
        .args(["predict", "--model"])
        .arg(&exported)
        .arg(data.join("val")));
    assert!(out.status.success());
    assert_eq!(
        top1(&String::from_utf8_lossy(&out.stdout)),
        preds,
        "exported model predicts the same"
    );
}
