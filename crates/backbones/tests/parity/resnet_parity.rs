//! ResNet-18 against timm's float32 eval-mode references (pooled features and logits).

use crate::support::assert_close;
use backbones::{zoo, ParamStore};
use candle_core::{DType, Device};

#[test]
fn resnet18_matches_timm() {
    let (Some(weights), Some(reference)) = (
        tests::assets::require("parity/resnet18.weights.safetensors"),
        tests::assets::require("parity/resnet18.reference.safetensors"),
    ) else {
        return;
    };
    let store = ParamStore::from_safetensors(&weights, DType::F32, &Device::Cpu).unwrap();
    let model = zoo::build("resnet18", &store).unwrap();
    assert!(store.unused().is_empty(), "unused: {:?}", store.unused());
    assert!(model.has_classifier());
    assert_eq!(model.num_features(), 512);

    let refs = candle_core::safetensors::load(&reference, &Device::Cpu).unwrap();
    let input = &refs["input"];
    let features = model.forward_pooled(input, false).unwrap();
    assert_close("features", &features, &refs["features"]);
    let logits = model.classify(&features).unwrap().expect("classifier");
    assert_close("logits", &logits, &refs["logits"]);
    let first = input.narrow(0, 0, 1).unwrap();
    let direct = model.forward_logits(&first).unwrap().expect("classifier");
    assert_close("forward_logits", &direct, &refs["logits"].narrow(0, 0, 1).unwrap());
}
