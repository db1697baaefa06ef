//! The folded NHWC inference path of frozen mobile networks against the general (autograd) path.

use crate::support::{max_abs, max_abs_diff, random_input, random_store};
use backbones::efficientnet::EfficientNet;
use backbones::mobilenetv3::MobileNetV3;
use backbones::mobilenetv4::MobileNetV4;
use backbones::{Backbone, ParamStore};
use candle_core::Tensor;

/// Features of `x` by the inference path (everything frozen) and by the general path (one parameter trainable).
fn both_paths(model: &dyn Backbone, store: &ParamStore, x: &Tensor) -> (Tensor, Tensor) {
    let fast = model.forward_features(x, false).unwrap();
    let p = store.params().into_iter().next().unwrap();
    p.set_trainable(true).unwrap();
    let general = model.forward_features(x, false).unwrap().detach();
    p.set_trainable(false).unwrap();
    (fast, general)
}

fn check(arch: &str, model: &dyn Backbone, store: &ParamStore, uses: &dyn Fn(&Tensor, bool) -> bool) {
    // 97×97 gives odd sizes all the way down (asymmetric TF "SAME" padding, partial windows); batch 1 runs the
    // images one by one with threaded GEMMs, batch 3 runs images in parallel.
    for (n, hw) in [(3, 97), (1, 64)] {
        let x = random_input(n, hw, 7);
        assert!(uses(&x, false), "{arch}: frozen eval takes the inference path");
        assert!(!uses(&x, true), "{arch}: train mode does not");
        let (fast, general) = both_paths(model, store, &x);
        assert_eq!(fast.dims(), general.dims(), "{arch}");
        let scale = max_abs(&general);
        let diff = max_abs_diff(&fast, &general);
        println!("{arch} {n}×3×{hw}×{hw}: max |fast − general| = {diff:.3e} (max |general| = {scale:.3})");
        assert!(
            scale > 0.0 && diff <= 1e-4 * scale.max(1.0),
            "{arch}: {diff} vs scale {scale}"
        );
    }
    let p = store.params().into_iter().next().unwrap();
    p.set_trainable(true).unwrap();
    assert!(
        !uses(&random_input(1, 32, 1), false),
        "{arch}: a trainable parameter disables it"
    );
    p.set_trainable(false).unwrap();
}

#[test]
fn efficientnets_match_the_general_path() {
    for arch in ["tf_efficientnet_lite0", "efficientnet_b0"] {
        let Some(store) = random_store(arch, 3) else { return };
        let model = if arch == "efficientnet_b0" {
            EfficientNet::b0(&store).unwrap()
        } else {
            EfficientNet::lite0(&store).unwrap()
        };
        check(arch, &model, &store, &|x, t| model.uses_inference_path(x, t).unwrap());
    }
}

#[test]
fn mobilenetv3_matches_the_general_path() {
    let arch = "mobilenetv3_large_100";
    let Some(store) = random_store(arch, 4) else { return };
    let model = MobileNetV3::large_100(&store).unwrap();
    check(arch, &model, &store, &|x, t| model.uses_inference_path(x, t).unwrap());
}

/// MobileNetV4's plan: strided dense 3×3 conv-bn-act steps and universal inverted residuals (start depthwise
/// without activation, strided start depthwise, residual around the block), against the general path.
#[test]
fn mobilenetv4_matches_the_general_path() {
    let arch = "mobilenetv4_conv_small";
    let Some(store) = random_store(arch, 5) else { return };
    let model = MobileNetV4::conv_small(&store).unwrap();
    assert_eq!(model.plan_builds(), 0);
    check(arch, &model, &store, &|x, t| model.uses_inference_path(x, t).unwrap());
    assert!(model.plan_builds() >= 1, "the plan was built");
}
