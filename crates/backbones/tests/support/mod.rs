//! Test helpers shared by the backbone tests: parity fixtures, the parity criterion and manifest stores.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use backbones::ParamStore;
use candle_core::{DType, Device, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

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
    let index = tests::assets::require("parity/index.json")?;
    let text = std::fs::read_to_string(&index).expect("read index.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("parse index.json");
    Some(
        v.get(name)
            .unwrap_or_else(|| panic!("fixture {name} not in index.json"))
            .clone(),
    )
}

/// Resolve a path given relative to `parity/` (may start with `../`).
fn parity_path(rel: &str) -> Option<PathBuf> {
    match rel.strip_prefix("../") {
        Some(rest) => tests::assets::require(rest),
        None => tests::assets::require(&format!("parity/{rel}")),
    }
}

/// Load the fixture `name` from `parity/index.json`, or `None` (skipped) when the assets are absent.
pub fn fixture(name: &str) -> Option<Fixture> {
    let entry = parity_entry(name)?;
    let weights = parity_path(entry["weights_file"].as_str().expect("weights_file"))?;
    let reference = parity_path(entry["reference_file"].as_str().expect("reference_file"))?;
    let store = ParamStore::from_safetensors(&weights, DType::F32, &Device::Cpu).expect("load weights");
    let refs = candle_core::safetensors::load(&reference, &Device::Cpu).expect("load reference");
    let get = |k: &str| {
        refs.get(k)
            .unwrap_or_else(|| panic!("{k} missing"))
            .to_dtype(DType::F32)
            .unwrap()
    };
    Some(Fixture {
        store,
        input: get("input"),
        features: get("features"),
        logits: get("logits"),
    })
}

/// Uniform(−1, 1) values drawn as f64 from `rng`, as a CPU tensor of `dtype`.
pub fn randn(rng: &mut ChaCha8Rng, shape: &[usize], dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// max |a − b| as f64, for tensors of any float dtype (the shapes must agree).
pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
    d.to_dtype(DType::F64).unwrap().to_scalar().unwrap()
}

/// max |a − b|.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// max |t|.
pub fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Assert the parity criterion: max |ours − ref| ≤ 1e-3 · max(1, max |ref|).
pub fn assert_close(what: &str, ours: &Tensor, reference: &Tensor) {
    let scale = max_abs(reference);
    let diff = max_abs_diff(ours, reference);
    let tol = 1e-3 * scale.max(1.0);
    println!("{what}: max |diff| = {diff:.3e} (max |ref| = {scale:.3}, tolerance {tol:.3e})");
    assert!(diff <= tol, "{what}: max |diff| {diff} > {tol}");
}

/// The manifest's tensor names and shapes for `arch`, or `None` (skipped) when absent.
pub fn manifest(arch: &str) -> Option<BTreeMap<String, Vec<usize>>> {
    let path = tests::assets::require("parity/timm_manifest.json")?;
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let tensors = v[arch]["tensors"]
        .as_object()
        .unwrap_or_else(|| panic!("{arch} not in manifest"));
    Some(
        tensors
            .iter()
            .map(|(k, s)| {
                let shape = s
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect();
                (k.clone(), shape)
            })
            .collect(),
    )
}

/// A store over zeros of exactly these names and shapes (running variances filled with ones).
pub fn store_from(m: &BTreeMap<String, Vec<usize>>) -> ParamStore {
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
    ParamStore::from_tensors(tensors, DType::F32, &Device::Cpu)
}

/// A store over the manifest's names and shapes for `arch` (see [`store_from`]), with the manifest.
pub fn manifest_store(arch: &str) -> Option<(ParamStore, BTreeMap<String, Vec<usize>>)> {
    let m = manifest(arch)?;
    Some((store_from(&m), m))
}

/// Build `arch` over the manifest store and check names, shapes and that nothing is unused.
pub fn check_manifest(arch: &str) {
    let Some((store, m)) = manifest_store(arch) else {
        return;
    };
    let model = backbones::zoo::build(arch, &store).expect("build");
    assert!(
        model.has_classifier(),
        "{arch}: classifier should be built when its weights are present"
    );
    assert!(
        store.unused().is_empty(),
        "{arch}: unused checkpoint tensors {:?}",
        store.unused()
    );
    let created: BTreeMap<String, Vec<usize>> = store
        .state_dict()
        .into_iter()
        .map(|(k, t)| (k, t.dims().to_vec()))
        .collect();
    let missing: Vec<_> = m.keys().filter(|k| !created.contains_key(*k)).collect();
    let extra: Vec<_> = created.keys().filter(|k| !m.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{arch}: missing {missing:?}, extra {extra:?}"
    );
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

/// A store over seeded random values with the manifest's names and shapes (BN near identity, fan-in scaled convs).
pub fn random_store(arch: &str, seed: u64) -> Option<ParamStore> {
    use rand::{Rng, SeedableRng};
    let m = manifest(arch)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let tensors: HashMap<String, Tensor> = m
        .iter()
        .map(|(k, s)| {
            let n: usize = s.iter().product();
            let values: Vec<f32> = if s.len() >= 2 {
                let fan_in: usize = s[1..].iter().product();
                let a = (3.0 / fan_in as f32).sqrt();
                (0..n).map(|_| rng.gen_range(-a..a)).collect()
            } else if k.ends_with("running_var") || (k.contains("bn") && k.ends_with("weight")) {
                (0..n).map(|_| rng.gen_range(0.8f32..1.2)).collect()
            } else {
                (0..n).map(|_| rng.gen_range(-0.1f32..0.1)).collect()
            };
            (k.clone(), Tensor::from_vec(values, s.as_slice(), &Device::Cpu).unwrap())
        })
        .collect();
    Some(ParamStore::from_tensors(tensors, DType::F32, &Device::Cpu))
}

/// A seeded random input batch N×3×H×W.
pub fn random_input(n: usize, hw: usize, seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n * 3 * hw * hw).map(|_| rng.gen_range(-1f32..1.0)).collect();
    Tensor::from_vec(v, (n, 3, hw, hw), &Device::Cpu).unwrap()
}

fn in_stages(name: &str, stages: &[backbones::Stage]) -> bool {
    stages
        .iter()
        .any(|s| s.prefixes.iter().any(|p| backbones::params::name_has_prefix(name, p)))
}

/// `freeze_all_but_last(b, 1)` makes exactly the last stage's parameters trainable (stem, blocks.0-6, head).
pub fn check_freeze_last(arch: &str) {
    check_freeze_last_of(arch, 9);
}

/// [`check_freeze_last`] for a network of `n_stages` stages (stem, blocks.0…, head).
pub fn check_freeze_last_of(arch: &str, n_stages: usize) {
    let Some(store) = random_store(arch, 1) else {
        return;
    };
    let model = backbones::zoo::build(arch, &store).unwrap();
    let stages = model.stages();
    assert_eq!(stages.first().unwrap().name, "stem");
    assert_eq!(stages.last().unwrap().name, "head");
    assert_eq!(stages.len(), n_stages, "stem, blocks.0-{}, head", n_stages - 3);
    // Every backbone parameter (not the classifier) belongs to exactly one stage.
    for p in store.params() {
        let owners = stages
            .iter()
            .filter(|s| in_stages(p.name(), std::slice::from_ref(*s)))
            .count();
        let expected = usize::from(!p.name().starts_with("classifier."));
        assert_eq!(owners, expected, "{} belongs to {owners} stages", p.name());
    }
    backbones::freeze_all_but_last(model.as_ref(), 1).unwrap();
    let last = &stages[stages.len() - 1..];
    let trainable: Vec<String> = store.trainable_vars().into_iter().map(|(n, _)| n).collect();
    let expected: Vec<String> = store
        .params()
        .iter()
        .filter(|p| in_stages(p.name(), last))
        .map(|p| p.name().to_string())
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(trainable, expected);
    backbones::freeze_all_but_last(model.as_ref(), 0).unwrap();
    assert!(store.trainable_vars().is_empty());
    assert!(backbones::freeze_all_but_last(model.as_ref(), stages.len() + 1).is_err());
}

/// Train mode updates the BatchNorm running statistics of the unfrozen stages only; eval mode updates none.
pub fn check_train_mode_stats(arch: &str, unfrozen: usize) {
    let Some(store) = random_store(arch, 2) else {
        return;
    };
    let model = backbones::zoo::build(arch, &store).unwrap();
    let stages = model.stages();
    backbones::freeze_all_but_last(model.as_ref(), unfrozen).unwrap();
    let live = &stages[stages.len() - unfrozen..];
    let before: Vec<(String, Vec<f32>)> = store
        .buffers()
        .iter()
        .map(|b| {
            (
                b.name().to_string(),
                b.tensor().flatten_all().unwrap().to_vec1().unwrap(),
            )
        })
        .collect();
    let x = random_input(2, 64, 3);
    model.forward_pooled(&x, false).unwrap();
    for (b, (_, old)) in store.buffers().iter().zip(&before) {
        assert_eq!(
            &b.tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            old,
            "eval changed {}",
            b.name()
        );
    }
    model.forward_pooled(&x, true).unwrap();
    let mut changed = 0;
    for (b, (name, old)) in store.buffers().iter().zip(&before) {
        let new: Vec<f32> = b.tensor().flatten_all().unwrap().to_vec1().unwrap();
        if in_stages(name, live) {
            assert_ne!(&new, old, "train mode left {name} unchanged in an unfrozen stage");
            changed += 1;
        } else {
            assert_eq!(&new, old, "train mode changed {name} in a frozen stage");
        }
    }
    assert!(changed > 0, "no BatchNorm in the unfrozen stages");
}

/// A backward pass with the last `unfrozen` stages trainable yields gradients for exactly their variables.
pub fn check_backward(arch: &str, unfrozen: usize) {
    let Some(store) = random_store(arch, 4) else {
        return;
    };
    let model = backbones::zoo::build(arch, &store).unwrap();
    backbones::freeze_all_but_last(model.as_ref(), unfrozen).unwrap();
    let x = random_input(2, 64, 5);
    let loss = model
        .forward_pooled(&x, true)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let mut with_grad = 0;
    for p in store.params() {
        let g = grads.get(&p.tensor());
        match p.var() {
            Some(v) => {
                let g = grads
                    .get(v.as_tensor())
                    .unwrap_or_else(|| panic!("no gradient for trainable {}", p.name()));
                assert_eq!(g.dims(), v.dims());
                let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(norm.is_finite(), "non-finite gradient for {}", p.name());
                with_grad += 1;
            }
            None => assert!(g.is_none(), "gradient for frozen {}", p.name()),
        }
    }
    assert!(with_grad > 0);
    assert_eq!(with_grad, store.trainable_vars().len());
}
