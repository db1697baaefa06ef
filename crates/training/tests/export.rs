//! `training::export`: the self-describing model file round-trips, stays readable in its existing format, and
//! refuses files that are not graft models in one line.

use std::collections::HashMap;

use backbones::ParamStore;
use candle_core::{DType, Device, Tensor};
use heads::{Head, HeadConfig, Task};
use training::export::{self, ExportedModel, ModelMeta, WeightsRef, META_KEY};

/// A resnet18 with default weights except a random first conv, and a seeded 3-class linear head.
fn tiny_model() -> ExportedModel {
    let dev = Device::Cpu;
    let store = ParamStore::empty(DType::F32, &dev);
    let backbone = backbones::zoo::build("resnet18", &store).unwrap();
    let conv = store.params().into_iter().find(|p| p.name() == "conv1.weight").unwrap();
    conv.set(&Tensor::randn(0f32, 0.1, conv.tensor().dims(), &dev).unwrap())
        .unwrap();
    let spec = backbones::registry::get("resnet18").unwrap();
    let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let head_cfg = HeadConfig::linear(Task::MultiClass, classes.clone(), backbone.num_features());
    let head = Head::seeded(head_cfg.clone(), &dev, 7).unwrap();
    let meta = ModelMeta {
        model: spec.name.clone(),
        architecture: spec.architecture.clone(),
        classes,
        preprocess: spec.preprocess.clone(),
        head: head_cfg,
        mode: "fine-tune".into(),
        weights: None,
        backbone_included: true,
    };
    ExportedModel { meta, backbone, head }
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn a_saved_model_loads_back_with_its_tensors_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let m = tiny_model();
    export::save(&path, &m.meta, &m.head, Some(m.backbone.as_ref())).unwrap();
    let back = export::load(&path, &Device::Cpu).unwrap();
    assert_eq!(back.meta, m.meta);
    for ((n1, v1), (n2, v2)) in m.head.vars().iter().zip(back.head.vars()) {
        assert_eq!(n1, &n2);
        assert_eq!(values(v1.as_tensor()), values(v2.as_tensor()), "{n1}");
    }
    let (a, b) = (m.backbone.store().state_dict(), back.backbone.store().state_dict());
    assert_eq!(a.len(), b.len());
    assert_eq!(values(&a["conv1.weight"]), values(&b["conv1.weight"]));
    assert!(!dir
        .path()
        .read_dir()
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
    // Predict-ready: the same probabilities as the model it was saved from.
    let x = Tensor::randn(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu).unwrap();
    let (p, q) = (m.probabilities(&x).unwrap(), back.probabilities(&x).unwrap());
    assert_eq!(p.dims(), [2, 3]);
    assert_eq!(values(&p), values(&q));
    assert_eq!(back.classes(), ["a", "b", "c"]);
}

#[test]
fn files_in_the_existing_format_still_load() {
    // The metadata as the CLI has always written it: these keys, under `graft`, tensors `head.*` / `backbone.*`.
    let m = tiny_model();
    let json = serde_json::json!({
        "model": m.meta.model,
        "architecture": m.meta.architecture,
        "classes": m.meta.classes,
        "preprocess": serde_json::to_value(&m.meta.preprocess).unwrap(),
        "head": serde_json::to_value(&m.meta.head).unwrap(),
        "mode": "feature-extract",
        "weights": {"path": "/somewhere/resnet18.safetensors", "sha256": "ab".repeat(32)},
        "backbone_included": true,
    });
    let mut tensors: Vec<(String, Tensor)> = m
        .head
        .vars()
        .into_iter()
        .map(|(k, v)| (format!("head.{k}"), v.as_tensor().clone()))
        .collect();
    tensors.extend(
        m.backbone
            .store()
            .state_dict()
            .into_iter()
            .map(|(k, t)| (format!("backbone.{k}"), t)),
    );
    let info = HashMap::from([(META_KEY.to_string(), json.to_string())]);
    let bytes = safetensors::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(info)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let back = export::load(&path, &Device::Cpu).unwrap();
    assert_eq!(back.meta.mode, "feature-extract");
    assert_eq!(
        back.meta.weights.as_ref().map(|w| w.path.clone()),
        Some("/somewhere/resnet18.safetensors".into())
    );
    let x = Tensor::randn(0f32, 1.0, (1, 3, 64, 64), &Device::Cpu).unwrap();
    assert_eq!(
        values(&m.probabilities(&x).unwrap()),
        values(&back.probabilities(&x).unwrap())
    );
}

#[test]
fn a_model_without_its_backbone_needs_the_recorded_weights_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("best.safetensors");
    let mut m = tiny_model();
    let weights = dir.path().join("pretrained.safetensors");
    m.meta.weights = Some(WeightsRef {
        path: weights.clone(),
        sha256: "0".repeat(64),
    });
    export::save(&path, &m.meta, &m.head, None).unwrap();
    let (meta, tensors) = export::read(&path, &Device::Cpu).unwrap();
    assert!(!meta.backbone_included);
    assert!(tensors.keys().all(|k| k.starts_with("head.")));
    let err = export::load(&path, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("pretrained.safetensors"), "{err}");
    // Present but different from what was recorded: refused by its sha256.
    std::fs::write(&weights, b"not the weights").unwrap();
    let err = export::load(&path, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("changed since training"), "{err}");
}

