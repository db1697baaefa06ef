//! ConvNeXt, ViT and DINOv2: parity with timm on the round-2 fixtures, timm's tensor names (manifest), position
//! embedding resampling, training (gradients reach exactly the trainable parameters), the inference path
//! against the plain path, any input size for DINOv2, and multi-scale shapes.

use std::collections::HashMap;

use crate::support::{assert_close, check_manifest, max_abs, max_abs_diff, random_input};
use backbones::vit::{self, bicubic_aa_weights, resample_abs_pos_embed, Vit, VitConfig};
use backbones::{convnext, registry, zoo, Backbone, ParamStore};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

/// The round-2 fixture `name`: store over its float16 weights (as f32) and the reference tensors.
fn round2_fixture(name: &str) -> Option<(ParamStore, HashMap<String, Tensor>)> {
    let index = tests::assets::require("parity/round2_index.json")?;
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(index).unwrap()).unwrap();
    assert!(v.get(name).is_some(), "{name} not in round2_index.json");
    let weights = tests::assets::require(&format!("parity/{name}.weights.safetensors"))?;
    let reference = tests::assets::require(&format!("parity/{name}.reference.safetensors"))?;
    let store = ParamStore::from_safetensors(&weights, DType::F32, &Device::Cpu).unwrap();
    let refs = candle_core::safetensors::load(&reference, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, t.to_dtype(DType::F32).unwrap()))
        .collect();
    Some((store, refs))
}

/// Parity of `forward_features`, pooled `features` and `logits` (when the model has a classifier).
fn check_round2(name: &str, model: &dyn Backbone, store: &ParamStore, refs: &HashMap<String, Tensor>) {
    assert!(store.unused().is_empty(), "{name}: unused {:?}", store.unused());
    let input = &refs["input"];
    let t = std::time::Instant::now();
    let feats = model.forward_features(input, false).unwrap();
    println!(
        "{name}: forward_features of {:?} took {:.2?}",
        input.dims(),
        t.elapsed()
    );
    assert_close(&format!("{name} forward_features"), &feats, &refs["forward_features"]);
    let pooled = model.forward_pooled(input, false).unwrap();
    assert_eq!(pooled.dims(), &[4, model.num_features()]);
    assert_close(&format!("{name} features"), &pooled, &refs["features"]);
    match model.classify(&pooled).unwrap() {
        Some(logits) => assert_close(&format!("{name} logits"), &logits, &refs["logits"]),
        // timm's forward() of a model without classifier returns the pooled features.
        None => assert_close(&format!("{name} logits (= features)"), &pooled, &refs["logits"]),
    }
}

#[test]
fn convnext_atto_matches_timm() {
    let Some((store, refs)) = round2_fixture("convnext_atto") else {
        return;
    };
    let model = zoo::build("convnext_atto", &store).unwrap();
    assert!(model.has_classifier());
    check_round2("convnext_atto", model.as_ref(), &store, &refs);
}

#[test]
fn vit_tiny_matches_timm() {
    let Some((store, refs)) = round2_fixture("vit_tiny_patch16_224") else {
        return;
    };
    let model = zoo::build("vit_tiny_patch16_224", &store).unwrap();
    assert!(model.has_classifier());
    check_round2("vit_tiny_patch16_224", model.as_ref(), &store, &refs);
}

