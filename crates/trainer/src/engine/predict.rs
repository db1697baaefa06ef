//! `trainer predict`: top-k classes per image file, optionally averaging the image and its horizontal flip.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use data::transforms::Pipeline;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::train::best_path;
use crate::backend::ModelSource;
use crate::error::UsageError;
use crate::predict_out::{ClassProb, FilePrediction};
use training::export::{self, ExportedModel};

/// Load the model `source` names.
pub fn load_source(source: &ModelSource, device: &Device) -> anyhow::Result<ExportedModel> {
    match source {
        ModelSource::Run(dir) => {
            let best = best_path(dir);
            if !best.is_file() {
                return Err(UsageError(format!(
                    "--run {}: no best.safetensors (not a finished run folder)",
                    dir.display()
                ))
                .into());
            }
            Ok(export::load(&best, device)?)
        }
        ModelSource::File(f) => export::load(f, device).map_err(|e| UsageError(format!("--model: {e}")).into()),
    }
}

/// The preprocessed pixels of `path` (and of its mirror image with `tta`), or why it cannot be read.
fn prepare(path: &std::path::Path, pipeline: &Pipeline, tta: bool) -> Result<Vec<Vec<f32>>, String> {
    let img = data::decode_image(path).map_err(|e| e.to_string())?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut views = vec![pipeline.apply(img.clone(), &mut rng)];
    if tta {
        views.push(pipeline.apply(image::imageops::flip_horizontal(&img), &mut rng));
    }
    Ok(views)
}

/// Top-`top_k` predictions for each file, in order; unreadable files get their error.
pub fn predict(
    model: &ExportedModel,
    device: &Device,
    files: &[PathBuf],
    top_k: usize,
    tta: bool,
    batch_size: usize,
) -> anyhow::Result<Vec<FilePrediction>> {
    let pipeline = Pipeline::eval(&model.meta.preprocess);
    let (h, w) = pipeline.output_hw;
    let classes = &model.meta.classes;
    let mut out = Vec::with_capacity(files.len());
    for chunk in files.chunks(batch_size.max(1)) {
        let prepared: Vec<Result<Vec<Vec<f32>>, String>> =
            chunk.par_iter().map(|p| prepare(p, &pipeline, tta)).collect();
        let mut pixels = Vec::new();
        let mut rows = 0;
        for views in prepared.iter().flatten() {
            for v in views {
                pixels.extend_from_slice(v);
                rows += 1;
            }
        }
        let probs: Vec<Vec<f32>> = if rows > 0 {
            let x = Tensor::from_vec(pixels, (rows, 3, h, w), device)?;
            model.probabilities(&x)?.to_device(&Device::Cpu)?.to_vec2()?
        } else {
            Vec::new()
        };
        let mut next = probs.into_iter();
        for (path, prep) in chunk.iter().zip(prepared) {
            let result = match prep {
                Err(e) => Err(e),
                Ok(views) => {
                    let mut mean = vec![0f32; classes.len()];
                    for _ in 0..views.len() {
                        // Invariant: one probability row per prepared view.
                        let p = next.next().expect("a row per view");
                        for (m, v) in mean.iter_mut().zip(p) {
                            *m += v / views.len() as f32;
                        }
                    }
                    let mut ranked: Vec<(usize, f32)> = mean.into_iter().enumerate().collect();
                    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                    Ok(ranked
                        .into_iter()
                        .take(top_k)
                        .map(|(c, p)| ClassProb {
                            class: classes[c].clone(),
                            probability: p,
                        })
                        .collect())
                }
            };
            out.push(FilePrediction {
                path: path.clone(),
                result,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use backbones::ParamStore;
    use candle_core::DType;
    use heads::{Head, HeadConfig, Task};
    use training::export::ModelMeta;

    /// A resnet18 with zero weights except a random first conv, and a seeded 3-class linear head.
    fn tiny_model() -> ExportedModel {
        let dev = Device::Cpu;
        let store = ParamStore::empty(DType::F32, &dev);
        let backbone = backbones::zoo::build("resnet18", &store).unwrap();
        let conv = store.params().into_iter().find(|p| p.name() == "conv1.weight").unwrap();
        conv.set(&Tensor::randn(0f32, 0.1, conv.tensor().dims(), &dev).unwrap())
            .unwrap();
        let spec = backbones::registry::get("resnet18").unwrap();
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let head_cfg = HeadConfig::linear(Task::MultiClass, classes.clone(), backbone.num_features());
        let head = Head::seeded(head_cfg.clone(), &dev, 7).unwrap();
        let meta = ModelMeta {
            model: spec.name.clone(),
            architecture: spec.architecture.clone(),
            classes,
            preprocess: spec.preprocess.clone(),
            head: head_cfg,
            mode: "fine-tune".into(),
            weights: None,
            backbone_included: true,
        };
        ExportedModel { meta, backbone, head }
    }

    #[test]
    fn unreadable_files_are_reported_and_the_others_predicted() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.png");
        image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 90]))
            .save(&good)
            .unwrap();
        let bad = dir.path().join("bad.jpg");
        std::fs::write(&bad, b"not an image").unwrap();
        let m = tiny_model();
        let files = vec![bad.clone(), good.clone()];
        let preds = predict(&m, &Device::Cpu, &files, 2, false, 32).unwrap();
        assert_eq!(preds.len(), 2);
        assert_eq!(preds[0].path, bad);
        assert!(preds[0].result.is_err());
        let top = preds[1].result.as_ref().unwrap();
        assert_eq!(top.len(), 2);
        assert!(top[0].probability >= top[1].probability);
        assert!(top.iter().all(|c| (0.0..=1.0).contains(&c.probability)));

        // TTA averages two views: still a probability distribution over the classes.
        let tta = predict(&m, &Device::Cpu, &files[1..], 3, true, 32).unwrap();
        let all = tta[0].result.as_ref().unwrap();
        let sum: f32 = all.iter().map(|c| c.probability).sum();
        assert_eq!(all.len(), 3);
        assert!((sum - 1.0).abs() < 1e-4, "{sum}");
    }
}
