//! VGG-16 takes exactly the tensors of timm's Hub checkpoint (names and shapes), and nothing else.

use std::collections::BTreeMap;

use crate::support::{manifest, store_from};
use backbones::{params::name_has_prefix, zoo};

#[test]
fn vgg16_manifest() {
    let Some(expected) = manifest("vgg16") else {
        return;
    };
    let store = store_from(&expected);
    let model = zoo::build("vgg16", &store).unwrap();
    assert!(store.unused().is_empty(), "unused {:?}", store.unused());
    let created: BTreeMap<String, Vec<usize>> = store
        .state_dict()
        .into_iter()
        .map(|(k, t)| (k, t.dims().to_vec()))
        .collect();
    assert_eq!(created, expected, "created tensors differ from the manifest");
    assert_eq!(model.num_features(), 512);
    assert!(model.has_classifier());

    // Keras blocks: the convolutions between pools, as timm's `features.N` prefixes.
    let stages = model.stages();
    let table: Vec<(&str, Vec<&str>)> = stages
        .iter()
        .map(|s| (s.name.as_str(), s.prefixes.iter().map(String::as_str).collect()))
        .collect();
    let want: Vec<(&str, Vec<&str>)> = vec![
        ("block1", vec!["features.0", "features.2"]),
        ("block2", vec!["features.5", "features.7"]),
        ("block3", vec!["features.10", "features.12", "features.14"]),
        ("block4", vec!["features.17", "features.19", "features.21"]),
        ("block5", vec!["features.24", "features.26", "features.28"]),
    ];
    assert_eq!(table, want);
    for p in store.params() {
        let n = stages
            .iter()
            .filter(|s| s.prefixes.iter().any(|pre| name_has_prefix(p.name(), pre)))
            .count();
        let classifier = p.name().starts_with("pre_logits.") || p.name().starts_with("head.");
        assert_eq!(n, usize::from(!classifier), "{} lies in {n} stages", p.name());
    }
}

#[test]
fn vgg16_without_head_weights_is_trunk_only() {
    let Some(mut expected) = manifest("vgg16") else {
        return;
    };
    expected.retain(|k, _| k.starts_with("features."));
    let store = store_from(&expected);
    let model = zoo::build("vgg16", &store).unwrap();
    assert!(store.unused().is_empty());
    assert!(!model.has_classifier());
    let created: Vec<String> = store.state_dict().into_keys().collect();
    let want: Vec<String> = expected.into_keys().collect();
    assert_eq!(created, want);
}