/// MobileNetV4-Conv-Small: forward_features (960×7×7), the 1280 pre-logits (conv_head, norm_head, ReLU) and the
/// logits; the multi-scale maps (timm's `features_only` rule) end with the same 960-channel map.
#[test]
fn mobilenetv4_conv_small_matches_timm() {
    let name = "mobilenetv4_conv_small";
    let Some((store, refs)) = round2_fixture(name) else {
        return;
    };
    let model = zoo::build(name, &store).unwrap();
    assert!(model.has_classifier());
    check_round2(name, model.as_ref(), &store, &refs);

    // timm's builder: the first block has a stride, so the stem (`bn1`, 1/2) is feature 0; then every stage whose
    // successor starts with a stride (blocks.0, .1, .2) and the last stage (blocks.4). blocks.3 (128 ch, 1/32) is
    // followed by the stride-1 blocks.4, so it is no feature.
    let expected = [
        ("bn1", 2, 32),
        ("blocks.0", 4, 32),
        ("blocks.1", 8, 64),
        ("blocks.2", 16, 96),
        ("blocks.4", 32, 960),
    ];
    let info: Vec<(String, usize, usize)> = model
        .feature_info()
        .into_iter()
        .map(|f| (f.module, f.reduction, f.channels))
        .collect();
    let expected: Vec<(String, usize, usize)> = expected.iter().map(|&(m, r, c)| (m.to_string(), r, c)).collect();
    assert_eq!(info, expected);
    let input = &refs["input"];
    let maps = model.forward_all_features(input, false).unwrap();
    for (m, (_, r, c)) in maps.iter().zip(&expected) {
        assert_eq!(m.dims(), &[4, *c, 224 / r, 224 / r]);
    }
    assert_close("mobilenetv4 last multi-scale map", &maps[4], &refs["forward_features"]);
    let some = model.forward_multiscale(input, false, &[0, 2]).unwrap();
    assert_eq!(max_abs_diff(&some[0], &maps[0]), 0.0);
    assert_eq!(max_abs_diff(&some[1], &maps[2]), 0.0);
}

/// The fixture is timm's `vit_small_patch14_dinov2` with `depth=3, img_size=224`: the same code, another config.
#[test]
fn dinov2_small_matches_timm() {
    let Some((store, refs)) = round2_fixture("vit_small_patch14_dinov2") else {
        return;
    };
    let cfg = VitConfig {
        depth: 3,
        img_size: 224,
        ..*vit::config("vit_small_patch14_dinov2").unwrap()
    };
    let model = Vit::new(&cfg, &store).unwrap();
    assert!(!model.has_classifier());
    check_round2("vit_small_patch14_dinov2", &model, &store, &refs);
    // The general (autograd) path agrees with timm too.
    let plain = model.forward_tokens(&refs["input"], false).unwrap();
    assert_close("dinov2 plain path", &plain, &refs["forward_features"]);
}

#[test]
fn convnext_tiny_has_timms_tensor_names() {
    check_manifest("convnext_tiny");
}

#[test]
fn vit_small_has_timms_tensor_names() {
    check_manifest("vit_small_patch16_224");
}

// ---------------------------------------------------------------------------------------------------------------
// Position embeddings

#[test]
fn resampling_weights_are_the_identity_at_the_same_size() {
    for n in [1, 2, 7, 16, 37] {
        let w = bicubic_aa_weights(n, n);
        for i in 0..n {
            for j in 0..n {
                let e = if i == j { 1.0 } else { 0.0 };
                assert!((w[i * n + j] - e).abs() < 1e-12, "{n}: w[{i}][{j}] = {}", w[i * n + j]);
            }
        }
    }
}

/// 1-D weights for 2 → 4, derived by hand from PyTorch's antialiased bicubic (PIL's filter: a = -0.5, support 2
/// when enlarging, taps outside the input dropped, rows renormalised): output centres 0.25, 0.75, 1.25, 1.75.
fn two_to_four() -> [[f64; 2]; 4] {
    // Output 0: distances 0.25 and 1.25 → 0.8671875 and -0.0703125, sum 0.796875.
    let (a, b) = (0.8671875 / 0.796875, -0.0703125 / 0.796875);
    // Output 1: distances 0.25 and 0.75 → 0.8671875 and 0.2265625, sum 1.09375.
    let (c, d) = (0.8671875 / 1.09375, 0.2265625 / 1.09375);
    [[a, b], [c, d], [d, c], [b, a]]
}

#[test]
fn resampling_weights_match_the_hand_derivation() {
    let w = bicubic_aa_weights(2, 4);
    for (i, row) in two_to_four().iter().enumerate() {
        for j in 0..2 {
            assert!((w[i * 2 + j] - row[j]).abs() < 1e-12, "w[{i}][{j}] = {}", w[i * 2 + j]);
        }
    }
    // Shrinking (the 518-px DINOv2 grid 37 → 16 at 224 px): antialiasing widens the filter beyond 4 taps.
    let w = bicubic_aa_weights(37, 16);
    for row in w.chunks(37) {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(row.iter().filter(|v| **v != 0.0).count() > 4);
    }
}

