//! `backbones::pretrained`: registry name → weights (an explicit file, or the Hub cache) → built backbone.

use std::collections::HashMap;
use std::path::Path;

use backbones::hub::DownloadOptions;
use backbones::pretrained::{resolve, WeightsSource};
use backbones::weights::{file_sha256, repo_folder};
use backbones::{pretrained, registry, Error, ParamStore};
use candle_core::{DType, Device, Tensor};

/// A resnet18 weights file (default-initialised, `conv1.weight` random) at `path`; its `conv1.weight`.
fn write_resnet18(path: &Path) -> Vec<f32> {
    let store = ParamStore::empty(DType::F32, &Device::Cpu);
    let b = backbones::zoo::build("resnet18", &store).unwrap();
    let mut tensors: HashMap<String, Tensor> = b.store().state_dict().into_iter().collect();
    let conv = Tensor::randn(0f32, 0.1, (64, 3, 7, 7), &Device::Cpu).unwrap();
    tensors.insert("conv1.weight".into(), conv.clone());
    candle_core::safetensors::save(&tensors, path).unwrap();
    conv.flatten_all().unwrap().to_vec1().unwrap()
}

fn conv1(p: &backbones::Pretrained) -> Vec<f32> {
    p.backbone.store().state_dict()["conv1.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn an_explicit_file_builds_the_registry_model_in_eval_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r18.safetensors");
    let expected = write_resnet18(&path);
    let p = pretrained("resnet18", &WeightsSource::File(path.clone()), &Device::Cpu).unwrap();
    assert_eq!(p.spec.name, "resnet18");
    assert_eq!(p.weights, std::fs::canonicalize(&path).unwrap());
    assert_eq!(p.sha256, file_sha256(&path).unwrap());
    assert_eq!(conv1(&p), expected);
    assert_eq!(p.backbone.num_features(), 512);
    let flag = p.backbone.store().batchnorm_train_flag();
    assert!(
        !flag.load(std::sync::atomic::Ordering::Relaxed),
        "BatchNorm in eval mode"
    );
    assert!(p.backbone.store().params().iter().all(|q| !q.is_trainable()));
    let x = Tensor::ones((1, 3, 64, 64), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(p.backbone.forward_pooled(&x, false).unwrap().dims(), [1, 512]);
}

#[test]
fn unknown_names_missing_files_and_misfit_weights_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let e = pretrained("resnet19", &WeightsSource::hub(), &Device::Cpu).unwrap_err();
    assert!(
        matches!(e, Error::UnknownModel { .. }) && e.to_string().contains("resnet18"),
        "{e}"
    );
    let missing = dir.path().join("none.safetensors");
    let e = pretrained("resnet18", &WeightsSource::File(missing), &Device::Cpu).unwrap_err();
    assert!(
        matches!(e, Error::Weights { .. }) && e.to_string().contains("none.safetensors"),
        "{e}"
    );
    // resnet18's weights do not fit resnet34: one line naming the file and the model.
    let path = dir.path().join("r18.safetensors");
    write_resnet18(&path);
    let e = pretrained("resnet34", &WeightsSource::File(path), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("r18.safetensors") && e.contains("resnet34") && !e.contains('\n'),
        "{e}"
    );
}

#[test]
fn the_hub_source_finds_the_registry_file_in_the_cache_without_network() {
    let cache = tempfile::tempdir().unwrap();
    let spec = registry::get("resnet18").unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = cache.path().join(repo_folder(&spec.hub.repo));
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join(&spec.hub.revision), commit).unwrap();
    let file = snap.join(&spec.hub.file);
    let expected = write_resnet18(&file);
    let mut opts = DownloadOptions::from_env()
        .with_cache_dir(cache.path())
        .with_endpoint("http://127.0.0.1:9");
    opts.offline = true;
    let source = WeightsSource::Hub(opts.clone());
    let resolved = resolve(&spec, &source).unwrap();
    assert_eq!(resolved.sha256, file_sha256(&file).unwrap());
    let p = pretrained("resnet18", &source, &Device::Cpu).unwrap();
    assert_eq!(p.weights, std::fs::canonicalize(&file).unwrap());
    assert_eq!(conv1(&p), expected);
    // Not in the cache and offline: an error naming the model, no download attempted.
    let e = pretrained("vgg16", &WeightsSource::Hub(opts), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`vgg16`") && e.contains("HF_HUB_OFFLINE"), "{e}");
}
