//! User mistakes end with one clear line and a non-zero exit, never a panic; the default job fails fast offline.

mod common;

use std::time::{Duration, Instant};

use common::{run, trainer};

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn assert_clean_failure(out: &std::process::Output, must_contain: &str) {
    let err = stderr_of(out);
    assert!(!out.status.success(), "expected failure, got success; stderr:\n{err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "no panic:\n{err}"
    );
    assert!(err.contains(must_contain), "stderr names `{must_contain}`:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "one error line:\n{err}");
}

#[test]
fn missing_data_path_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(trainer()
        .args([
            "train",
            "--model",
            "resnet18",
            "--data",
            "/definitely/not/here",
            "--out",
        ])
        .arg(tmp.path().join("r")));
    assert_clean_failure(&out, "/definitely/not/here");
}

#[test]
fn unknown_model_suggests_the_nearest_name() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(trainer()
        .args(["train", "--model", "resnet19", "--data"])
        .arg(tmp.path())
        .arg("--out")
        .arg(tmp.path().join("r")));
    assert_clean_failure(&out, "resnet19");
    assert!(
        stderr_of(&out).contains("resnet18"),
        "suggests resnet18: {}",
        stderr_of(&out)
    );
}

#[test]
fn default_job_offline_fails_fast_with_guidance() {
    let tmp = tempfile::tempdir().unwrap();
    common::trainer_bin(); // built before the clock starts
    let start = Instant::now();
    let out = run(trainer()
        .env("XDG_CACHE_HOME", tmp.path())
        .env("HF_HOME", tmp.path().join("hf"))
        .env("HOME", tmp.path())
        .current_dir(tmp.path()));
    let took = start.elapsed();
    assert!(took < Duration::from_secs(60), "no hang: took {took:?}");
    let err = stderr_of(&out);
    assert_clean_failure(&out, "--data");
    assert!(
        err.contains("--weights") || err.contains("weights"),
        "mentions weights: {err}"
    );
}

#[test]
fn models_lists_the_registry() {
    let out = run(trainer().arg("models"));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "resnet18",
        "resnet50",
        "vgg16",
        "efficientnet_b0",
        "tf_efficientnet_lite0",
        "mobilenetv3_large_100",
    ] {
        assert!(text.contains(name), "models lists {name}:\n{text}");
    }
}

#[test]
fn data_inspect_reports_classes_and_counts() {
    let Some(data) = common::require("data/hymenoptera/train") else {
        return;
    };
    let out = run(trainer().args(["data", "inspect"]).arg(&data));
    assert!(out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("ants") && text.contains("124"), "{text}");
    assert!(text.contains("bees") && text.contains("121"), "{text}");
}
