//! `report.html` renders in a real browser: a tiny run's report, screenshotted by headless Chromium, is not blank
//! and shows the training curves, the confusion matrix and the thumbnails.
//!
//! Ignored by default (CI machines may lack Chromium): `cargo test --release -p tests --test report_screenshot --
//! --ignored`. When run, it fails (never skips) if Chromium is missing. `GRAFT_SCREENSHOT_OUT=FILE` keeps the
//! screenshot; `CHROMIUM=PATH` picks the browser (default: `chromium`, then `chromium-browser`, on `PATH`).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{log_of, require, run, subset, trainer};

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser"] {
        if let Some(found) = std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()) {
            return found;
        }
    }
    panic!("Chromium is not installed (looked for chromium and chromium-browser on PATH; set CHROMIUM=...)");
}

/// The most frequent strongly coloured pixel of `img` and how many pixels have it (within `tol` per channel).
fn dominant_colour(img: &image::RgbImage) -> ([u8; 3], usize) {
    let mut counts: HashMap<[u8; 3], usize> = HashMap::new();
    for p in img.pixels() {
        let [r, g, b] = p.0;
        if r.max(g).max(b) - r.min(g).min(b) > 60 {
            *counts.entry(p.0).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|&(c, n)| (n, c))
        .expect("a coloured plot")
}

fn count_near(img: &image::RgbImage, c: [u8; 3], tol: i32) -> usize {
    img.pixels()
        .filter(|p| (0..3).all(|i| (p.0[i] as i32 - c[i] as i32).abs() <= tol))
        .count()
}

#[test]
#[ignore = "needs Chromium: cargo test --release -p tests --test report_screenshot -- --ignored"]
fn report_html_renders_with_plots_in_headless_chromium() {
    let browser = chromium();
    let (Some(weights), Some(data)) = (
        require("weights/tf_efficientnet_lite0.safetensors"),
        require("data/hymenoptera"),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let out = run(trainer()
        .env("GRAFT_CACHE_DIR", tmp.path().join("cache"))
        .args([
            "train",
            "--model",
            "tf_efficientnet_lite0",
            "--epochs",
            "4",
            "--batch-size",
            "8",
            "--lr",
            "0.01",
        ])
        .arg("--weights")
        .arg(&weights)
        .arg("--data")
        .arg(subset(&data.join("train"), &tmp.path().join("train"), 12))
        .arg("--val")
        .arg(subset(&data.join("val"), &tmp.path().join("val"), 12))
        .arg("--out")
        .arg(&run_dir));
    assert!(out.status.success(), "train failed:\n{}", log_of(&out));

    let shot = tmp.path().join("report.png");
    let report = run_dir.join("report.html");
    let out = Command::new(&browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1200,2000")
        .arg(format!("file://{}", report.display()))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", browser.display()));
    assert!(
        out.status.success() && shot.is_file(),
        "chromium failed ({}):\n{}",
        out.status,
        log_of(&out)
    );
    if let Some(keep) = std::env::var_os("GRAFT_SCREENSHOT_OUT") {
        std::fs::copy(&shot, Path::new(&keep)).expect("copy the screenshot");
    }
    let page = image::open(&shot).expect("the screenshot decodes").to_rgb8();
    assert_eq!(page.dimensions(), (1200, 2000));

    // Not blank: many colours, and ink in most 100-pixel bands of the upper page.
    let colours: std::collections::HashSet<[u8; 3]> = page.pixels().map(|p| p.0).collect();
    assert!(colours.len() > 1000, "only {} colours", colours.len());
    let inked = |y0: u32| {
        let non_white = (y0..y0 + 100)
            .flat_map(|y| (0..1200).map(move |x| (x, y)))
            .filter(|&(x, y)| page.get_pixel(x, y).0.iter().any(|&c| c < 200))
            .count();
        non_white > 1200
    };
    let bands = (0..12).filter(|&b| inked(b * 100)).count();
    assert!(bands >= 9, "only {bands} of the first 12 bands have content");

    // The embedded plots are drawn: each PNG's dominant colour covers as many page pixels as it has.
    for png in ["curves.png", "confusion_matrix.png"] {
        let plot = image::open(run_dir.join(png)).unwrap().to_rgb8();
        let (colour, n) = dominant_colour(&plot);
        let seen = count_near(&page, colour, 12);
        println!("{png}: colour {colour:?} on {n} plot pixels, {seen} page pixels");
        assert!(
            seen * 10 >= n * 8,
            "{png}'s colour {colour:?}: {seen} page pixels for {n} in the plot"
        );
    }
}