#[test]
fn files_that_are_not_graft_models_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.safetensors");
    let t = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&HashMap::from([("x".to_string(), t)]), &plain).unwrap();
    let err = export::load(&plain, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("not a graft model file") && !err.contains('\n'), "{err}");
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"garbage").unwrap();
    let err = export::load(&junk, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("junk.safetensors"), "{err}");
}

/// A segmentation and a detection model on the tiny resnet18 round-trip through `save_dense` / `load_dense` with
/// identical outputs; the classifier loader refuses them naming their task, and `task_of_file` tells them apart.
#[test]
fn dense_models_round_trip_and_are_told_apart_from_classifiers() {
    let dev = Device::Cpu;
    let m = tiny_model();
    let spec = backbones::registry::get("resnet18").unwrap();
    let classes: Vec<String> = ["bg", "ant"].iter().map(|s| s.to_string()).collect();
    let info = m.backbone.feature_info();
    let seg = heads::SegHead::new(
        heads::SegHeadConfig::for_encoder(heads::Decoder::Fpn, classes.clone(), &info).unwrap(),
        &dev,
        3,
    )
    .unwrap();
    let det = heads::DetHead::new(
        heads::DetHeadConfig::for_encoder(classes.clone(), &info, 3).unwrap(),
        &dev,
        4,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let x = Tensor::randn(0f32, 1.0, (1, 3, 64, 64), &dev).unwrap();
    let meta = |task: &str, head: serde_json::Value| export::DenseMeta {
        task: task.into(),
        model: spec.name.clone(),
        architecture: spec.architecture.clone(),
        classes: classes.clone(),
        preprocess: spec.preprocess.clone(),
        imgsz: 64,
        head,
        post: None,
        mode: "fine-tune".into(),
        weights: None,
        backbone_included: true,
    };
    let seg_path = dir.path().join("seg.safetensors");
    let seg_meta = meta("segment", serde_json::to_value(seg.config()).unwrap());
    export::save_dense(&seg_path, &seg_meta, seg.store(), Some(m.backbone.as_ref())).unwrap();
    let det_path = dir.path().join("det.safetensors");
    export::save_dense(
        &det_path,
        &meta("detect", serde_json::to_value(det.config()).unwrap()),
        det.store(),
        Some(m.backbone.as_ref()),
    )
    .unwrap();
    let cls_path = dir.path().join("cls.safetensors");
    export::save(&cls_path, &m.meta, &m.head, Some(m.backbone.as_ref())).unwrap();
    assert_eq!(export::task_of_file(&seg_path).unwrap(), "segment");
    assert_eq!(export::task_of_file(&det_path).unwrap(), "detect");
    assert_eq!(export::task_of_file(&cls_path).unwrap(), "classify");
    let e = export::read(&seg_path, &dev).unwrap_err().to_string();
    assert!(e.contains("seg.safetensors") && e.contains("`segment` model"), "{e}");
    assert!(export::load_dense(&cls_path, &dev).is_err());

    let feats = m
        .backbone
        .forward_multiscale(&x, false, &seg.config().out_indices)
        .unwrap();
    let want = seg.forward(&feats, (64, 64), None).unwrap();
    let loaded = export::load_dense(&seg_path, &dev).unwrap();
    assert_eq!(loaded.meta, seg_meta);
    let export::DenseHead::Segment(h) = &loaded.head else {
        panic!("a segmentation head")
    };
    let feats = loaded
        .backbone
        .forward_multiscale(&x, false, &h.config().out_indices)
        .unwrap();
    assert_eq!(values(&h.forward(&feats, (64, 64), None).unwrap()), values(&want));

    let feats = m
        .backbone
        .forward_multiscale(&x, false, &det.config().out_indices)
        .unwrap();
    let want = det.forward(&feats, (64, 64)).unwrap();
    let loaded = export::load_dense(&det_path, &dev).unwrap();
    let export::DenseHead::Detect(h) = &loaded.head else {
        panic!("a detection head")
    };
    let feats = loaded
        .backbone
        .forward_multiscale(&x, false, &h.config().out_indices)
        .unwrap();
    let got = h.forward(&feats, (64, 64)).unwrap();
    assert_eq!(values(&got.cls), values(&want.cls));
    assert_eq!(values(&got.reg), values(&want.reg));
}
