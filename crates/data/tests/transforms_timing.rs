//! Timing of the preprocessing pipelines on a real photo (ignored by default; prints, asserts nothing on speed).
//!
//! Run: `cargo test --release -p data --test transforms_timing -- --ignored --nocapture`

use data::transforms::resize::resize;
use data::transforms::{Pipeline, Preset};
use data::{Interpolation, PreprocessConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

#[test]
#[ignore = "timing report, run on demand"]
fn time_pipelines() {
    let Some(path) = tests::assets::require("data/hymenoptera/val/ants/10308379_1b6c72e180.jpg") else {
        return;
    };
    let img = image::open(&path).unwrap().to_rgb8();
    println!("image {}x{}", img.width(), img.height());
    let n = 50;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let lite0 = PreprocessConfig {
        interpolation: Interpolation::Bicubic,
        ..Default::default()
    };
    let pipelines: Vec<(&str, Pipeline)> = vec![
        ("timm eval bicubic", Pipeline::eval(&lite0)),
        ("timm train bicubic", Preset::Timm.train(&lite0)),
        ("torchvision eval", Pipeline::torchvision_eval()),
        ("keras train", Pipeline::keras_train()),
    ];
    for (name, p) in &pipelines {
        let t = Instant::now();
        for _ in 0..n {
            let out = p.apply(img.clone(), &mut rng);
            assert_eq!(out.len(), 3 * 224 * 224);
        }
        println!("{name}: {:.2} ms/image", t.elapsed().as_secs_f64() * 1e3 / n as f64);
    }
    for interp in [Interpolation::Nearest, Interpolation::Bilinear, Interpolation::Bicubic] {
        let t = Instant::now();
        for _ in 0..n {
            let out = resize(img.clone(), 256, 341, interp);
            assert_eq!(out.height(), 256);
        }
        println!(
            "resize to 256x341 {interp:?}: {:.2} ms",
            t.elapsed().as_secs_f64() * 1e3 / n as f64
        );
    }
}