/// A 2×2 grid with a class token to 4×4: the prefix row is kept, the grid is `W · G · Wᵀ` per channel.
#[test]
fn pos_embed_resampling_2x2_to_4x4() {
    let dev = Device::Cpu;
    // Rows: class token, then the grid (1, 2; 3, 4) in channel 0 and its negation in channel 1.
    let vals = [7f32, -7., 1., -1., 2., -2., 3., -3., 4., -4.];
    let pos = Tensor::from_slice(&vals, (1, 5, 2), &dev).unwrap();
    let out = resample_abs_pos_embed(&pos, (2, 2), (4, 4), 1).unwrap();
    assert_eq!(out.dims(), &[1, 17, 2]);
    let out: Vec<Vec<f32>> = out.squeeze(0).unwrap().to_vec2().unwrap();
    assert_eq!(out[0], vec![7., -7.]);
    let g = [[1.0, 2.0], [3.0, 4.0]];
    let w = two_to_four();
    for i in 0..4 {
        for j in 0..4 {
            let mut e = 0.0;
            for (a, ga) in g.iter().enumerate() {
                for (b, gab) in ga.iter().enumerate() {
                    e += w[i][a] * w[j][b] * gab;
                }
            }
            let got = &out[1 + i * 4 + j];
            assert!((got[0] as f64 - e).abs() < 1e-5, "({i}, {j}): {} vs {e}", got[0]);
            assert!((got[1] as f64 + e).abs() < 1e-5, "({i}, {j}) channel 1");
        }
    }
    // Same grid: returned as stored.
    let same = resample_abs_pos_embed(&pos, (2, 2), (2, 2), 1).unwrap();
    assert_eq!(max_abs_diff(&same, &pos), 0.0);
    // A grid that does not fit the rows is an error, not a panic.
    assert!(resample_abs_pos_embed(&pos, (3, 3), (4, 4), 1).is_err());
}

// ---------------------------------------------------------------------------------------------------------------
// Training, inference path, input sizes

/// Seeded random values for every tensor `build` creates (norm scales near 1, fan-in scaled matrices, tokens and
/// position embeddings of order 0.5), as a store.
fn random_store(build: impl Fn(&ParamStore) -> Box<dyn Backbone>, seed: u64) -> ParamStore {
    let empty = ParamStore::empty(DType::F32, &Device::Cpu);
    drop(build(&empty));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let tensors: HashMap<String, Tensor> = empty
        .state_dict()
        .into_iter()
        .map(|(k, t)| {
            let s = t.dims().to_vec();
            let n: usize = s.iter().product();
            let tokens = k.ends_with("pos_embed") || k.ends_with("_token");
            let values: Vec<f32> = if tokens {
                (0..n).map(|_| rng.gen_range(-0.5f32..0.5)).collect()
            } else if s.len() >= 2 {
                let a = (3.0 / s[1..].iter().product::<usize>() as f32).sqrt();
                (0..n).map(|_| rng.gen_range(-a..a)).collect()
            } else if k.ends_with("gamma") || (k.contains("norm") && k.ends_with("weight")) {
                (0..n).map(|_| rng.gen_range(0.5f32..1.5)).collect()
            } else {
                (0..n).map(|_| rng.gen_range(-0.1f32..0.1)).collect()
            };
            (k, Tensor::from_vec(values, s.as_slice(), &Device::Cpu).unwrap())
        })
        .collect();
    ParamStore::from_tensors(tensors, DType::F32, &Device::Cpu)
}

fn zoo_random(arch: &str, seed: u64) -> (ParamStore, Box<dyn Backbone>) {
    let store = random_store(|s| zoo::build(arch, s).unwrap(), seed);
    let model = zoo::build(arch, &store).unwrap();
    (store, model)
}

/// A small DINOv2-style ViT (layer scale, 4 register tokens, position embeddings for the patches only).
fn small_reg_config() -> VitConfig {
    VitConfig {
        img_size: 56,
        embed_dim: 64,
        depth: 2,
        num_heads: 2,
        ..vit::VIT_SMALL_PATCH14_REG4_DINOV2
    }
}

