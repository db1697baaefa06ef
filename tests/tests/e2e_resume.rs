//! `train` killed with SIGKILL in the middle of an epoch, then `--resume`, ends with the same final metrics as an
//! uninterrupted run with the same seed; no file in the run folder is ever half-written.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{require, run, trainer};

/// A small ImageFolder copy of hymenoptera: `per_class` training and validation images per class.
fn small_dataset(src: &Path, dst: &Path, per_class: usize) -> (PathBuf, PathBuf) {
    for split in ["train", "val"] {
        for class in ["ants", "bees"] {
            let mut files: Vec<PathBuf> = std::fs::read_dir(src.join(split).join(class))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
                .collect();
            files.sort();
            let out = dst.join(split).join(class);
            std::fs::create_dir_all(&out).unwrap();
            for f in files.iter().take(per_class) {
                std::fs::copy(f, out.join(f.file_name().unwrap())).unwrap();
            }
        }
    }
    (dst.join("train"), dst.join("val"))
}

fn train_cmd(weights: &Path, train: &Path, val: &Path, cache: &Path) -> Command {
    let mut cmd = trainer();
    cmd.env("GRAFT_CACHE_DIR", cache)
        .args(["train", "--model", "tf_efficientnet_lite0"]);
    cmd.arg("--weights")
        .arg(weights)
        .arg("--data")
        .arg(train)
        .arg("--val")
        .arg(val);
    cmd.args([
        "--mode",
        "fine-tune",
        "--unfreeze",
        "1",
        "--epochs",
        "4",
        "--batch-size",
        "8",
        "--seed",
        "3",
    ]);
    cmd.args(["--optimizer", "sgd", "--lr", "0.01", "--augment", "torchvision"]);
    cmd
}

fn metrics(run_dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run_dir.join("metrics.json")).unwrap()).unwrap()
}

fn assert_no_partial_files(run_dir: &Path) {
    for entry in std::fs::read_dir(run_dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".json") {
            let text = std::fs::read_to_string(&path).unwrap();
            serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|e| panic!("{name} half-written: {e}"));
        }
        if name.ends_with(".safetensors") {
            let bytes = std::fs::read(&path).unwrap();
            assert!(bytes.len() >= 8, "{name} truncated");
            let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            assert!(8 + header <= bytes.len(), "{name} truncated");
            serde_json::from_slice::<serde_json::Value>(&bytes[8..8 + header])
                .unwrap_or_else(|e| panic!("{name} header half-written: {e}"));
        }
    }
}

#[test]
fn sigkill_mid_epoch_then_resume_matches_uninterrupted() {
    let (Some(weights), Some(data)) = (
        require("weights/tf_efficientnet_lite0.safetensors"),
        require("data/hymenoptera"),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (train, val) = small_dataset(&data, &tmp.path().join("data"), 12);
    let cache = tmp.path().join("cache");

    // Uninterrupted reference run.
    let full = tmp.path().join("full");
    let out = run(train_cmd(&weights, &train, &val, &cache).arg("--out").arg(&full));
    assert!(out.status.success(), "uninterrupted run failed");
    let reference = metrics(&full);
    let history = reference["history"].as_array().expect("history").clone();
    assert_eq!(history.len(), 4);

    // Interrupted run: SIGKILL once the first checkpoint exists, i.e. during a later epoch.
    let killed = tmp.path().join("killed");
    let mut child = train_cmd(&weights, &train, &val, &cache)
        .arg("--out")
        .arg(&killed)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !killed.join("last.safetensors").exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "run ended before its first checkpoint"
        );
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "no checkpoint within 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(700));
    let finished_early = child.try_wait().unwrap().is_some();
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    assert!(!finished_early, "the run finished before it could be killed");
    assert_no_partial_files(&killed);

    // Resume: same final metrics as the uninterrupted run.
    let out = run(trainer()
        .env("GRAFT_CACHE_DIR", &cache)
        .arg("train")
        .arg("--resume")
        .arg(&killed));
    assert!(out.status.success(), "resume failed");
    assert_no_partial_files(&killed);
    let resumed = metrics(&killed);
    assert_eq!(resumed["history"].as_array().unwrap().len(), 4);
    for key in ["val_accuracy", "best_epoch"] {
        assert_eq!(resumed[key], reference[key], "{key} differs after resume");
    }
    let losses = |m: &serde_json::Value| -> Vec<serde_json::Value> {
        m["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["train_loss"].clone())
            .collect()
    };
    assert_eq!(
        losses(&resumed),
        losses(&reference),
        "per-epoch training losses differ after resume"
    );
    // Fine-tuning the last stage keeps a usable model and lowers the training loss.
    let first = history.first().unwrap()["train_loss"].as_f64().unwrap();
    let last = history.last().unwrap()["train_loss"].as_f64().unwrap();
    assert!(last < first, "training loss {first} -> {last}");
}
