//! VGG-16 conv trunk against timm's float32 references (Keras-style `include_top=False`).

use crate::support::assert_close;
use backbones::{zoo, ParamStore};
use candle_core::{DType, Device, Tensor};

#[test]
fn vgg16_trunk_matches_timm() {
    let (Some(weights), Some(reference)) = (
        tests::assets::require("parity/vgg16_features.weights.safetensors"),
        tests::assets::require("parity/vgg16_features.reference.safetensors"),
    ) else {
        return;
    };
    let store = ParamStore::from_safetensors(&weights, DType::F32, &Device::Cpu).unwrap();
    let model = zoo::build("vgg16", &store).unwrap();
    assert!(store.unused().is_empty(), "unused: {:?}", store.unused());
    assert!(!model.has_classifier(), "the fixture holds the trunk only");
    assert_eq!(model.num_features(), 512);

    let refs = candle_core::safetensors::load(&reference, &Device::Cpu).unwrap();
    // VGG-16 costs ~15 GFLOPs an image: check the map on an ant and a bee, the pooled features on another bee.
    let pick = |name: &str, rows: &[u32]| {
        let idx = Tensor::new(rows, &Device::Cpu).unwrap();
        refs[name].index_select(&idx, 0).unwrap()
    };
    let map = model.forward_features(&pick("input", &[0, 2]), false).unwrap();
    assert_close("feature_map", &map, &pick("feature_map", &[0, 2]));
    let input = pick("input", &[3]);
    let pooled = model.forward_pooled(&input, false).unwrap();
    assert_close("features", &pooled, &pick("features", &[3]));
    assert!(model.classify(&pooled).unwrap().is_none());
    assert!(model.forward_logits(&input).unwrap().is_none());
}