/// Backward of a loss on the pooled features: every trainable parameter gets a finite, non-zero gradient, frozen
/// ones none; returns how many were trainable.
fn check_gradients(what: &str, model: &dyn Backbone, x: &Tensor) -> usize {
    let pooled = model.forward_pooled(x, true).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let dir: Vec<f32> = (0..pooled.elem_count()).map(|_| rng.gen_range(-1f32..1.0)).collect();
    let dir = Tensor::from_vec(dir, pooled.dims(), &Device::Cpu).unwrap();
    let loss = ((&pooled * &dir).unwrap().sum_all().unwrap() + pooled.sqr().unwrap().mean_all().unwrap()).unwrap();
    let grads = loss.backward().unwrap();
    let mut trainable = 0;
    for p in model.store().params() {
        match p.var() {
            Some(v) => {
                let g = grads
                    .get(v.as_tensor())
                    .unwrap_or_else(|| panic!("{what}: no gradient for trainable {}", p.name()));
                assert_eq!(g.dims(), v.dims());
                let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(
                    norm.is_finite() && norm > 0.0,
                    "{what}: gradient of {} is {norm}",
                    p.name()
                );
                trainable += 1;
            }
            None => assert!(
                grads.get(&p.tensor()).is_none(),
                "{what}: gradient for frozen {}",
                p.name()
            ),
        }
    }
    trainable
}

#[test]
fn convnext_trains_its_unfrozen_stages() {
    let (store, model) = zoo_random("convnext_atto", 1);
    backbones::freeze_all_but_last(model.as_ref(), 2).unwrap();
    let x = random_input(2, 64, 2);
    let n = check_gradients("convnext_atto", model.as_ref(), &x);
    // stages.3 (downsample 4, 2 blocks × 9 tensors) and head.norm (2).
    assert_eq!(n, 4 + 2 * 9 + 2);
    assert!(store
        .trainable_vars()
        .iter()
        .all(|(k, _)| k.starts_with("stages.3") || k.starts_with("head.norm")));
}

/// ConvNeXt runs channels-last on both paths; frozen eval uses the fused LayerNorm, the general path the autograd one.
/// 97×97 leaves a remainder at the 4×4 stem (24×24) and odd maps for the 2×2 downsamples (3×3 → 1×1 at stages.3).
#[test]
fn convnext_inference_path_matches_the_general_path() {
    let (store, model) = zoo_random("convnext_atto", 7);
    let cnx = convnext::ConvNext::from_name("convnext_atto", &store).unwrap();
    for (n, hw) in [(3, 97), (1, 64)] {
        let x = random_input(n, hw, 8);
        assert!(cnx.uses_inference_path(&x, false));
        let fast = model.forward_features(&x, false).unwrap();
        let fast_maps = model.forward_all_features(&x, false).unwrap();
        let p = store.params().into_iter().next().unwrap();
        p.set_trainable(true).unwrap();
        assert!(!cnx.uses_inference_path(&x, false));
        let general = model.forward_features(&x, false).unwrap().detach();
        let general_maps = model.forward_all_features(&x, false).unwrap();
        p.set_trainable(false).unwrap();
        assert_eq!(fast.dims(), &[n, 320, hw / 32, hw / 32]);
        let scale = max_abs(&general);
        let diff = max_abs_diff(&fast, &general);
        assert!(
            scale > 0.0 && diff <= 1e-4 * scale.max(1.0),
            "{hw}: {diff} vs scale {scale}"
        );
        assert_eq!(
            max_abs_diff(&fast_maps[3], &fast),
            0.0,
            "last multi-scale map = forward_features"
        );
        for (a, b) in fast_maps.iter().zip(&general_maps) {
            assert!(max_abs_diff(a, &b.detach()) <= 1e-4 * max_abs(b).max(1.0));
        }
    }
}

#[test]
fn vit_trains_its_unfrozen_stages() {
    let (_, model) = zoo_random("vit_tiny_patch16_224", 3);
    backbones::freeze_all_but_last(model.as_ref(), 2).unwrap();
    let x = random_input(2, 56, 4);
    // blocks.9-11 (3 × 12 tensors) and norm (2); the 56-px input resamples the 14×14 grid to 3×3.
    assert_eq!(check_gradients("vit_tiny", model.as_ref(), &x), 3 * 12 + 2);
}

