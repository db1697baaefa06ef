//! Multi-scale features (timm's `features_only=True`): parity with timm's feature maps on the round-2 fixtures,
//! timm's `feature_info`, and shapes and reductions of every architecture's maps.

use crate::support::{assert_close, random_input, random_store};
use backbones::{zoo, FeatureInfo, ParamStore};
use candle_core::{DType, Device};

/// The round-2 fixture `name` (`resnet18_multiscale` …) as (index entry, weights, reference file).
fn round2(name: &str) -> Option<(serde_json::Value, std::path::PathBuf, std::path::PathBuf)> {
    let index = tests::assets::require("parity/round2_index.json")?;
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(index).unwrap()).unwrap();
    let entry = v
        .get(name)
        .unwrap_or_else(|| panic!("{name} not in round2_index.json"))
        .clone();
    let weights = entry["weights"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let weights = if weights.starts_with("weights/") {
        tests::assets::require(&weights)?
    } else {
        tests::assets::require(&format!("parity/{weights}"))?
    };
    let reference = tests::assets::require(&format!("parity/{name}.reference.safetensors"))?;
    Some((entry, weights, reference))
}

fn check_multiscale(arch: &str) {
    let Some((entry, weights, reference)) = round2(&format!("{arch}_multiscale")) else {
        return;
    };
    let store = ParamStore::from_safetensors(&weights, DType::F32, &Device::Cpu).unwrap();
    let model = zoo::build(arch, &store).unwrap();
    let expected: Vec<FeatureInfo> = serde_json::from_value(entry["feature_info"].clone()).unwrap();
    assert_eq!(
        model.feature_info(),
        expected,
        "{arch}: feature_info differs from timm's"
    );

    let refs = candle_core::safetensors::load(&reference, &Device::Cpu).unwrap();
    let input = refs["input"].to_dtype(DType::F32).unwrap();
    let maps = model.forward_all_features(&input, false).unwrap();
    assert_eq!(maps.len(), 5);
    for (i, map) in maps.iter().enumerate() {
        let r = refs[&format!("feature_map.{i}")].to_dtype(DType::F32).unwrap();
        assert_eq!(map.dims(), r.dims(), "{arch}: feature_map.{i} shape");
        assert_close(&format!("{arch} feature_map.{i}"), map, &r);
    }
    // A subset returns the same maps, in order.
    let some = model.forward_multiscale(&input, false, &[1, 3]).unwrap();
    assert_eq!(some.len(), 2);
    assert_close(&format!("{arch} out_indices [1, 3]"), &some[1], &maps[3]);
    // The last map is the one classification uses, except where timm's features stop before the head.
    if arch == "resnet18" {
        assert_close("last map", &maps[4], &model.forward_features(&input, false).unwrap());
    }
}

#[test]
fn resnet18_multiscale_matches_timm() {
    check_multiscale("resnet18");
}

#[test]
fn lite0_multiscale_matches_timm_real_weights() {
    check_multiscale("tf_efficientnet_lite0");
}

#[test]
fn mobilenetv3_multiscale_matches_timm() {
    check_multiscale("mobilenetv3_large_100");
}

/// Every architecture: one map per `feature_info` entry, with its channels and its reduction (rounded either way),
/// on an input whose size is not a multiple of 32; reductions never decrease; bad `out_indices` are errors.
#[test]
fn every_architecture_has_consistent_feature_maps() {
    for &arch in zoo::ARCHITECTURES {
        // Default weights (zeros, unit norms): shapes only.
        let store = ParamStore::empty(DType::F32, &Device::Cpu);
        let model = zoo::build(arch, &store).unwrap();
        let info = model.feature_info();
        assert!(info.len() >= 3, "{arch}: {} feature maps", info.len());
        assert!(
            info.windows(2).all(|w| w[0].reduction <= w[1].reduction),
            "{arch}: {info:?}"
        );
        let hw = 100;
        let x = random_input(1, hw, 3);
        let maps = model.forward_all_features(&x, false).unwrap();
        assert_eq!(maps.len(), info.len(), "{arch}");
        for (m, f) in maps.iter().zip(&info) {
            let (_, c, h, w) = m.dims4().unwrap();
            assert_eq!(c, f.channels, "{arch} {}: channels", f.module);
            // Stride-2 stages with padding round up (ceil); a 2×2 max-pool (VGG) rounds down.
            let (lo, hi) = (hw / f.reduction, hw.div_ceil(f.reduction));
            assert!(
                h >= lo && h <= hi && w >= lo && w <= hi,
                "{arch} {}: {h}×{w} at 1/{}",
                f.module,
                f.reduction
            );
        }
        assert!(model.forward_multiscale(&x, false, &[]).is_err(), "{arch}: empty");
        assert!(
            model.forward_multiscale(&x, false, &[2, 1]).is_err(),
            "{arch}: decreasing"
        );
        assert!(
            model.forward_multiscale(&x, false, &[info.len()]).is_err(),
            "{arch}: out of range"
        );
        let first = model.forward_multiscale(&x, false, &[0]).unwrap();
        assert_eq!(first[0].dims(), maps[0].dims());
    }
}

/// The multi-scale path trains: gradients reach the unfrozen last stage through a loss on an early and a late map.
#[test]
fn multiscale_maps_carry_gradients_to_unfrozen_stages() {
    let Some(store) = random_store("resnet18", 1) else {
        return;
    };
    let model = zoo::build("resnet18", &store).unwrap();
    backbones::freeze_all_but_last(model.as_ref(), 1).unwrap();
    let x = random_input(2, 64, 5);
    let maps = model.forward_multiscale(&x, true, &[1, 4]).unwrap();
    let loss = (maps[0].sqr().unwrap().mean_all().unwrap() + maps[1].sqr().unwrap().mean_all().unwrap()).unwrap();
    let grads = loss.backward().unwrap();
    let trainable: Vec<_> = store.params().into_iter().filter(|p| p.is_trainable()).collect();
    assert!(!trainable.is_empty());
    for p in trainable {
        let g = grads
            .get(&p.var().unwrap())
            .unwrap_or_else(|| panic!("no gradient for {}", p.name()));
        assert!(
            g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0,
            "{}",
            p.name()
        );
    }
}
