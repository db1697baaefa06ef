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
        "mobilenetv4_conv_small",
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

/// Entries of `dir` (empty when it does not exist).
fn entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_failed_train_leaves_no_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("runs");
    std::fs::create_dir(&project).unwrap();
    // A missing path: refused before the run folder exists.
    let out = run(trainer()
        .args(["train", "--data", "/no/such", "--project"])
        .arg(&project)
        .current_dir(tmp.path()));
    assert_clean_failure(&out, "--data /no/such");
    assert_eq!(entries(&project), Vec::<String>::new());

    // A data error found after the folder was made (one class only): the folder is removed again.
    let one = tmp.path().join("one-class/ants");
    std::fs::create_dir_all(&one).unwrap();
    image::RgbImage::from_pixel(8, 8, image::Rgb([10, 20, 30]))
        .save(one.join("a.png"))
        .unwrap();
    let out = run(trainer()
        .args(["train", "--model", "resnet18", "--data"])
        .arg(tmp.path().join("one-class"))
        .arg("--project")
        .arg(&project)
        .current_dir(tmp.path()));
    assert_clean_failure(&out, "--data");
    assert_eq!(entries(&project), Vec::<String>::new(), "no run folder left behind");
    assert!(!tmp.path().join("runs/train").exists() && !tmp.path().join("runs/train2").exists());
}

#[test]
fn data_inspect_strict_fails_on_a_corrupt_image_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    for class in ["ants", "bees"] {
        let dir = tmp.path().join(class);
        std::fs::create_dir(&dir).unwrap();
        image::RgbImage::from_pixel(16, 12, image::Rgb([200, 100, 50]))
            .save(dir.join("ok.png"))
            .unwrap();
    }
    let corrupt = tmp.path().join("bees/broken.jpg");
    std::fs::write(&corrupt, b"\xff\xd8\xff\xe0 this is not really a JPEG").unwrap();

    // Plain inspect: the file is reported as skipped, exit 0.
    let out = run(trainer().args(["data", "inspect"]).arg(tmp.path()));
    assert!(out.status.success(), "{}", common::log_of(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 classes, 3 images"), "{text}");
    assert!(
        text.lines().any(|l| l.contains("skipped") && l.contains("broken.jpg")),
        "{text}"
    );

    // --strict: non-zero, one error line naming the file.
    let out = run(trainer().args(["data", "inspect", "--strict"]).arg(tmp.path()));
    assert_clean_failure(&out, corrupt.to_str().unwrap());
    assert!(stderr_of(&out).starts_with("error: --strict: "), "{}", stderr_of(&out));
    assert_eq!(stderr_of(&out).lines().count(), 1, "{}", stderr_of(&out));
}

#[test]
fn data_inspect_lists_every_problem_then_fails() {
    use tests::fixtures::{problem_dataset, BAD_FILES, GOOD_FILES};
    let tmp = tempfile::tempdir().unwrap();
    problem_dataset(tmp.path()).unwrap();
    let out = run(trainer().args(["data", "inspect"]).arg(tmp.path()));
    let text = String::from_utf8_lossy(&out.stdout);
    // Every unreadable file with its reason, the empty class and the counts, although a class is empty.
    assert!(text.contains("3 classes, 9 images"), "{text}");
    for (class, n) in [("bad", BAD_FILES.len()), ("empty_class", 0), ("good", GOOD_FILES.len())] {
        assert!(
            text.lines().any(|l| l.trim() == format!("{class}: {n}")),
            "{class}: {n}\n{text}"
        );
    }
    for name in BAD_FILES {
        let line = text.lines().find(|l| l.contains("skipped") && l.contains(name));
        let reason = line.and_then(|l| l.split(&format!("{name}: ")).nth(1));
        assert!(
            reason.is_some_and(|r| !r.trim().is_empty()),
            "{name} with a reason:\n{text}"
        );
    }
    for name in GOOD_FILES {
        assert!(!text.contains(name), "{name} is readable:\n{text}");
    }
    assert!(
        text.contains("problem: class `empty_class` has no image file"),
        "{text}"
    );
    assert!(text.contains("problem: class `bad` has no readable image"), "{text}");
    // Then one error line and a non-zero exit.
    assert_clean_failure(&out, "is not usable for training");
    assert!(stderr_of(&out).contains("empty_class"), "{}", stderr_of(&out));
    assert_eq!(out.status.code(), Some(1));

    // JSON: the same report, machine-readable.
    let out = run(trainer()
        .args(["--log-format", "json", "data", "inspect"])
        .arg(tmp.path()));
    assert!(!out.status.success());
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["skipped"].as_array().map(Vec::len), Some(BAD_FILES.len()), "{v}");
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(2), "{v}");
}

fn png(path: &std::path::Path, shade: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(8, 8, image::Rgb([shade, 20, 30]))
        .save(path)
        .unwrap();
}

#[test]
fn a_validation_class_missing_from_train_is_one_line_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, split_class) in ["train/ants", "train/bees", "val/ants", "val/bees", "val/wasps"]
        .iter()
        .enumerate()
    {
        png(&tmp.path().join(split_class).join("a.png"), i as u8 * 40);
    }
    let project = tmp.path().join("runs");
    let out = run(trainer()
        .args(["train", "--model", "resnet18", "--data"])
        .arg(tmp.path().join("train"))
        .arg("--val")
        .arg(tmp.path().join("val"))
        .arg("--project")
        .arg(&project));
    assert_clean_failure(&out, "wasps");
    let err = stderr_of(&out);
    assert!(
        err.contains("--drop-unknown-val-classes") && !err.contains("drop_unknown"),
        "{err}"
    );
    assert_eq!(entries(&project), Vec::<String>::new(), "no run folder left behind");
}

#[test]
fn an_unwritable_run_folder_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    for class in ["ants", "bees"] {
        png(&tmp.path().join("data").join(class).join("a.png"), 9);
    }
    // Under a file: no folder can be made there, whoever runs the test (root ignores permission bits).
    let out = run(trainer()
        .args(["train", "--model", "resnet18", "--data"])
        .arg(tmp.path().join("data"))
        .args(["--out", "/dev/null/run"]));
    assert_clean_failure(&out, "/dev/null/run");
}

#[test]
fn resuming_a_run_of_another_model_is_one_line() {
    let (Some(hymenoptera), Some(weights)) = (
        common::require("data/hymenoptera/train"),
        common::require("weights/tf_efficientnet_lite0.safetensors"),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = common::subset(&hymenoptera, &tmp.path().join("data"), 4);
    let run_dir = tmp.path().join("run");
    let out = run(trainer()
        .args([
            "--quiet",
            "train",
            "--model",
            "tf_efficientnet_lite0",
            "--epochs",
            "1",
            "--val-split",
            "0.25",
        ])
        .arg("--weights")
        .arg(&weights)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&run_dir));
    assert!(out.status.success(), "{}", common::log_of(&out));
    let before = std::fs::read(run_dir.join("best.safetensors")).unwrap();
    let out = run(trainer()
        .arg("train")
        .arg("--resume")
        .arg(&run_dir)
        .args(["--model", "resnet18"]));
    assert_clean_failure(&out, "tf_efficientnet_lite0");
    assert!(stderr_of(&out).contains("resnet18"), "{}", stderr_of(&out));
    assert_eq!(
        std::fs::read(run_dir.join("best.safetensors")).unwrap(),
        before,
        "the run is untouched"
    );
}
