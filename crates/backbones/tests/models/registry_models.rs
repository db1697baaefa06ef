//! The model registry: every `models/*.toml` is embedded, parses, and agrees with timm's manifest.

use std::collections::BTreeSet;
use std::path::Path;

use backbones::registry::{self, ModelSpec, SOURCES};
use backbones::Error;

fn models_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

#[test]
fn every_model_file_is_embedded_and_parses_with_its_file_name() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(models_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let embedded: BTreeSet<String> = SOURCES.iter().map(|(s, _)| s.to_string()).collect();
    assert_eq!(on_disk, embedded, "models/*.toml and registry::SOURCES differ");
    for (stem, text) in SOURCES {
        let on_disk = std::fs::read_to_string(models_dir().join(format!("{stem}.toml"))).unwrap();
        assert_eq!(&on_disk, text, "{stem}: embedded text is stale");
        let spec = ModelSpec::from_toml(text, stem).unwrap();
        assert_eq!(&spec.name, stem, "file name must equal the model name");
    }
}

#[test]
fn names_are_unique_and_specs_are_sane() {
    let all = registry::all();
    let names: BTreeSet<&str> = all.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names.len(), all.len());
    assert_eq!(all.len(), SOURCES.len());
    for m in all {
        assert!(!m.stages.is_empty(), "{}: no stages", m.name);
        let uniq: BTreeSet<&String> = m.stages.iter().collect();
        assert_eq!(uniq.len(), m.stages.len(), "{}: duplicate stage", m.name);
        assert!(m.hub.repo.contains('/'), "{}: hub repo `{}`", m.name, m.hub.repo);
        assert_eq!(m.hub.file, "model.safetensors");
        assert!(!m.hub.revision.is_empty());
        if let Some(sha) = &m.hub.sha256 {
            assert!(
                sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
                "{}: sha256",
                m.name
            );
        }
        assert!(!m.license.is_empty() && !m.description.is_empty());
        assert!(m.num_features > 0 && m.params_m > 0.0);
        if m.num_classes == 0 {
            // A checkpoint without classifier (DINOv2): the model must not build one.
            let store = backbones::ParamStore::empty(candle_core::DType::F32, &candle_core::Device::Cpu);
            let model = backbones::zoo::build(&m.architecture, &store).unwrap();
            assert!(!model.has_classifier(), "{}: num_classes = 0 but a classifier", m.name);
        }
        assert!(m.preprocess.crop_pct > 0.0 && m.preprocess.crop_pct <= 1.0);
        assert!(m.preprocess.std.iter().all(|s| *s > 0.0));
        assert_eq!(registry::get(&m.name).unwrap(), *m);
    }
}

#[test]
fn brief_choices_for_torchvision_weights() {
    for (name, repo) in [
        ("resnet18", "timm/resnet18.tv_in1k"),
        ("resnet34", "timm/resnet34.tv_in1k"),
        ("vgg16", "timm/vgg16.tv_in1k"),
    ] {
        let m = registry::get(name).unwrap();
        assert_eq!(m.hub.repo, repo);
        assert_eq!(m.preprocess.interpolation, data::Interpolation::Bilinear);
        assert_eq!(m.preprocess.crop_pct, 0.875);
        assert_eq!(m.preprocess.mean, data::IMAGENET_MEAN);
        assert_eq!(m.preprocess.std, data::IMAGENET_STD);
    }
}

#[test]
fn unknown_names_suggest_the_nearest() {
    match registry::get("resnet19") {
        Err(Error::UnknownModel { name, suggestion }) => {
            assert_eq!(name, "resnet19");
            assert!(
                matches!(suggestion.as_deref(), Some("resnet18") | Some("resnet34")),
                "{suggestion:?}"
            );
        }
        other => panic!("expected UnknownModel, got {other:?}"),
    }
    let e = registry::get("efficientnet_lite0").unwrap_err().to_string();
    assert!(e.contains("tf_efficientnet_lite0"), "{e}");
    match registry::get("a-completely-different-thing") {
        Err(Error::UnknownModel { suggestion, .. }) => assert_eq!(suggestion, None),
        other => panic!("expected UnknownModel, got {other:?}"),
    }
}

