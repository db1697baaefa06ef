//! `trainer lr-find` end to end: real Lite0 weights on a small hymenoptera subset; the plot decodes, the suggested
//! rate is finite and inside the swept range, in text and JSON output.

mod common;

use common::{json_events, log_of, require, run, subset, trainer};

/// The rate in a `suggested lr 3.16e-3` message.
fn suggested(message: &str) -> f64 {
    let rate = message
        .strip_prefix("suggested lr ")
        .unwrap_or_else(|| panic!("not a suggestion: {message}"));
    rate.trim().parse().unwrap_or_else(|e| panic!("bad rate `{rate}`: {e}"))
}

#[test]
fn lr_find_plots_the_sweep_and_suggests_a_rate_inside_it() {
    let (Some(weights), Some(data)) = (
        require("weights/tf_efficientnet_lite0.safetensors"),
        require("data/hymenoptera/train"),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = subset(&data, &tmp.path().join("data"), 12);
    let plot = tmp.path().join("lr.png");
    let (start, end) = (1e-5, 1.0);
    let sweep = |json: bool| {
        let mut cmd = trainer();
        cmd.env("GRAFT_CACHE_DIR", tmp.path().join("cache"));
        if json {
            cmd.args(["--log-format", "json"]);
        }
        cmd.args([
            "lr-find",
            "--model",
            "tf_efficientnet_lite0",
            "--batch-size",
            "8",
            "--steps",
            "40",
        ])
        .args(["--start-lr", &start.to_string(), "--end-lr", &end.to_string()])
        .arg("--weights")
        .arg(&weights)
        .arg("--data")
        .arg(&data)
        .arg("--plot")
        .arg(&plot);
        run(&mut cmd)
    };

    let out = sweep(false);
    assert!(out.status.success(), "lr-find failed:\n{}", log_of(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "a `wrote` line and the suggestion:\n{stdout}");
    assert_eq!(lines[0], format!("wrote {}", plot.display()));
    let lr = suggested(lines[1]);
    println!("suggested lr {lr:e}");
    assert!(
        lr.is_finite() && (start..=end).contains(&lr),
        "{lr} outside [{start}, {end}]"
    );
    let img = image::open(&plot).expect("the plot decodes").to_rgb8();
    assert_eq!(img.dimensions(), (800, 450));
    let colours: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(
        colours.len() > 20,
        "a drawn plot, not a blank image: {} colours",
        colours.len()
    );

    // JSON: an artifact event and an info event with the same suggestion (features now come from the cache).
    std::fs::remove_file(&plot).unwrap();
    let out = sweep(true);
    assert!(out.status.success(), "{}", log_of(&out));
    let events = json_events(&out.stdout);
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["artifact", "info"], "{events:?}");
    assert_eq!(events[0]["path"], plot.to_str().unwrap());
    assert_eq!(
        suggested(events[1]["message"].as_str().unwrap()),
        lr,
        "same seed, same sweep"
    );
    assert!(image::open(&plot).is_ok());
}
