//! MobileNetV4-Conv-Small: timm's tensors (names and shapes), its stages (as the registry lists them), stage
//! freezing, train-mode BatchNorm statistics and gradients.

use crate::support::{
    check_backward, check_freeze_last_of, check_manifest, check_train_mode_stats, random_input, random_store,
};
use backbones::{registry, zoo};

const ARCH: &str = "mobilenetv4_conv_small";

#[test]
fn mobilenetv4_conv_small_matches_manifest() {
    check_manifest(ARCH);
}

#[test]
fn mobilenetv4_stages_are_the_registrys() {
    let store = backbones::ParamStore::empty(candle_core::DType::F32, &candle_core::Device::Cpu);
    let model = zoo::build(ARCH, &store).unwrap();
    let names: Vec<String> = model.stages().into_iter().map(|s| s.name).collect();
    assert_eq!(names, registry::get(ARCH).unwrap().stages);
    assert_eq!(
        names,
        ["stem", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4", "head"]
    );
    assert_eq!(model.num_features(), 1280);
}

#[test]
fn mobilenetv4_freeze_all_but_last_unfreezes_only_the_head() {
    check_freeze_last_of(ARCH, 7);
}

#[test]
fn mobilenetv4_train_mode_updates_only_unfrozen_batchnorm_stats() {
    // The head (conv_head + norm_head) has a BatchNorm; blocks.4 too.
    check_train_mode_stats(ARCH, 1);
    check_train_mode_stats(ARCH, 3);
}

#[test]
fn mobilenetv4_backward_reaches_only_unfrozen_vars() {
    // Head only, then the last UIB stage (blocks.3) too.
    check_backward(ARCH, 1);
    check_backward(ARCH, 3);
}

/// Train mode with every stage trainable: finite, non-zero gradients for the UIB stage's parameters (`dw_start`,
/// `pw_exp`, `dw_mid`, `pw_proj` of blocks.3).
#[test]
fn mobilenetv4_last_uib_stage_gets_finite_gradients() {
    let Some(store) = random_store(ARCH, 7) else {
        return;
    };
    let model = zoo::build(ARCH, &store).unwrap();
    backbones::unfreeze_all(model.as_ref()).unwrap();
    let x = random_input(2, 64, 8);
    let loss = model
        .forward_pooled(&x, true)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for p in store.params().into_iter().filter(|p| p.name().starts_with("blocks.3.")) {
        let g = grads
            .get(p.var().unwrap().as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {}", p.name()));
        let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(norm.is_finite(), "non-finite gradient for {}", p.name());
        if p.name().ends_with("conv.weight") {
            assert!(norm > 0.0, "zero gradient for {}", p.name());
        }
        let part = p.name().split('.').nth(3).unwrap().to_string();
        seen.insert(part);
    }
    let want: std::collections::BTreeSet<String> = ["dw_start", "pw_exp", "dw_mid", "pw_proj"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(seen, want);
}