/// Everything trainable, registers and layer scale included: gradients reach the tokens and, through the
/// resampling, the position embeddings.
#[test]
fn dinov2_with_registers_trains_every_parameter() {
    let cfg = small_reg_config();
    let store = random_store(|s| Box::new(Vit::new(&cfg, s).unwrap()), 5);
    let model = Vit::new(&cfg, &store).unwrap();
    backbones::unfreeze_all(&model).unwrap();
    let x = random_input(2, 42, 6); // 3×3 patches; the checkpoint grid is 4×4
    let n = check_gradients("dinov2_reg", &model, &x);
    // patch_embed (2), cls, reg, pos (3), 2 blocks × 14, norm (2).
    assert_eq!(n, 2 + 3 + 2 * 14 + 2);
    let tokens = model.forward_features(&x, false).unwrap();
    assert_eq!(tokens.dims(), &[2, 1 + 4 + 9, 64]);
}

/// The inference path (fused LayerNorm, attention with no graph) equals the autograd path (the attention kernel itself is
/// checked against the plain composition of ops, gradients included, in `kernels/tests/fused_ops.rs`).
#[test]
fn fused_inference_path_equals_the_plain_path() {
    for (arch, hw) in [("vit_tiny_patch16_224", 224), ("vit_small_patch14_dinov2", 98)] {
        let (store, model) = zoo_random(arch, 7);
        let vit = Vit::from_name(arch, &store).unwrap();
        let x = random_input(2, hw, 8);
        assert!(vit.uses_inference_path(&x, false));
        assert!(!vit.uses_inference_path(&x, true));
        let fused = vit.forward_tokens(&x, true).unwrap();
        let plain = vit.forward_tokens(&x, false).unwrap();
        let rel = max_abs_diff(&fused, &plain) / max_abs(&plain);
        println!("{arch}: fused vs plain max relative difference {rel:.2e}");
        assert!(rel <= 1e-5, "{arch}: fused differs from plain by {rel}");
        // forward_features takes the fused path when frozen, the plain one as soon as anything trains.
        let auto = model.forward_features(&x, false).unwrap();
        assert!(
            max_abs_diff(&auto, &fused) <= 1e-6 * max_abs(&fused),
            "{arch}: not the fused path"
        );
        backbones::freeze_all_but_last(model.as_ref(), 1).unwrap();
        assert!(!vit.uses_inference_path(&x, false));
    }
    // ConvNeXt's inference path (fused LayerNorm) agrees with the plain one as well.
    let (store, model) = zoo_random("convnext_atto", 7);
    let x = random_input(2, 64, 8);
    let fused = model.forward_features(&x, false).unwrap();
    store.params()[0].set_trainable(true).unwrap();
    let plain = model.forward_features(&x, false).unwrap();
    let rel = max_abs_diff(&fused, &plain) / max_abs(&plain);
    assert!(rel <= 1e-5, "convnext: fused differs from plain by {rel}");
}

#[test]
fn dinov2_runs_at_any_input_size() {
    let (_, model) = zoo_random("vit_small_patch14_dinov2", 11);
    let vit = model.as_ref();
    assert!(!vit.has_classifier());
    for (hw, patches) in [(224, 16 * 16), (168, 12 * 12)] {
        let x = random_input(1, hw, 12);
        let tokens = vit.forward_features(&x, false).unwrap();
        assert_eq!(tokens.dims(), &[1, 1 + patches, 384], "{hw} px");
        let pooled = vit.forward_pooled(&x, false).unwrap();
        assert_eq!(pooled.dims(), &[1, 384]);
        assert!(pooled
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .all(|v| v.is_finite()));
        let g = hw / 14;
        let maps = vit.forward_multiscale(&x, false, &[3, 11]).unwrap();
        assert_eq!(maps[1].dims(), &[1, 384, g, g]);
    }
}

