//! `--recipe keras-vgg16-binary`: the Keras tutorial's settings reach the run's resolved `config.toml`, a missing
//! weights file is one line (and no run folder), and the recipe's whole pipeline (VGG16 trunk, flattened feature
//! map, MLP head with dropout, one sigmoid output, Keras augmentation, Adam) trains end to end on a tiny subset
//! with seeded random VGG16 trunk weights (no real VGG16 weights are available offline).

mod common;

use common::{log_of, require, run, subset, trainer};

#[test]
fn keras_recipe_without_weights_is_one_line_and_leaves_no_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for class in ["cats", "dogs"] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        image::RgbImage::from_pixel(20, 20, image::Rgb([1, 2, 3]))
            .save(data.join(class).join("a.png"))
            .unwrap();
    }
    let project = tmp.path().join("runs");
    let out = run(trainer()
        .args(["train", "--recipe", "keras-vgg16-binary", "--data"])
        .arg(&data)
        .args(["--weights", "/no/such/vgg16.safetensors", "--project"])
        .arg(&project));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--weights /no/such/vgg16.safetensors"), "{err}");
    assert!(!project.exists(), "no run folder for a failed start");
}

#[test]
fn keras_recipe_resolves_to_the_tutorial_settings_and_trains() {
    let (Some(weights), Some(data)) = (
        require("parity/vgg16_features.weights.safetensors"),
        require("data/hymenoptera"),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let train = subset(&data.join("train"), &tmp.path().join("train"), 3);
    let val = subset(&data.join("val"), &tmp.path().join("val"), 2);
    let run_dir = tmp.path().join("run");
    let out = run(trainer()
        .env("GRAFT_CACHE_DIR", tmp.path().join("cache"))
        .args(["train", "--recipe", "keras-vgg16-binary", "--epochs", "1", "--weights"])
        .arg(&weights)
        .arg("--data")
        .arg(&train)
        .arg("--val")
        .arg(&val)
        .arg("--out")
        .arg(&run_dir));
    assert!(out.status.success(), "train failed:\n{}", log_of(&out));

    // The resolved configuration: the recipe's values, the typed --epochs on top.
    let text = std::fs::read_to_string(run_dir.join("config.toml")).expect("config.toml");
    let cfg: toml::Table = toml::from_str(&text).expect("config.toml parses");
    let get = |k: &str| {
        cfg.get(k)
            .unwrap_or_else(|| panic!("config.toml lacks {k}:\n{text}"))
            .clone()
    };
    assert_eq!(get("recipe").as_str(), Some("keras-vgg16-binary"));
    assert_eq!(get("model").as_str(), Some("vgg16"));
    assert_eq!(get("mode").as_str(), Some("feature-extract"));
    assert_eq!(get("binary").as_bool(), Some(true));
    assert_eq!(get("pool").as_str(), Some("flatten"));
    assert_eq!(get("head").as_str(), Some("mlp:128"));
    assert_eq!(get("dropout").as_float(), Some(0.5));
    assert_eq!(get("augment").as_str(), Some("keras"));
    assert_eq!(get("optimizer").as_str(), Some("adam"));
    assert_eq!(get("lr").as_float(), Some(1e-4));
    assert_eq!(get("batch_size").as_integer(), Some(32));
    assert_eq!(get("epochs").as_integer(), Some(1), "typed flag beats the recipe's 20");

    // It trained: one epoch recorded, a binary model over the two classes, finite losses.
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["classes"], serde_json::json!(["ants", "bees"]));
    let history = metrics["history"].as_array().expect("history");
    assert_eq!(history.len(), 1);
    assert!(
        history[0]["train_loss"].as_f64().is_some_and(f64::is_finite),
        "{metrics}"
    );
    assert!(history[0]["val_loss"].as_f64().is_some_and(f64::is_finite), "{metrics}");
    for f in ["best.safetensors", "report.html", "curves.png", "confusion_matrix.png"] {
        assert!(run_dir.join(f).is_file(), "run folder lacks {f}");
    }
}
