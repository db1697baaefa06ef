//! On a terminal, `train` draws progress bars: one for feature extraction and one per epoch with loss, accuracy,
//! images/s and ETA. The terminal is a pseudo-terminal from util-linux's `script`; the test fails (does not skip)
//! when `script` is missing.

mod common;

use std::process::Command;

use common::{require, subset, trainer_bin};

/// Quote `s` for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[test]
fn train_on_a_terminal_draws_bars() {
    let (Some(weights), Some(data)) = (
        require("weights/tf_efficientnet_lite0.safetensors"),
        require("data/hymenoptera/train"),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = subset(&data, &tmp.path().join("data"), 8);
    let args = [
        trainer_bin().display().to_string(),
        "train".into(),
        "--model".into(),
        "tf_efficientnet_lite0".into(),
        "--weights".into(),
        weights.display().to_string(),
        "--data".into(),
        data.display().to_string(),
        "--epochs".into(),
        "2".into(),
        "--batch-size".into(),
        "4".into(),
        "--out".into(),
        tmp.path().join("run").display().to_string(),
    ];
    let line: Vec<String> = args.iter().map(|a| sh_quote(a)).collect();
    let out = Command::new("script")
        .args(["-qec", &line.join(" "), "/dev/null"])
        .env("HF_HUB_OFFLINE", "1")
        .env("GRAFT_CACHE_DIR", tmp.path().join("cache"))
        .env("TERM", "xterm")
        .output()
        .expect("util-linux `script` is needed to run the trainer on a pseudo-terminal");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "train on a terminal failed:\n{screen}");
    assert!(
        screen.contains("extracting features (train) ["),
        "feature bar:\n{screen}"
    );
    assert!(screen.contains("/16 images"), "feature bar counts images:\n{screen}");
    assert!(screen.contains("epoch 1/2 ["), "epoch bar:\n{screen}");
    assert!(
        screen.contains("/4 loss ") && screen.contains(" acc "),
        "loss and accuracy:\n{screen}"
    );
    assert!(
        screen.contains(" img/s") && screen.contains("ETA "),
        "speed and ETA:\n{screen}"
    );
    assert!(screen.contains("epoch 2: train loss"), "epoch lines stay:\n{screen}");
}
