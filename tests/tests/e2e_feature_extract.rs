//! End to end on real data: `train` (feature extraction, Lite0 real weights, hymenoptera), then `evaluate`,
//! `predict`, `export` and `predict --model`, all through the built `trainer` binary.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{json_events, require, run, trainer};

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
    let train = |out: &Path, json: bool| {
        let mut cmd = trainer();
        if json {
            cmd.args(["--log-format", "json"]);
        }
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
    let out = train(&run_dir, true);
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
    // No --epochs: the head trains until validation accuracy plateaus (up to 200 epochs).
    let epochs_run = metrics["history"].as_array().expect("history").len();
    assert!((1..200).contains(&epochs_run), "{epochs_run} epochs");
    check_json_progress(&json_events(&out.stdout), (245, 153), epochs_run);
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
    let out = train(&tmp.path().join("run2"), false);
    assert!(out.status.success());
    // Text to a pipe: plain lines, one per epoch, no per-batch lines or bar updates.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("epoch ")).count(),
        epochs_run,
        "{stdout}"
    );
    assert!(
        !stdout.contains("img/s") && !stdout.contains('\r') && !stdout.contains('\x1b'),
        "{stdout}"
    );
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

/// The JSON log of a run with a feature-cache miss: extraction progress for train and val from 0 to all images,
/// and a `batch` event for every batch of every epoch, numbered in order, with running figures.
fn check_json_progress(events: &[serde_json::Value], (train, val): (u64, u64), epochs_run: usize) {
    let of = |kind: &'static str| events.iter().filter(move |e| e["event"] == kind);
    for (task, total) in [
        ("extracting features (train)", train),
        ("extracting features (val)", val),
    ] {
        let done: Vec<u64> = of("progress")
            .filter(|e| e["task"] == task)
            .map(|e| {
                assert_eq!(e["total"].as_u64(), Some(total), "{e}");
                e["done"].as_u64().expect("done")
            })
            .collect();
        assert!(done.len() >= 3, "{task}: start, per-batch and end updates: {done:?}");
        assert_eq!((done[0], *done.last().unwrap()), (0, total), "{task}: {done:?}");
        assert!(done.windows(2).all(|w| w[0] < w[1]), "{task}: increasing: {done:?}");
    }
    let epochs: Vec<&serde_json::Value> = of("epoch_started").collect();
    assert_eq!(epochs.len(), epochs_run, "one epoch_started per epoch run");
    for start in epochs {
        let (epoch, batches) = (start["epoch"].as_u64().unwrap(), start["batches"].as_u64().unwrap());
        assert_eq!(batches, train.div_ceil(32), "batch size 32");
        let seen: Vec<&serde_json::Value> = of("batch").filter(|b| b["epoch"].as_u64() == Some(epoch)).collect();
        let numbers: Vec<u64> = seen.iter().map(|b| b["batch"].as_u64().unwrap()).collect();
        assert_eq!(numbers, (1..=batches).collect::<Vec<_>>(), "epoch {epoch}");
        let last = seen.last().unwrap();
        assert_eq!(last["samples"].as_u64(), Some(train), "epoch {epoch}: {last}");
        let acc = last["accuracy"].as_f64().unwrap();
        let loss = last["loss"].as_f64().unwrap();
        let ended = of("epoch_ended")
            .find(|e| e["epoch"].as_u64() == Some(epoch))
            .expect("epoch_ended");
        assert!(
            (acc - ended["train_acc"].as_f64().unwrap()).abs() < 1e-9,
            "{last} vs {ended}"
        );
        assert!(
            (loss - ended["train_loss"].as_f64().unwrap()).abs() < 1e-9,
            "{last} vs {ended}"
        );
    }
}
