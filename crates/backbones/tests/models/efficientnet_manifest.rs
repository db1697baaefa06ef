//! EfficientNet-B0 and Lite0 create exactly timm's tensors (names and shapes), and build headless.

use backbones::{zoo, ParamStore};
use candle_core::{DType, Device};

#[test]
fn efficientnet_b0_matches_manifest() {
    crate::support::check_manifest("efficientnet_b0");
}

#[test]
fn tf_efficientnet_lite0_matches_manifest() {
    crate::support::check_manifest("tf_efficientnet_lite0");
}

#[test]
fn headless_checkpoint_builds_without_classifier() {
    let Some((_, m)) = crate::support::manifest_store("tf_efficientnet_lite0") else {
        return;
    };
    let tensors = m
        .iter()
        .filter(|(k, _)| !k.starts_with("classifier."))
        .map(|(k, s)| {
            (
                k.clone(),
                candle_core::Tensor::zeros(s.as_slice(), DType::F32, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    let store = ParamStore::from_tensors(tensors, DType::F32, &Device::Cpu);
    let model = zoo::build("tf_efficientnet_lite0", &store).unwrap();
    assert!(!model.has_classifier());
    let pooled = candle_core::Tensor::zeros((1, 1280), DType::F32, &Device::Cpu).unwrap();
    assert!(model.classify(&pooled).unwrap().is_none());
    assert!(store.unused().is_empty());
}

#[test]
fn empty_store_builds_with_classifier() {
    for arch in ["efficientnet_b0", "tf_efficientnet_lite0", "mobilenetv3_large_100"] {
        let store = ParamStore::empty(DType::F32, &Device::Cpu);
        let model = zoo::build(arch, &store).unwrap();
        assert!(model.has_classifier(), "{arch}");
        assert_eq!(model.num_features(), 1280, "{arch}");
        assert_eq!(model.name(), arch);
    }
}

#[test]
fn wrong_shape_is_an_error() {
    let Some((_, m)) = crate::support::manifest_store("efficientnet_b0") else {
        return;
    };
    let mut tensors: std::collections::HashMap<_, _> = m
        .iter()
        .map(|(k, s)| {
            (
                k.clone(),
                candle_core::Tensor::zeros(s.as_slice(), DType::F32, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    tensors.insert(
        "blocks.2.0.conv_dw.weight".to_string(),
        candle_core::Tensor::zeros((144, 1, 3, 3), DType::F32, &Device::Cpu).unwrap(),
    );
    let store = ParamStore::from_tensors(tensors, DType::F32, &Device::Cpu);
    let err = zoo::build("efficientnet_b0", &store)
        .err()
        .expect("shape mismatch must fail");
    assert!(err.to_string().contains("blocks.2.0.conv_dw.weight"), "{err}");
}
