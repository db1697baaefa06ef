//! Fine-tuning the last stage of Lite0 (real weights) on hymenoptera for a few epochs keeps val accuracy ≥ 0.90 and
//! lowers the training loss.

mod common;

use common::{require, run, trainer};

#[test]
fn fine_tune_last_stage_keeps_accuracy_and_lowers_loss() {
    let (Some(weights), Some(data)) = (
        require("weights/tf_efficientnet_lite0.safetensors"),
        require("data/hymenoptera"),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("ft");
    let mut cmd = trainer();
    cmd.env("GRAFT_CACHE_DIR", tmp.path().join("cache"))
        .args(["train", "--model", "tf_efficientnet_lite0"]);
    cmd.arg("--weights").arg(&weights);
    cmd.arg("--data")
        .arg(data.join("train"))
        .arg("--val")
        .arg(data.join("val"));
    cmd.args([
        "--mode",
        "fine-tune",
        "--unfreeze",
        "1",
        "--freeze-epochs",
        "1",
        "--epochs",
        "3",
    ]);
    cmd.args(["--batch-size", "16", "--augment", "none", "--seed", "1", "--out"])
        .arg(&run_dir);
    let out = run(&mut cmd);
    assert!(out.status.success(), "fine-tune run failed");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("metrics.json")).unwrap()).unwrap();
    let history = metrics["history"].as_array().expect("history");
    assert_eq!(history.len(), 3);
    let losses: Vec<f64> = history.iter().map(|e| e["train_loss"].as_f64().unwrap()).collect();
    let accs: Vec<f64> = history.iter().map(|e| e["val_acc"].as_f64().unwrap()).collect();
    println!("fine-tune last stage: train losses {losses:?}, val accuracies {accs:?}");
    assert!(losses[2] < losses[0], "training loss {losses:?} does not go down");
    for (epoch, acc) in accs.iter().enumerate() {
        assert!(*acc >= 0.90, "epoch {} val accuracy {acc} < 0.90", epoch + 1);
    }
    assert!(metrics["val_accuracy"].as_f64().unwrap() >= 0.90);
}
