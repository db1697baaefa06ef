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

/// Partial fine-tuning (the last three stages trainable): the frozen prefix runs on a plan. Features (training
/// and eval mode) and the gradients of the trainable parameters (eval-mode BatchNorm: with batch statistics over a
/// batch of two, an input change of 1e-6 already moves these gradients by ~0.5 %) equal the general path's, which
/// an input that needs a gradient forces.
fn check_frozen_prefix(arch: &str, model: &dyn Backbone, store: &ParamStore, builds: &dyn Fn() -> usize) {
    backbones::freeze_all_but_last(model, 3).unwrap();
    let trainable: Vec<_> = store.params().into_iter().filter(|p| p.is_trainable()).collect();
    assert!(
        !trainable.is_empty() && trainable.len() < store.params().len(),
        "{arch}: a partial freeze"
    );
    let x = random_input(2, 97, 11);
    let run = |x: &Tensor, train: bool| {
        let y = model.forward_features(x, train).unwrap();
        let grads = y.sqr().unwrap().mean_all().unwrap().backward().unwrap();
        // `None` for trainable parameters forward_features does not use (the classifier).
        let g: Vec<Option<Tensor>> = trainable.iter().map(|p| grads.get(&p.tensor()).cloned()).collect();
        (y.detach(), g)
    };
    let xv = candle_core::Var::from_tensor(&x).unwrap();
    assert_eq!(builds(), 0, "{arch}: no prefix plan before a partial freeze");
    for train in [true, false] {
        let (fast, fast_grads) = run(&x, train);
        assert!(builds() >= 1, "{arch}: the frozen prefix ran on a plan");
        let (general, general_grads) = run(xv.as_tensor(), train);
        let scale = max_abs(&general);
        let diff = max_abs_diff(&fast, &general);
        println!("{arch} (train {train}) last three stages trainable: max |prefix plan − general| = {diff:.3e} (max |general| = {scale:.3})");
        assert!(
            scale > 0.0 && diff <= 1e-4 * scale.max(1.0),
            "{arch}: {diff} vs scale {scale}"
        );
        if train {
            continue;
        }
        let largest = general_grads.iter().flatten().map(max_abs).fold(0.0, f32::max);
        let mut compared = 0;
        for (p, (a, b)) in trainable.iter().zip(fast_grads.iter().zip(&general_grads)) {
            assert_eq!(
                a.is_some(),
                b.is_some(),
                "{arch} {}: a gradient on one path only",
                p.name()
            );
            let (Some(a), Some(b)) = (a, b) else { continue };
            compared += 1;
            let (d, s) = (max_abs_diff(a, b), max_abs(b));
            let tol = 1e-3 * s + 1e-5 * largest;
            assert!(
                d <= tol,
                "{arch} {}: gradient differs by {d} (scale {s}, largest {largest})",
                p.name()
            );
        }
        assert!(compared >= 4, "{arch}: only {compared} gradients compared");
    }
    backbones::unfreeze_all(model).unwrap();
    store.freeze_all().unwrap();
}

#[test]
fn a_frozen_prefix_runs_on_a_plan_and_matches_the_general_path() {
    for arch in ["efficientnet_b0", "mobilenetv3_large_100", "mobilenetv4_conv_small"] {
        let Some(store) = random_store(arch, 6) else { return };
        match arch {
            "efficientnet_b0" => {
                let m = EfficientNet::b0(&store).unwrap();
                check_frozen_prefix(arch, &m, &store, &|| m.prefix_plan_builds());
            }
            "mobilenetv3_large_100" => {
                let m = MobileNetV3::large_100(&store).unwrap();
                check_frozen_prefix(arch, &m, &store, &|| m.prefix_plan_builds());
            }
            _ => {
                let m = MobileNetV4::conv_small(&store).unwrap();
                check_frozen_prefix(arch, &m, &store, &|| m.prefix_plan_builds());
            }
        }
    }
}
