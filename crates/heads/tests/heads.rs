use candle_core::{Device, Tensor};
use heads::{Head, HeadConfig, InputKind, Task};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("c{i}")).collect()
}

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn mlp(task: Task, classes: usize, input: InputKind) -> HeadConfig {
    HeadConfig {
        hidden: vec![16, 8],
        dropout: 0.5,
        input,
        ..HeadConfig::linear(task, names(classes), 1)
    }
}

#[test]
fn output_shapes_per_task_and_input_kind() {
    let dev = Device::Cpu;
    let pooled = InputKind::Pooled { features: 12 };
    let map = InputKind::FeatureMap {
        channels: 3,
        height: 2,
        width: 2,
    };
    for (task, classes, outputs) in [(Task::Binary, 2, 1), (Task::MultiClass, 5, 5), (Task::MultiLabel, 4, 4)] {
        for input in [pooled, map] {
            let head = Head::seeded(mlp(task, classes, input), &dev, 1).unwrap();
            let x = match input {
                InputKind::Pooled { .. } => random(&[7, 12], 2),
                InputKind::FeatureMap { .. } => random(&[7, 3, 2, 2], 2),
            };
            let logits = head.forward(&x, None).unwrap();
            assert_eq!(logits.dims(), &[7, outputs]);
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            assert_eq!(head.forward(&x, Some(&mut rng)).unwrap().dims(), &[7, outputs]);
            let p = head.predict_proba(&x).unwrap();
            assert_eq!(p.dims(), &[7, classes]);
            let p: Vec<Vec<f32>> = p.to_vec2().unwrap();
            for row in &p {
                assert!(row.iter().all(|v| (0.0..=1.0).contains(v)));
                if task != Task::MultiLabel {
                    assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
                }
            }
        }
    }
    // Wrong input shape is an error, not a panic.
    let head = Head::seeded(mlp(Task::MultiClass, 3, pooled), &dev, 1).unwrap();
    assert!(head.forward(&random(&[2, 11], 0), None).is_err());
}

#[test]
fn feature_map_is_flattened_channels_first() {
    let dev = Device::Cpu;
    let map = InputKind::FeatureMap {
        channels: 2,
        height: 3,
        width: 2,
    };
    let head = Head::seeded(
        HeadConfig {
            input: map,
            ..HeadConfig::linear(Task::MultiClass, names(3), 1)
        },
        &dev,
        5,
    )
    .unwrap();
    let x = random(&[4, 2, 3, 2], 9);
    let (w, b) = (&head.vars()[0].1, &head.vars()[1].1);
    let manual = x
        .flatten_from(1)
        .unwrap()
        .matmul(&w.t().unwrap())
        .unwrap()
        .broadcast_add(b)
        .unwrap();
    let got = head.forward(&x, None).unwrap();
    let diff = (manual - got)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-6);
}

#[test]
fn same_seed_same_init_and_pytorch_bounds() {
    let dev = Device::Cpu;
    let cfg = mlp(Task::MultiClass, 3, InputKind::Pooled { features: 64 });
    let a = Head::seeded(cfg.clone(), &dev, 42).unwrap();
    let b = Head::seeded(cfg.clone(), &dev, 42).unwrap();
    let c = Head::seeded(cfg, &dev, 43).unwrap();
    let flat = |h: &Head| -> Vec<f32> {
        h.vars()
            .iter()
            .flat_map(|(_, v)| v.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect()
    };
    assert_eq!(flat(&a), flat(&b));
    assert_ne!(flat(&a), flat(&c));
    let names: Vec<String> = a.vars().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "hidden.0.weight",
            "hidden.0.bias",
            "hidden.1.weight",
            "hidden.1.bias",
            "out.weight",
            "out.bias"
        ]
    );
    // First layer: fan_in 64 → bound 1/8; values spread over the range.
    let w: Vec<f32> = a.vars()[0].1.flatten_all().unwrap().to_vec1().unwrap();
    let max = w.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(max <= 0.125 && max > 0.12, "max |w| = {max}");
}

#[test]
fn dropout_masks_follow_the_rng() {
    let dev = Device::Cpu;
    let head = Head::seeded(mlp(Task::MultiClass, 3, InputKind::Pooled { features: 12 }), &dev, 1).unwrap();
    let x = random(&[16, 12], 2);
    let run = |seed| -> Vec<Vec<f32>> {
        head.forward(&x, Some(&mut ChaCha8Rng::seed_from_u64(seed)))
            .unwrap()
            .to_vec2()
            .unwrap()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
    let eval: Vec<Vec<f32>> = head.forward(&x, None).unwrap().to_vec2().unwrap();
    assert_ne!(run(7), eval);
}

#[test]
fn save_load_roundtrip_gives_identical_outputs() {
    let dev = Device::Cpu;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = mlp(
        Task::MultiLabel,
        4,
        InputKind::FeatureMap {
            channels: 3,
            height: 2,
            width: 2,
        },
    );
    cfg.backbone = Some("resnet18".into());
    cfg.backbone_sha256 = Some("ab".repeat(32));
    cfg.preprocessing = Some(serde_json::json!({"input_size": [224, 224], "mean": [0.5, 0.5, 0.5]}));
    let head = Head::seeded(cfg, &dev, 11).unwrap();
    let path = dir.path().join("head.safetensors");
    head.save(&path).unwrap();
    assert!(dir.path().join("head.json").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
    let loaded = Head::load(&path, &dev).unwrap();
    assert_eq!(loaded.config(), head.config());
    let x = random(&[5, 3, 2, 2], 4);
    let a: Vec<Vec<f32>> = head.predict_proba(&x).unwrap().to_vec2().unwrap();
    let b: Vec<Vec<f32>> = loaded.predict_proba(&x).unwrap().to_vec2().unwrap();
    assert_eq!(a, b);
    // Missing files are clear errors naming the file.
    let err = Head::load(&dir.path().join("nope.safetensors"), &dev)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.json"), "{err}");
}

#[test]
fn invalid_configs_are_errors() {
    let dev = Device::Cpu;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    assert!(Head::new(HeadConfig::linear(Task::Binary, names(3), 4), &dev, &mut rng).is_err());
    let cfg = HeadConfig {
        dropout: 1.0,
        ..HeadConfig::linear(Task::MultiClass, names(3), 4)
    };
    assert!(Head::new(cfg, &dev, &mut rng).is_err());
}
