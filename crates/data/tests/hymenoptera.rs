//! The data crate against the real ants/bees set (`../shared/data/hymenoptera`).

mod common;

use candle_core::Device;
use data::{decode_image, inspect, open, Loader, LoaderConfig, TrainVal};

#[test]
fn discovers_classes_and_counts() {
    let Some(root) = tests::assets::require("data/hymenoptera") else {
        return;
    };
    let train = open(&root.join("train")).unwrap();
    let val = open(&root.join("val")).unwrap();
    assert_eq!(train.classes, vec!["ants".to_string(), "bees".to_string()]);
    assert_eq!(val.classes, train.classes);
    assert_eq!(train.class_counts(), vec![124, 121]);
    assert_eq!(val.class_counts(), vec![70, 83]);
    assert_eq!(train.ignored.total(), 0);
    train.check_trainable().unwrap();
    let tv = TrainVal::open(&root.join("train"), &root.join("val"), &Default::default(), false).unwrap();
    assert_eq!(tv.val.class_counts(), vec![70, 83]);
    assert_eq!(tv.dropped_val, 0);
    // Labels follow the sorted class order.
    assert!(train
        .samples
        .iter()
        .all(|s| s.path.parent().unwrap().ends_with(&train.classes[s.label])));
}

#[test]
fn gif_and_jpeg_extension_decode() {
    let Some(root) = tests::assets::require("data/hymenoptera") else {
        return;
    };
    let ants = root.join("train/ants");
    let train = open(&root.join("train")).unwrap();
    for name in ["imageNotFound.gif", "formica.jpeg"] {
        assert!(
            train.samples.iter().any(|s| s.path == ants.join(name)),
            "{name} not listed"
        );
        let img = decode_image(&ants.join(name)).unwrap();
        assert!(img.width() > 10 && img.height() > 10, "{name}: {:?}", img.dimensions());
    }
}

#[test]
fn val_batches_have_shapes_and_labels() {
    let Some(root) = tests::assets::require("data/hymenoptera") else {
        return;
    };
    let val = open(&root.join("val")).unwrap();
    let config = LoaderConfig {
        batch_size: 32,
        shuffle: true,
        seed: 7,
        pre_resize_shorter: Some(64),
        ..Default::default()
    };
    let loader = Loader::new(val, common::pipeline(48, 40, true), config, Device::Cpu).unwrap();
    assert_eq!(loader.num_batches(), 5);
    let mut epoch = loader.epoch(0);
    let mut counts = [0usize; 2];
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    for batch in epoch.by_ref() {
        let batch = batch.unwrap();
        let n = batch.indices.len();
        sizes.push(n);
        assert_eq!(batch.images.dims(), &[n, 3, 48, 40]);
        assert_eq!(batch.labels.dims(), &[n]);
        let labels = batch.labels.to_vec1::<u32>().unwrap();
        for (&i, &l) in batch.indices.iter().zip(&labels) {
            assert_eq!(loader.dataset().samples[i].label as u32, l);
            counts[l as usize] += 1;
        }
        seen.extend(batch.indices);
        assert!(common::values(&batch.images).iter().all(|v| v.is_finite()));
    }
    assert_eq!(sizes, vec![32, 32, 32, 32, 25]);
    assert_eq!(counts, [70, 83]);
    seen.sort();
    assert_eq!(seen, (0..153).collect::<Vec<_>>());
    assert!(epoch.skipped().is_empty());
}

#[test]
fn seeded_split_is_reproducible_and_stratified() {
    let Some(root) = tests::assets::require("data/hymenoptera") else {
        return;
    };
    let train = open(&root.join("train")).unwrap();
    let a = TrainVal::split(train.clone(), 0.2, 42).unwrap();
    let b = TrainVal::split(train.clone(), 0.2, 42).unwrap();
    let c = TrainVal::split(train.clone(), 0.2, 43).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.val.samples, c.val.samples);
    // round(124 × 0.2) = 25 ants, round(121 × 0.2) = 24 bees.
    assert_eq!(a.val.class_counts(), vec![25, 24]);
    assert_eq!(a.train.class_counts(), vec![99, 97]);
    assert_eq!(a.train.classes, train.classes);
    let mut all: Vec<_> = a
        .train
        .samples
        .iter()
        .chain(&a.val.samples)
        .cloned()
        .map(|s| s.path)
        .collect();
    all.sort();
    let mut orig: Vec<_> = train.samples.iter().map(|s| s.path.clone()).collect();
    orig.sort();
    assert_eq!(all, orig, "the split is a partition");
}

#[test]
fn inspect_reports_counts_and_is_usable() {
    let Some(root) = tests::assets::require("data/hymenoptera") else {
        return;
    };
    let report = inspect(&root.join("train")).unwrap();
    assert_eq!(report.counts, vec![124, 121]);
    assert_eq!(report.readable, vec![124, 121], "unreadable: {:?}", report.unreadable);
    assert!(report.is_usable());
    assert!(!report.has_unreadable());
    let ratio = report.imbalance_ratio().unwrap();
    assert!((ratio - 124.0 / 121.0).abs() < 1e-9);
    let text = report.to_string();
    assert!(
        text.contains("ants") && text.contains("124") && text.contains("usable: yes"),
        "{text}"
    );
}
