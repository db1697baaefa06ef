//! Freezing by stage on ResNet-18: which parameters train, which BatchNorm statistics move, where gradients flow.

use std::collections::BTreeMap;

use backbones::{freeze_all_but_last, params::name_has_prefix, zoo, Backbone, ParamStore};
use candle_core::{DType, Device, Tensor};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;

fn model() -> Option<Box<dyn Backbone>> {
    let path = tests::assets::require("parity/resnet18.weights.safetensors")?;
    let store = ParamStore::from_safetensors(&path, DType::F32, &Device::Cpu).unwrap();
    Some(zoo::build("resnet18", &store).unwrap())
}

/// A seeded N×3×64×64 input in roughly the normalised-image range.
fn input(n: usize, seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n * 3 * 64 * 64).map(|_| rng.gen_range(-2.0..2.0)).collect();
    Tensor::from_vec(v, (n, 3, 64, 64), &Device::Cpu).unwrap()
}

fn buffers(store: &ParamStore) -> BTreeMap<String, Vec<f32>> {
    store
        .buffers()
        .into_iter()
        .map(|b| (b.name().to_string(), b.tensor().to_vec1::<f32>().unwrap()))
        .collect()
}

fn trainable_names(store: &ParamStore) -> Vec<String> {
    store.trainable_vars().into_iter().map(|(n, _)| n).collect()
}

fn params_under(store: &ParamStore, prefixes: &[&str]) -> Vec<String> {
    store
        .params()
        .iter()
        .map(|p| p.name().to_string())
        .filter(|n| prefixes.iter().any(|pre| name_has_prefix(n, pre)))
        .collect()
}

#[test]
fn freeze_all_but_last_selects_whole_stages() {
    let Some(m) = model() else { return };
    let store = m.store();
    assert!(trainable_names(store).is_empty(), "built frozen");

    freeze_all_but_last(m.as_ref(), 1).unwrap();
    let layer4 = params_under(store, &["layer4"]);
    assert_eq!(layer4.len(), 2 * 6 + 3, "two blocks of conv+bn×2, one downsample");
    assert_eq!(trainable_names(store), layer4);

    freeze_all_but_last(m.as_ref(), 2).unwrap();
    assert_eq!(trainable_names(store), params_under(store, &["layer3", "layer4"]));

    freeze_all_but_last(m.as_ref(), 5).unwrap();
    let all_but_fc: Vec<String> = store
        .params()
        .iter()
        .map(|p| p.name().to_string())
        .filter(|n| !n.starts_with("fc."))
        .collect();
    assert_eq!(trainable_names(store), all_but_fc);

    freeze_all_but_last(m.as_ref(), 0).unwrap();
    assert!(trainable_names(store).is_empty());
    assert!(freeze_all_but_last(m.as_ref(), 6).is_err());
}

#[test]
fn train_mode_moves_batchnorm_statistics_of_unfrozen_stages_only() {
    let Some(m) = model() else { return };
    let store = m.store();
    let x = input(2, 1);

    // Everything frozen: training-mode forward leaves every statistic in place.
    let before = buffers(store);
    m.forward_features(&x, true).unwrap();
    assert_eq!(buffers(store), before);

    // Last stage unfrozen: eval-mode forward still moves nothing.
    freeze_all_but_last(m.as_ref(), 1).unwrap();
    m.forward_features(&x, false).unwrap();
    assert_eq!(buffers(store), before);

    // Training-mode forward: exactly layer4's statistics move, every one of them.
    m.forward_features(&x, true).unwrap();
    let after = buffers(store);
    for (name, old) in &before {
        let moved = after[name] != *old;
        assert_eq!(moved, name_has_prefix(name, "layer4"), "{name}: moved = {moved}");
    }
}

#[test]
fn backward_reaches_unfrozen_parameters_only() {
    let Some(m) = model() else { return };
    let store = m.store();
    freeze_all_but_last(m.as_ref(), 1).unwrap();
    let x = input(2, 2);
    let pooled = m.forward_pooled(&x, true).unwrap();
    let logits = m.classify(&pooled).unwrap().expect("classifier");
    let loss = logits.sqr().unwrap().mean_all().unwrap();
    let grads = loss.backward().unwrap();

    let mut with_grad = 0;
    for p in store.params() {
        match p.var() {
            Some(v) => {
                let g = grads
                    .get(v.as_tensor())
                    .unwrap_or_else(|| panic!("{}: no gradient", p.name()));
                assert_eq!(g.dims(), v.dims(), "{}", p.name());
                let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(norm.is_finite() && norm > 0.0, "{}: gradient norm {norm}", p.name());
                assert!(name_has_prefix(p.name(), "layer4"), "{} is trainable", p.name());
                with_grad += 1;
            }
            None => assert!(
                grads.get(&p.tensor()).is_none(),
                "{}: frozen but has a gradient",
                p.name()
            ),
        }
    }
    assert_eq!(with_grad, params_under(store, &["layer4"]).len());
}
