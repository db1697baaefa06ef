//! Test helpers shared by the EfficientNet / MobileNetV3 tests: parity fixtures and manifest stores.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use backbones::ParamStore;
use candle_core::{DType, Device, Tensor};

/// A parity fixture: the store over its weights and the reference tensors.
pub struct Fixture {
    /// Store over the fixture's weights (f32).
    pub store: ParamStore,
    /// Preprocessed input, 4×3×224×224.
    pub input: Tensor,
    /// Reference pooled features.
    pub features: Tensor,
    /// Reference logits.
    pub logits: Tensor,
}

fn parity_entry(name: &str) -> Option<serde_json::Value> {
    let index = data::assets::require("parity/index.json")?;
    let text = std::fs::read_to_string(&index).expect("read index.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("parse index.json");
    Some(v.get(name).unwrap_or_else(|| panic!("fixture {name} not in index.json")).clone())
}

/// Resolve a path given relative to `parity/` (may start with `../`).
fn parity_path(rel: &str) -> Option<PathBuf> {
    match rel.strip_prefix("../") {
        Some(rest) => data::assets::require(rest),
        None => data::assets::require(&format!("parity/{rel}")),
    }
}

/// Load the fixture `name` from `parity/index.json`, or `None` (skipped) when the assets are absent.
pub fn fixture(name: &str) -> Option<Fixture> {
    let entry = parity_entry(name)?;
    let weights = parity_path(entry["weights_file"].as_str().expect("weights_file"))?;
    let reference = parity_path(entry["reference_file"].as_str().expect("reference_file"))?;
    let store = ParamStore::from_safetensors(&weights, DType::F32, &Device::Cpu).expect("load weights");
    let refs = candle_core::safetensors::load(&reference, &Device::Cpu).expect("load reference");
    let get = |k: &str| refs.get(k).unwrap_or_else(|| panic!("{k} missing")).to_dtype(DType::F32).unwrap();
    Some(Fixture { store, input: get("input"), features: get("features"), logits: get("logits") })
}

/// max |a − b|.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// Assert the parity criterion: max |ours − ref| ≤ 1e-3 · max(1, max |ref|).
pub fn assert_close(what: &str, ours: &Tensor, reference: &Tensor) {
    let scale = reference.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    let diff = max_abs_diff(ours, reference);
    let tol = 1e-3 * scale.max(1.0);
    println!("{what}: max |diff| = {diff:.3e} (max |ref| = {scale:.3}, tolerance {tol:.3e})");
    assert!(diff <= tol, "{what}: max |diff| {diff} > {tol}");
}

/// The manifest's tensor names and shapes for `arch`, or `None` (skipped) when absent.
pub fn manifest(arch: &str) -> Option<BTreeMap<String, Vec<usize>>> {
    let path = data::assets::require("parity/timm_manifest.json")?;
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let tensors = v[arch]["tensors"].as_object().unwrap_or_else(|| panic!("{arch} not in manifest"));
    Some(
        tensors
            .iter()
            .map(|(k, s)| {
                let shape = s.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
                (k.clone(), shape)
            })
            .collect(),
    )
}

/// A store over zeros of exactly the manifest's names and shapes (running variances filled with ones).
pub fn manifest_store(arch: &str) -> Option<(ParamStore, BTreeMap<String, Vec<usize>>)> {
    let m = manifest(arch)?;
    let tensors: HashMap<String, Tensor> = m
        .iter()
        .map(|(k, s)| {
            let t = if k.ends_with("running_var") {
                Tensor::ones(s.as_slice(), DType::F32, &Device::Cpu)
            } else {
                Tensor::zeros(s.as_slice(), DType::F32, &Device::Cpu)
            };
            (k.clone(), t.unwrap())
        })
        .collect();
    Some((ParamStore::from_tensors(tensors, DType::F32, &Device::Cpu), m))
}

/// Build `arch` over the manifest store and check names, shapes and that nothing is unused.
pub fn check_manifest(arch: &str) {
    let Some((store, m)) = manifest_store(arch) else { return };
    let model = backbones::zoo::build(arch, &store).expect("build");
    assert!(model.has_classifier(), "{arch}: classifier should be built when its weights are present");
    assert!(store.unused().is_empty(), "{arch}: unused checkpoint tensors {:?}", store.unused());
    let created: BTreeMap<String, Vec<usize>> =
        store.state_dict().into_iter().map(|(k, t)| (k, t.dims().to_vec())).collect();
    let missing: Vec<_> = m.keys().filter(|k| !created.contains_key(*k)).collect();
    let extra: Vec<_> = created.keys().filter(|k| !m.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "{arch}: missing {missing:?}, extra {extra:?}");
    assert_eq!(created, m, "{arch}: shapes differ from the manifest");
}

/// Run the parity check of fixture `name` built as `arch`, in eval mode.
pub fn check_parity(name: &str, arch: &str) {
    let Some(f) = fixture(name) else { return };
    let model = backbones::zoo::build(arch, &f.store).expect("build");
    assert!(f.store.unused().is_empty(), "unused: {:?}", f.store.unused());
    let t = std::time::Instant::now();
    let feats = model.forward_pooled(&f.input, false).expect("forward");
    println!("{name}: forward of 4×3×224×224 took {:.2?}", t.elapsed());
    assert_eq!(feats.dims(), &[4, model.num_features()]);
    assert_close(&format!("{name} features"), &feats, &f.features);
    let logits = model.classify(&feats).expect("classify").expect("classifier present");
    assert_close(&format!("{name} logits"), &logits, &f.logits);
}