#[test]
fn invalid_model_text_is_a_one_line_error_naming_the_file() {
    let e = ModelSpec::from_toml("name = 3", "models/bad.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("models/bad.toml") && !e.contains('\n'), "{e}");
}

/// Preprocessing, feature width, classes and size agree with timm's manifest (for the same Hub id).
#[test]
fn registry_matches_timm_manifest() {
    let Some(path) = tests::assets::require("parity/timm_manifest.json") else {
        return;
    };
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut compared_preprocess = 0;
    let mut absent = BTreeSet::new();
    for m in registry::all() {
        let entry = &manifest[&m.architecture];
        if !entry.is_object() {
            absent.insert(m.name.as_str());
            continue;
        }
        let tensors = entry["tensors"].as_object().unwrap();
        let shape = |k: &str| -> Option<Vec<usize>> {
            tensors.get(k).map(|v| {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect()
            })
        };
        // Same Hub id: the evaluation preprocessing must be timm's data_config.
        if entry["hf_hub_id"].as_str() == Some(m.hub.repo.as_str()) {
            let dc = &entry["data_config"];
            let input: Vec<usize> = dc["input_size"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(m.preprocess.input_size.to_vec(), input[1..].to_vec(), "{}", m.name);
            let interp: data::Interpolation = dc["interpolation"].as_str().unwrap().parse().unwrap();
            assert_eq!(m.preprocess.interpolation, interp, "{}", m.name);
            assert!(
                (m.preprocess.crop_pct as f64 - dc["crop_pct"].as_f64().unwrap()).abs() < 1e-6,
                "{}",
                m.name
            );
            for c in 0..3 {
                assert!(
                    (m.preprocess.mean[c] as f64 - dc["mean"][c].as_f64().unwrap()).abs() < 1e-6,
                    "{}",
                    m.name
                );
                assert!(
                    (m.preprocess.std[c] as f64 - dc["std"][c].as_f64().unwrap()).abs() < 1e-6,
                    "{}",
                    m.name
                );
            }
            compared_preprocess += 1;
        }
        // Features: pre-logits after conv_head where the model has one, else timm's num_features.
        let expected_features = match shape("conv_head.weight") {
            Some(s) => s[0],
            None => entry["num_features"].as_u64().unwrap() as usize,
        };
        assert_eq!(m.num_features, expected_features, "{}: num_features", m.name);
        // Classes: rows of the classifier (the last 2-d weight).
        let classifier = ["fc.weight", "head.fc.weight", "classifier.weight", "head.weight"]
            .iter()
            .find_map(|k| shape(k));
        assert_eq!(classifier.map(|s| s[0]), Some(m.num_classes), "{}: num_classes", m.name);
        // Size: learnable parameters (running statistics excluded) within 1 %.
        let params: usize = tensors
            .iter()
            .filter(|(k, _)| !k.contains("running_") && !k.contains("num_batches"))
            .map(|(_, v)| {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .product::<usize>()
            })
            .sum();
        let rel = (m.params_m as f64 - params as f64 / 1e6).abs() / (params as f64 / 1e6);
        assert!(
            rel < 0.01,
            "{}: params_m {} vs {} in the manifest",
            m.name,
            m.params_m,
            params
        );
    }
    assert!(compared_preprocess >= 4, "too few models share the manifest's Hub id");
    // Only the round-2 models are missing from the manifest (checked by `round2_models_match_their_index`).
    assert_eq!(absent, BTreeSet::from(ROUND2_ONLY), "models missing from the manifest");
}

/// Registered models that timm's manifest lacks.
const ROUND2_ONLY: [&str; 4] = [
    "convnext_atto",
    "vit_base_patch14_dinov2",
    "vit_small_patch14_dinov2",
    "vit_tiny_patch16_224",
];

/// Models outside the manifest agree with `round2_index.json` (Hub id, preprocessing, features; size when the
/// fixture is the full model); DINOv2-B, in neither, shares DINOv2-S's preprocessing and Hub tag.
#[test]
fn round2_models_match_their_index() {
    let Some(path) = tests::assets::require("parity/round2_index.json") else {
        return;
    };
    let index: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for name in ["convnext_atto", "vit_tiny_patch16_224", "vit_small_patch14_dinov2"] {
        let m = registry::get(name).unwrap();
        let entry = &index[name];
        assert_eq!(entry["hf_hub_id"].as_str(), Some(m.hub.repo.as_str()), "{name}");
        assert_eq!(entry["num_features"].as_u64(), Some(m.num_features as u64), "{name}");
        let p = &entry["preprocess"];
        let input: Vec<u64> = p["input_size"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(
            input[1..],
            [m.preprocess.input_size[0] as u64, m.preprocess.input_size[1] as u64],
            "{name}"
        );
        let interp: data::Interpolation = p["interpolation"].as_str().unwrap().parse().unwrap();
        assert_eq!(m.preprocess.interpolation, interp, "{name}");
        assert!(
            (m.preprocess.crop_pct as f64 - p["crop_pct"].as_f64().unwrap()).abs() < 1e-6,
            "{name}"
        );
        for c in 0..3 {
            assert!(
                (m.preprocess.mean[c] as f64 - p["mean"][c].as_f64().unwrap()).abs() < 1e-6,
                "{name}"
            );
            assert!(
                (m.preprocess.std[c] as f64 - p["std"][c].as_f64().unwrap()).abs() < 1e-6,
                "{name}"
            );
        }
        let full = entry["create_kwargs"].as_object().is_some_and(|o| o.is_empty());
        if full {
            let Some(w) = tests::assets::require(&format!("parity/{name}.weights.safetensors")) else {
                return;
            };
            let tensors = candle_core::safetensors::load(w, &candle_core::Device::Cpu).unwrap();
            let params: usize = tensors.values().map(|t| t.elem_count()).sum();
            let rel = (m.params_m as f64 - params as f64 / 1e6).abs() / (params as f64 / 1e6);
            assert!(rel < 0.01, "{name}: params_m {} vs {params} in the fixture", m.params_m);
        }
    }
    let (s, b) = (
        registry::get("vit_small_patch14_dinov2").unwrap(),
        registry::get("vit_base_patch14_dinov2").unwrap(),
    );
    assert_eq!(s.preprocess, b.preprocess);
    assert_eq!(b.hub.repo, "timm/vit_base_patch14_dinov2.lvd142m");
    assert_eq!((s.num_classes, b.num_classes), (0, 0));
}