#[test]
fn multiscale_shapes_of_the_new_architectures() {
    let x = random_input(1, 64, 13);
    let (_, m) = zoo_random("convnext_atto", 14);
    let maps = m.forward_all_features(&x, false).unwrap();
    let dims: Vec<Vec<usize>> = maps.iter().map(|t| t.dims().to_vec()).collect();
    assert_eq!(
        dims,
        vec![
            vec![1, 40, 16, 16],
            vec![1, 80, 8, 8],
            vec![1, 160, 4, 4],
            vec![1, 320, 2, 2]
        ]
    );
    assert_eq!(max_abs_diff(&maps[3], &m.forward_features(&x, false).unwrap()), 0.0);

    let (_, m) = zoo_random("vit_tiny_patch16_224", 15);
    let info = m.feature_info();
    assert_eq!(info.len(), 12);
    assert!(info.iter().all(|f| f.reduction == 16 && f.channels == 192));
    let maps = m.forward_multiscale(&x, false, &[2, 5, 11]).unwrap();
    assert_eq!(maps.len(), 3);
    for map in &maps {
        assert_eq!(map.dims(), &[1, 192, 4, 4]);
    }
    // The last block's patch tokens, before the final norm: not the normalised forward_features tokens.
    let tokens = m.forward_features(&x, false).unwrap();
    let normed = tokens
        .narrow(1, 1, 16)
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .reshape((1, 192, 4, 4))
        .unwrap();
    assert!(max_abs_diff(&maps[2], &normed) > 1e-3);

    for (arch, c, r) in [
        ("convnext_tiny", [96, 192, 384, 768].as_slice(), 4),
        ("vit_small_patch16_224", [384; 12].as_slice(), 16),
        ("vit_base_patch14_dinov2", [768; 12].as_slice(), 14),
    ] {
        let store = ParamStore::empty(DType::F32, &Device::Cpu);
        let m = zoo::build(arch, &store).unwrap();
        let info = m.feature_info();
        assert_eq!(info.iter().map(|f| f.channels).collect::<Vec<_>>(), c, "{arch}");
        assert_eq!(info[0].reduction, r, "{arch}");
        let last = info.len() - 1;
        let maps = m.forward_multiscale(&x, false, &[0, last]).unwrap();
        assert_eq!(maps[1].dim(1).unwrap(), c[last], "{arch}");
        assert_eq!(maps[1].dim(2).unwrap(), 64 / info[last].reduction, "{arch}");
    }
}

/// Stages as the registry lists them; every backbone parameter in exactly one stage, the classifier in none.
#[test]
fn stages_partition_the_parameters_and_match_the_registry() {
    for arch in [
        "convnext_atto",
        "convnext_tiny",
        "vit_tiny_patch16_224",
        "vit_small_patch16_224",
        "vit_small_patch14_dinov2",
        "vit_base_patch14_dinov2",
    ] {
        let store = ParamStore::empty(DType::F32, &Device::Cpu);
        let m = zoo::build(arch, &store).unwrap();
        let stages = m.stages();
        let names: Vec<String> = stages.iter().map(|s| s.name.clone()).collect();
        assert_eq!(names, registry::get(arch).unwrap().stages, "{arch}");
        let spec = registry::get(arch).unwrap();
        assert_eq!(spec.num_features, m.num_features(), "{arch}");
        assert_eq!(spec.num_classes > 0, m.has_classifier(), "{arch}");
        for p in store.params() {
            let owners = stages
                .iter()
                .filter(|s| {
                    s.prefixes
                        .iter()
                        .any(|pre| backbones::params::name_has_prefix(p.name(), pre))
                })
                .count();
            // ConvNeXt's `head.fc`, ViT's `head`; ConvNeXt's `head.norm` is the `head` stage.
            let classifier = p.name().starts_with("head.") && !p.name().starts_with("head.norm");
            assert_eq!(
                owners,
                usize::from(!classifier),
                "{arch}: {} in {owners} stages",
                p.name()
            );
        }
    }
    // Fewer blocks than four stages: one stage per block.
    let store = ParamStore::empty(DType::F32, &Device::Cpu);
    let m = Vit::new(&small_reg_config(), &store).unwrap();
    let names: Vec<String> = m.stages().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["embed", "blocks.0", "blocks.1", "norm"]);
    assert!(convnext::config("convnext_atto").unwrap().conv_mlp);
}
