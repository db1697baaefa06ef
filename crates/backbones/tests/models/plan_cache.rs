//! The inference plan of a frozen mobile network is built once and reused until a parameter or buffer changes,
//! and every registered mobile architecture has one.

use std::collections::HashMap;

use crate::support::{max_abs, max_abs_diff, random_input, random_store};
use backbones::efficientnet::EfficientNet;
use backbones::mobilenetv3::MobileNetV3;
use backbones::{Backbone, ParamStore};
use candle_core::{DType, Device, Tensor};

/// The general (autograd) path's features: one parameter made trainable for the call, then frozen again.
fn general(model: &dyn Backbone, store: &ParamStore, x: &Tensor) -> Tensor {
    let p = store.params().into_iter().next().unwrap();
    p.set_trainable(true).unwrap();
    let y = model.forward_features(x, false).unwrap().detach();
    p.set_trainable(false).unwrap();
    y
}

/// The inference path agrees with the general path on `x` (same tolerance as `infer_path.rs`).
fn assert_matches_general(what: &str, fast: &Tensor, model: &dyn Backbone, store: &ParamStore, x: &Tensor) {
    let want = general(model, store, x);
    let (diff, scale) = (max_abs_diff(fast, &want), max_abs(&want));
    assert!(
        scale > 0.0 && diff <= 1e-4 * scale.max(1.0),
        "{what}: {diff} vs scale {scale}"
    );
}

/// Whether `a` and `b` differ by more than rounding (relative to their size).
fn differ(a: &Tensor, b: &Tensor) -> bool {
    let d = max_abs_diff(a, b);
    println!("max |a − b| = {d:.3e} (max |b| = {:.3e})", max_abs(b));
    d > 1e-3 * max_abs(b)
}

/// The cache's contract on one model: `builds` reads its build counter, `last_bn` names the BatchNorm that
/// produces the features (a change there cannot be washed out by the layers after it).
fn check_cache(arch: &str, model: &dyn Backbone, store: &ParamStore, builds: &dyn Fn() -> usize, last_bn: &str) {
    let x = random_input(2, 64, 11);
    let first = model.forward_features(&x, false).unwrap();
    assert_eq!(builds(), 1, "{arch}: the first frozen eval forward builds the plan");
    let again = model.forward_features(&x, false).unwrap();
    assert!(model.uses_inference_path(&x, false).unwrap());
    assert_eq!(builds(), 1, "{arch}: later forwards reuse the plan");
    assert_eq!(
        max_abs_diff(&first, &again),
        0.0,
        "{arch}: the reused plan gives the same result"
    );

    // Param::set: the next forward rebuilds and sees the new value.
    let shift = store
        .params()
        .into_iter()
        .find(|p| p.name() == format!("{last_bn}.bias"))
        .unwrap();
    shift.set(&(shift.tensor() + 0.5).unwrap()).unwrap();
    let t = std::time::Instant::now();
    assert!(model.uses_inference_path(&x, false).unwrap());
    println!("{arch}: building the plan took {:.2?}", t.elapsed());
    let t = std::time::Instant::now();
    assert!(model.uses_inference_path(&x, false).unwrap());
    println!("{arch}: finding the cached plan took {:.2?}", t.elapsed());
    let after_set = model.forward_features(&x, false).unwrap();
    assert_eq!(builds(), 2, "{arch}: Param::set invalidates the plan");
    assert!(
        differ(&after_set, &first),
        "{arch}: the new weight changes the features"
    );
    assert_matches_general(&format!("{arch} after Param::set"), &after_set, model, store, &x);
    let builds_now = builds();

    // load_state_dict: new values for every tensor (here: the state scaled), then a rebuild.
    let state: HashMap<String, Tensor> = store
        .state_dict()
        .into_iter()
        .map(|(k, t)| {
            let t = if k.ends_with("running_var") {
                t
            } else {
                (t * 0.9).unwrap()
            };
            (k, t)
        })
        .collect();
    store.load_state_dict(&state, true).unwrap();
    let after_load = model.forward_features(&x, false).unwrap();
    assert_eq!(builds(), builds_now + 1, "{arch}: load_state_dict invalidates the plan");
    assert!(
        differ(&after_load, &after_set),
        "{arch}: loaded weights change the features"
    );
    assert_matches_general(&format!("{arch} after load_state_dict"), &after_load, model, store, &x);
    let builds_now = builds();

    // A buffer (running mean) set directly.
    let name = format!("{last_bn}.running_mean");
    let mean = store.buffers().into_iter().find(|b| b.name() == name).unwrap();
    mean.set(&(mean.tensor() - 0.5).unwrap()).unwrap();
    let after_buffer = model.forward_features(&x, false).unwrap();
    assert_eq!(builds(), builds_now + 1, "{arch}: Buffer::set invalidates the plan");
    assert!(
        differ(&after_buffer, &after_load),
        "{arch}: the new running mean changes the features"
    );
    let builds_now = builds();

    // set_trainable: trainable means the general path (no build); frozen again means a fresh plan.
    let p = store.params().into_iter().next().unwrap();
    p.set_trainable(true).unwrap();
    assert!(!model.uses_inference_path(&x, false).unwrap());
    let trained = model.forward_features(&x, false).unwrap().detach();
    assert_eq!(builds(), builds_now, "{arch}: the general path builds no plan");
    p.set_trainable(false).unwrap();
    let refrozen = model.forward_features(&x, false).unwrap();
    assert_eq!(builds(), builds_now + 1, "{arch}: set_trainable invalidates the plan");
    let (diff, scale) = (max_abs_diff(&refrozen, &trained), max_abs(&trained));
    assert!(diff <= 1e-4 * scale.max(1.0), "{arch}: {diff} vs scale {scale}");
    model.forward_features(&x, false).unwrap();
    assert_eq!(builds(), builds_now + 1, "{arch}: and that plan is reused");
}

