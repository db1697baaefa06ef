//! Zero-shot ImageNet classification of the ants/bees validation set with the real Lite0 weights:
//! top-1 must be class 310 (`ant`) for ants and 309 (`bee`) for bees on at least 122 of 153 images (timm: 130).

use std::path::{Path, PathBuf};

use backbones::{zoo, ParamStore};
use candle_core::{DType, Device, Tensor};
use data::transforms::Pipeline;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

const ANT: u32 = 310;
const BEE: u32 = 309;
const SIZE: usize = 224;

/// The registry's eval transform for Lite0 (timm's: resize shorter side to 256 bicubic antialiased, center-crop
/// 224, mean = std = 0.5), CHW f32.
fn preprocess(pipeline: &Pipeline, path: &Path) -> Vec<f32> {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("decode {}: {e}", path.display()))
        .to_rgb8();
    pipeline.apply(img, &mut ChaCha8Rng::seed_from_u64(0))
}

fn images(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

#[test]
fn lite0_zero_shot_on_hymenoptera_val() {
    let Some(weights) = tests::assets::require("weights/tf_efficientnet_lite0.safetensors") else {
        return;
    };
    let Some(val) = tests::assets::require("data/hymenoptera/val") else {
        return;
    };
    let store = ParamStore::from_safetensors(&weights, DType::F32, &Device::Cpu).unwrap();
    let model = zoo::build("tf_efficientnet_lite0", &store).unwrap();
    let spec = backbones::registry::get("tf_efficientnet_lite0").unwrap();
    assert_eq!(spec.preprocess.input_size, [SIZE, SIZE]);
    let pipeline = Pipeline::eval(&spec.preprocess);
    assert!(store.unused().is_empty());

    let mut samples: Vec<(PathBuf, u32)> = images(&val.join("ants")).into_iter().map(|p| (p, ANT)).collect();
    samples.extend(images(&val.join("bees")).into_iter().map(|p| (p, BEE)));
    assert_eq!(samples.len(), 153);

    let (mut correct, mut ants, mut bees) = (0, 0, 0);
    for batch in samples.chunks(16) {
        let mut pixels = Vec::with_capacity(batch.len() * 3 * SIZE * SIZE);
        for (p, _) in batch {
            pixels.extend(preprocess(&pipeline, p));
        }
        let x = Tensor::from_vec(pixels, (batch.len(), 3, SIZE, SIZE), &Device::Cpu).unwrap();
        let logits = model.forward_logits(&x).unwrap().expect("Lite0 has its classifier");
        let top1: Vec<u32> = logits.argmax(1).unwrap().to_vec1().unwrap();
        for ((_, want), got) in batch.iter().zip(top1) {
            if got == *want {
                correct += 1;
                if got == ANT {
                    ants += 1
                } else {
                    bees += 1
                }
            }
        }
    }
    println!("zero-shot Lite0: {correct}/153 top-1 correct ({ants}/70 ants as 310, {bees}/83 bees as 309)");
    assert!(correct >= 122, "only {correct}/153 images classified as ant/bee");
}
