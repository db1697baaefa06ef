//! ResNet-18/34/50 take exactly the tensors of timm's Hub checkpoints (names and shapes), and nothing else.

use std::collections::BTreeMap;

use crate::support::{manifest, store_from};
use backbones::{params::name_has_prefix, zoo, ParamStore};
use candle_core::{DType, Device, Tensor};

fn check(arch: &str, num_features: usize) {
    let Some(expected) = manifest(arch) else {
        return;
    };
    let store = store_from(&expected);
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
    let store = store_from(&expected);
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
    let err = match zoo::build("resnet18", &store_from(&expected)) {
        Ok(_) => panic!("a wrong shape must not build"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("layer3.1.conv2.weight"), "{err}");
}
