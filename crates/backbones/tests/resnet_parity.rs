//! ResNet-18 against timm's float32 eval-mode references (pooled features and logits).

use backbones::{zoo, ParamStore};
use candle_core::{DType, Device, Tensor};

/// The largest absolute value of `t`.
fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .and_then(|a| a.max_all())
        .and_then(|m| m.to_scalar::<f32>())
        .unwrap()
}

/// max |ours − ref| ≤ 1e-3 · max(1, max |ref|).
fn assert_close(what: &str, ours: &Tensor, reference: &Tensor) {
    assert_eq!(ours.dims(), reference.dims(), "{what}: shape");
    let diff = max_abs(&(ours - reference).unwrap());
    let scale = max_abs(reference).max(1.0);
    eprintln!("{what}: max |ours - ref| = {diff:.3e}, max(1, max |ref|) = {scale:.3}");
    assert!(diff <= 1e-3 * scale, "{what}: max diff {diff} > {}", 1e-3 * scale);
}

#[test]
fn resnet18_matches_timm() {
    let (Some(weights), Some(reference)) = (
        data::assets::require("parity/resnet18.weights.safetensors"),
        data::assets::require("parity/resnet18.reference.safetensors"),
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
