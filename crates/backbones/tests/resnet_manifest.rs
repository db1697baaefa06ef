//! ResNet-18/34/50 take exactly the tensors of timm's Hub checkpoints (names and shapes), and nothing else.

use std::collections::{BTreeMap, HashMap};

use backbones::{params::name_has_prefix, zoo, ParamStore};
use candle_core::{DType, Device, Tensor};

/// The manifest's `name → shape` for `arch`, or None when the shared assets are absent.
fn manifest(arch: &str) -> Option<BTreeMap<String, Vec<usize>>> {
    let path = data::assets::require("parity/timm_manifest.json")?;
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let tensors = json[arch]["tensors"].as_object().expect("architecture in manifest");
    Some(
        tensors
            .iter()
            .map(|(k, v)| {
                let shape = v
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

/// A store over zeros of exactly the manifest's names and shapes.
fn zeros_store(names: &BTreeMap<String, Vec<usize>>) -> ParamStore {
    let tensors: HashMap<String, Tensor> = names
        .iter()
        .map(|(k, s)| {
            (
                k.clone(),
                Tensor::zeros(s.as_slice(), DType::F32, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    ParamStore::from_tensors(tensors, DType::F32, &Device::Cpu)
}

fn check(arch: &str, num_features: usize) {
    let Some(expected) = manifest(arch) else {
        return;
    };
    let store = zeros_store(&expected);
    let model = zoo::build(arch, &store).unwrap();
    assert!(store.unused().is_empty(), "{arch}: unused {:?}", store.unused());
    let created: BTreeMap<String, Vec<usize>> = store
        .state_dict()
        .into_iter()
        .map(|(k, t)| (k, t.dims().to_vec()))
        .collect();
    assert_eq!(created, expected, "{arch}: created tensors differ from the manifest");
    assert_eq!(model.num_features(), num_features);
    assert!(model.has_classifier());

    // Stages: stem, layer1..layer4; every non-classifier parameter lies in exactly one stage.
    let stages = model.stages();
    let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["stem", "layer1", "layer2", "layer3", "layer4"]);
    for p in store.params() {
        let n = stages
            .iter()
            .filter(|s| s.prefixes.iter().any(|pre| name_has_prefix(p.name(), pre)))
            .count();
        let want = usize::from(!p.name().starts_with("fc."));
        assert_eq!(n, want, "{arch}: {} lies in {n} stages", p.name());
    }

    // An empty store builds the same model, classifier included.
    let empty = ParamStore::empty(DType::F32, &Device::Cpu);
    zoo::build(arch, &empty).unwrap();
    let empty_names: Vec<String> = empty.state_dict().into_keys().collect();
    let expected_names: Vec<String> = expected.keys().cloned().collect();
    assert_eq!(empty_names, expected_names);
}

#[test]
fn resnet18_manifest() {
    check("resnet18", 512);
}

#[test]
fn resnet34_manifest() {
    check("resnet34", 512);
}

#[test]
fn resnet50_manifest() {
    check("resnet50", 2048);
}

#[test]
fn resnet_without_fc_has_no_classifier() {
    let Some(mut expected) = manifest("resnet18") else {
        return;
    };
    expected.retain(|k, _| !k.starts_with("fc."));
    let store = zeros_store(&expected);
    let model = zoo::build("resnet18", &store).unwrap();
    assert!(!model.has_classifier());
    let pooled = Tensor::zeros((2, 512), DType::F32, &Device::Cpu).unwrap();
    assert!(model.classify(&pooled).unwrap().is_none());
    assert!(store.state_dict().keys().all(|k| !k.starts_with("fc.")));
}

#[test]
fn wrong_shape_is_an_error_naming_the_tensor() {
    let Some(mut expected) = manifest("resnet18") else {
        return;
    };
    expected.insert("layer3.1.conv2.weight".into(), vec![256, 256, 1, 1]);
    let err = match zoo::build("resnet18", &zeros_store(&expected)) {
        Ok(_) => panic!("a wrong shape must not build"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("layer3.1.conv2.weight"), "{err}");
}