#[test]
fn efficientnet_plans_are_reused_until_weights_change() {
    for arch in ["tf_efficientnet_lite0", "efficientnet_b0"] {
        let Some(store) = random_store(arch, 21) else { return };
        let model = if arch == "efficientnet_b0" {
            EfficientNet::b0(&store).unwrap()
        } else {
            EfficientNet::lite0(&store).unwrap()
        };
        check_cache(arch, &model, &store, &|| model.plan_builds(), "bn2");
    }
}

#[test]
fn mobilenetv3_plan_is_reused_until_weights_change() {
    let arch = "mobilenetv3_large_100";
    let Some(store) = random_store(arch, 22) else { return };
    let model = MobileNetV3::large_100(&store).unwrap();
    check_cache(arch, &model, &store, &|| model.plan_builds(), "blocks.6.0.bn1");
}

#[test]
fn the_store_version_moves_on_every_change() {
    let store = ParamStore::empty(DType::F32, &Device::Cpu);
    let p = store.param("w", 3).unwrap();
    let b = store.buffer("b", 3, false).unwrap();
    let mut last = store.version();
    let mut changed = |what: &str| {
        let v = store.version();
        assert_ne!(v, last, "{what} leaves the version unchanged");
        last = v;
    };
    p.set(&Tensor::ones(3, DType::F32, &Device::Cpu).unwrap()).unwrap();
    changed("Param::set");
    b.set(&Tensor::ones(3, DType::F32, &Device::Cpu).unwrap()).unwrap();
    changed("Buffer::set");
    p.set_trainable(true).unwrap();
    changed("set_trainable(true)");
    p.set(&Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap()).unwrap();
    changed("Param::set on a trainable parameter");
    p.set_trainable(false).unwrap();
    changed("set_trainable(false)");
    let state: HashMap<String, Tensor> = store.state_dict().into_iter().collect();
    store.load_state_dict(&state, true).unwrap();
    changed("load_state_dict");
    let unchanged = store.version();
    p.set_trainable(false).unwrap();
    let _ = (p.tensor(), b.tensor(), store.state_dict());
    assert_eq!(store.version(), unchanged, "reading or a no-op freeze is not a change");
}

/// Every registered EfficientNet / MobileNet architecture takes the inference path when frozen in eval: a block
/// the plan cannot run shows up here instead of silently running on the slow path.
#[test]
fn every_registered_mobile_architecture_takes_the_inference_path() {
    let mobile: Vec<&str> = backbones::zoo::ARCHITECTURES
        .iter()
        .copied()
        .filter(|a| a.contains("efficientnet") || a.contains("mobilenet"))
        .collect();
    for arch in [
        "tf_efficientnet_lite0",
        "efficientnet_b0",
        "mobilenetv3_large_100",
        "mobilenetv4_conv_small",
    ] {
        assert!(mobile.contains(&arch), "{arch} is registered");
    }
    let x = random_input(1, 64, 5);
    for arch in mobile {
        let store = ParamStore::empty(DType::F32, &Device::Cpu);
        let model = backbones::zoo::build(arch, &store).unwrap();
        assert!(store.trainable_vars().is_empty(), "{arch}: built frozen");
        assert!(
            model.uses_inference_path(&x, false).unwrap(),
            "{arch}: frozen eval takes the inference path"
        );
        assert!(
            !model.uses_inference_path(&x, true).unwrap(),
            "{arch}: train mode does not"
        );
        let y = model.forward_features(&x, false).unwrap();
        assert_eq!(y.dim(0).unwrap(), 1, "{arch}");
    }
}
