//! The fit loop with a tiny synthetic backbone: learning, exact resume, NaN detection, fine-tuning, feature cache.

use std::collections::HashMap;

use backbones::layers::{BatchNorm2d, Conv2d, ConvConfig, Padding};
use backbones::{Backbone, ParamStore, Stage};
use candle_core::{DType, Device, Tensor};
use heads::{Head, HeadConfig, Task};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use training::{
    extract_features, fine_tune, fit, fit_observed, load_or_compute, set_trainable, Adam, AdamConfig, CacheKey,
    CacheStatus, Error, FineTuneConfig, FitConfig, Model, Optimizer, ParamGroup, Schedule, Sgd, SgdConfig, Unfreeze,
};

/// conv(3→4) → BN → ReLU → conv(4→8) → ReLU, on 8×8 images; stages `stem` and `stage1`.
struct Tiny {
    store: ParamStore,
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
}

impl Tiny {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut rand = |shape: &[usize], scale: f32| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-scale..scale)).collect();
            Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
        };
        let tensors = HashMap::from([
            ("conv1.weight".to_string(), rand(&[4, 3, 3, 3], 0.5)),
            (
                "bn1.weight".to_string(),
                Tensor::ones(4, DType::F32, &Device::Cpu).unwrap(),
            ),
            (
                "bn1.bias".to_string(),
                Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
            ),
            (
                "bn1.running_mean".to_string(),
                Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
            ),
            (
                "bn1.running_var".to_string(),
                Tensor::ones(4, DType::F32, &Device::Cpu).unwrap(),
            ),
            ("conv2.weight".to_string(), rand(&[8, 4, 3, 3], 0.3)),
            ("conv2.bias".to_string(), rand(&[8], 0.1)),
        ]);
        let store = ParamStore::from_tensors(tensors, DType::F32, &Device::Cpu);
        let conv = |name, i, o, bias| {
            let cfg = ConvConfig {
                in_channels: i,
                out_channels: o,
                kernel: 3,
                padding: Padding::Symmetric(1),
                bias,
                ..Default::default()
            };
            Conv2d::new(&store, name, cfg).unwrap()
        };
        let conv1 = conv("conv1", 3, 4, false);
        let conv2 = conv("conv2", 4, 8, true);
        let bn1 = BatchNorm2d::new(&store, "bn1", 4, 1e-5).unwrap();
        Self {
            store,
            conv1,
            bn1,
            conv2,
        }
    }
}

impl Backbone for Tiny {
    fn name(&self) -> &str {
        "tiny"
    }
    fn num_features(&self) -> usize {
        8
    }
    fn stages(&self) -> Vec<Stage> {
        vec![Stage::new("stem", &["conv1", "bn1"]), Stage::new("stage1", &["conv2"])]
    }
    fn store(&self) -> &ParamStore {
        &self.store
    }
    fn forward_features(&self, x: &Tensor, train: bool) -> backbones::Result<Tensor> {
        let h = self.bn1.forward(&self.conv1.forward(x)?, train)?.relu()?;
        Ok(self.conv2.forward(&h)?.relu()?)
    }
    fn feature_info(&self) -> Vec<backbones::FeatureInfo> {
        vec![backbones::FeatureInfo::new("conv2", 1, 8)]
    }
    fn forward_multiscale(&self, x: &Tensor, train: bool, idx: &[usize]) -> backbones::Result<Vec<Tensor>> {
        backbones::backbone::check_out_indices("tiny", 1, idx)?;
        Ok(vec![self.forward_features(x, train)?])
    }
    fn has_classifier(&self) -> bool {
        false
    }
    fn classify(&self, _pooled: &Tensor) -> backbones::Result<Option<Tensor>> {
        Ok(None)
    }
}

/// Images whose class sets which colour channel is brighter, with noise; `n` per class.
fn images(classes: usize, n: usize, seed: u64) -> (Tensor, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for i in 0..classes * n {
        let c = i % classes;
        for ch in 0..3 {
            for _ in 0..64 {
                let base = if ch == c { 0.8 } else { 0.0 };
                x.push(base + rng.gen_range(-0.7f32..0.7));
            }
        }
        y.push(c as u32);
    }
    (Tensor::from_vec(x, (classes * n, 3, 8, 8), &Device::Cpu).unwrap(), y)
}

type Batches = Vec<training::Result<(Tensor, Tensor)>>;

/// Shuffled batches, the order fixed by (seed, epoch).
fn batches(x: &Tensor, y: &[u32], bs: usize, shuffle: Option<(u64, usize)>) -> Batches {
    let mut idx: Vec<u32> = (0..y.len() as u32).collect();
    if let Some((seed, epoch)) = shuffle {
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed * 1000 + epoch as u64));
    }
    idx.chunks(bs)
        .map(|c| {
            let i = Tensor::new(c, &Device::Cpu)?;
            let yb: Vec<u32> = c.iter().map(|&k| y[k as usize]).collect();
            Ok((x.index_select(&i, 0)?, Tensor::new(yb.as_slice(), &Device::Cpu)?))
        })
        .collect()
}

fn head_for(classes: usize, dropout: f32) -> Head {
    let names = (0..classes).map(|c| format!("c{c}")).collect();
    let cfg = HeadConfig {
        hidden: vec![16],
        dropout,
        ..HeadConfig::linear(Task::MultiClass, names, 8)
    };
    Head::seeded(cfg, &Device::Cpu, 11).unwrap()
}

fn strip_seconds(h: &[training::EpochRecord]) -> Vec<training::EpochRecord> {
    h.iter()
        .map(|r| training::EpochRecord {
            seconds: 0.0,
            ..r.clone()
        })
        .collect()
}

fn head_values(h: &Head) -> Vec<f32> {
    h.vars()
        .iter()
        .flat_map(|(_, v)| v.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect()
}

#[test]
fn fit_improves_accuracy() {
    let (x, y) = images(3, 24, 1);
    let (vx, vy) = images(3, 10, 2);
    let bb = Tiny::new(5);
    set_trainable(&bb, Unfreeze::Last(1), false).unwrap();
    let head = head_for(3, 0.0);
    let model = Model {
        backbone: Some(&bb),
        head: &head,
    };
    let groups = training::discriminative_groups(model, 0.03, 10.0);
    assert_eq!(
        groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
        ["stage1", "head"]
    );
    assert!((groups[0].lr - 0.003).abs() < 1e-12);
    let mut opt = Adam::new(groups, AdamConfig::adamw()).unwrap();
    let cfg = FitConfig {
        epochs: 12,
        seed: 3,
        ..Default::default()
    };
    let mut seen = 0;
    let res = fit(
        model,
        &mut opt,
        &Schedule::Constant,
        &cfg,
        |e| batches(&x, &y, 12, Some((1, e))),
        |_| batches(&vx, &vy, 15, None),
        |_| {
            seen += 1;
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(seen, 12);
    assert_eq!(res.history.len(), 12);
    let (first, last) = (&res.history[0], res.history.last().unwrap());
    assert!(last.train_loss < first.train_loss * 0.7, "{first:?} → {last:?}");
    assert!(
        res.best_val_acc >= 0.9,
        "best val acc {}: {:#?}",
        res.best_val_acc,
        res.history
    );
    assert_eq!(res.best_val_acc, res.history[res.best_epoch].val_acc);
}

#[test]
fn fit_observed_reports_every_batch_with_running_figures() {
    // 30 samples in batches of 8: 8, 8, 8, 6 per epoch.
    let (x, y) = images(3, 10, 4);
    let (vx, vy) = images(3, 4, 5);
    let bb = Tiny::new(6);
    let head = head_for(3, 0.0);
    let model = Model {
        backbone: Some(&bb),
        head: &head,
    };
    let mut opt = Adam::new(vec![ParamGroup::new("head", head.vars(), 0.01)], AdamConfig::adamw()).unwrap();
    let cfg = FitConfig {
        epochs: 3,
        seed: 1,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let res = fit_observed(
        model,
        &mut opt,
        &Schedule::Constant,
        &cfg,
        |e| batches(&x, &y, 8, Some((2, e))),
        |_| batches(&vx, &vy, 8, None),
        |_| Ok(()),
        &mut |p| seen.push(p.clone()),
    )
    .unwrap();
    assert_eq!(seen.len(), 12, "one call per optimizer step");
    for (k, p) in seen.iter().enumerate() {
        assert_eq!((p.epoch, p.batch, p.steps), (k / 4, k % 4, k + 1), "{p:?}");
        assert_eq!(p.samples, [8, 16, 24, 30][k % 4], "{p:?}");
        assert!(p.loss.is_finite() && p.mean_loss.is_finite() && (0.0..=1.0).contains(&p.accuracy));
    }
    for (e, record) in res.history.iter().enumerate() {
        let epoch: Vec<_> = seen.iter().filter(|p| p.epoch == e).collect();
        // The running mean of the epoch's batch losses, weighted by batch size.
        let weighted: f64 = epoch
            .iter()
            .zip([8.0, 8.0, 8.0, 6.0])
            .map(|(p, n)| p.loss * n)
            .sum::<f64>()
            / 30.0;
        let last = epoch.last().unwrap();
        assert!((last.mean_loss - weighted).abs() < 1e-9, "{last:?}");
        assert!(
            (last.mean_loss - record.train_loss).abs() < 1e-12,
            "{last:?} vs {record:?}"
        );
        assert!(
            (last.accuracy - record.train_acc).abs() < 1e-12,
            "{last:?} vs {record:?}"
        );
    }
}

fn resumable_run(
    dir: &std::path::Path,
    interrupt_after: Option<usize>,
    resume: bool,
) -> (training::Result<training::FitResult>, Vec<f32>, Vec<f32>) {
    let (x, y) = images(2, 16, 3);
    let (vx, vy) = images(2, 8, 4);
    let bb = Tiny::new(6);
    // Both stages train and BatchNorm uses batch statistics, so buffers change too.
    set_trainable(&bb, Unfreeze::All, true).unwrap();
    let head = head_for(2, 0.3);
    let model = Model {
        backbone: Some(&bb),
        head: &head,
    };
    let groups = vec![
        ParamGroup::new("backbone", bb.store().trainable_vars(), 0.01),
        ParamGroup::new("head", head.vars(), 0.05),
    ];
    let mut opt = Sgd::new(
        groups,
        SgdConfig {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 1e-4,
        },
    )
    .unwrap();
    let cfg = FitConfig {
        epochs: 5,
        seed: 9,
        checkpoint_dir: Some(dir.to_path_buf()),
        resume,
        ..Default::default()
    };
    let sched = Schedule::WarmupCosine {
        warmup_steps: 4,
        total_steps: 20,
        min_factor: 0.1,
    };
    let res = fit(
        model,
        &mut opt as &mut dyn Optimizer,
        &sched,
        &cfg,
        |e| batches(&x, &y, 8, Some((2, e))),
        |_| batches(&vx, &vy, 8, None),
        |r| match interrupt_after {
            Some(k) if r.epoch + 1 == k => Err(Error::Config("interrupted".into())),
            _ => Ok(()),
        },
    );
    let bn: Vec<f32> = bb.store().buffers()[0].tensor().to_vec1().unwrap();
    (res, head_values(&head), bn)
}

#[test]
fn resume_after_interruption_matches_uninterrupted_run() {
    let a = tempfile::tempdir().unwrap();
    let (full, full_head, full_bn) = resumable_run(a.path(), None, false);
    let full = full.unwrap();
    assert!(a.path().join("last.safetensors").exists() && a.path().join("last.json").exists());

    let b = tempfile::tempdir().unwrap();
    let (interrupted, _, _) = resumable_run(b.path(), Some(2), false);
    assert!(interrupted.is_err());
    let (resumed, head, bn) = resumable_run(b.path(), None, true);
    let resumed = resumed.unwrap();
    assert_eq!(resumed.resumed_from, Some(2));
    assert_eq!(strip_seconds(&resumed.history), strip_seconds(&full.history));
    assert_eq!(
        (resumed.best_epoch, resumed.best_val_acc),
        (full.best_epoch, full.best_val_acc)
    );
    assert_eq!(head, full_head);
    assert_eq!(bn, full_bn);
    // No temporary files are left behind.
    for e in std::fs::read_dir(b.path()).unwrap() {
        assert!(!e.unwrap().file_name().to_string_lossy().ends_with(".tmp"));
    }
}

#[test]
fn nan_loss_stops_with_epoch_and_step() {
    let names = vec!["a".to_string(), "b".to_string()];
    let head = Head::seeded(HeadConfig::linear(Task::MultiClass, names, 8), &Device::Cpu, 1).unwrap();
    let model = Model {
        backbone: None,
        head: &head,
    };
    let mut opt = Sgd::new(vec![ParamGroup::new("head", head.vars(), 0.1)], SgdConfig::default()).unwrap();
    let feats = |nan: bool| {
        let mut v = vec![0.5f32; 4 * 8];
        if nan {
            v[3] = f32::NAN;
        }
        Ok((
            Tensor::from_vec(v, (4, 8), &Device::Cpu)?,
            Tensor::new(&[0u32, 1, 0, 1], &Device::Cpu)?,
        ))
    };
    let err = fit(
        model,
        &mut opt,
        &Schedule::Constant,
        &FitConfig {
            epochs: 3,
            ..Default::default()
        },
        |e| (0..4).map(move |i| feats(e == 1 && i == 2)).collect::<Batches>(),
        |_| vec![feats(false)],
        |_| Ok(()),
    )
    .unwrap_err();
    assert!(matches!(err, Error::NonFinite { epoch: 1, step: 2, .. }), "{err}");
    assert!(err.to_string().contains("epoch 1, step 2"));
}

#[test]
fn fine_tune_trains_head_first_then_the_backbone() {
    let (x, y) = images(2, 12, 7);
    let (vx, vy) = images(2, 6, 8);
    let bb = Tiny::new(2);
    let head = head_for(2, 0.0);
    let model = Model {
        backbone: Some(&bb),
        head: &head,
    };
    let conv2 = || -> Vec<f32> {
        bb.store().state_dict()["conv2.weight"]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let before = conv2();
    let mut after_phase1 = None;
    let cfg = FineTuneConfig {
        freeze_epochs: 1,
        epochs: 2,
        base_lr: 0.01,
        lr_mult: 10.0,
        unfreeze: Unfreeze::Last(1),
        train_bn: false,
        layer_decay: None,
        steps_per_epoch: 3,
        fit: FitConfig {
            seed: 1,
            ..Default::default()
        },
    };
    let (r1, r2) = fine_tune(
        model,
        &cfg,
        |groups| Ok(Box::new(Adam::new(groups, AdamConfig::adamw())?) as Box<dyn Optimizer>),
        |e| batches(&x, &y, 8, Some((3, e))),
        |_| batches(&vx, &vy, 12, None),
        |phase, _| {
            if phase == 1 {
                after_phase1 = Some(conv2());
            }
            Ok(())
        },
    )
    .unwrap();
    assert_eq!((r1.history.len(), r2.history.len()), (1, 2));
    assert_eq!(after_phase1.unwrap(), before, "the backbone is frozen in phase 1");
    assert_ne!(conv2(), before, "the last stage trains in phase 2");
    assert!(!bb
        .store()
        .params()
        .iter()
        .find(|p| p.name() == "conv1.weight")
        .unwrap()
        .is_trainable());
}

#[test]
fn feature_cache_hits_on_second_run_and_misses_when_the_key_changes() {
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let files: Vec<_> = (0..3).map(|i| data.path().join(format!("img{i}.bin"))).collect();
    for f in &files {
        std::fs::write(f, b"pixels").unwrap();
    }
    let (x, y) = images(2, 6, 5);
    let bb = Tiny::new(4);
    let mut computed = 0;
    let mut run = |key: &CacheKey| {
        load_or_compute(cache.path(), key, &Device::Cpu, || {
            computed += 1;
            extract_features(&bb, batches(&x, &y, 5, None))
        })
        .unwrap()
    };
    let key = CacheKey::new(&files, "tiny", "abc", "{\"size\":8}", 1).unwrap();
    let first = run(&key);
    assert_eq!(first.status, CacheStatus::Miss);
    assert_eq!(first.features.dims(), &[12, 8]);
    let second = run(&key);
    assert_eq!(second.status, CacheStatus::Hit);
    let (a, b): (Vec<Vec<f32>>, Vec<Vec<f32>>) =
        (first.features.to_vec2().unwrap(), second.features.to_vec2().unwrap());
    assert_eq!(a, b);
    assert_eq!(
        first.labels.to_vec1::<u32>().unwrap(),
        second.labels.to_vec1::<u32>().unwrap()
    );
    // Another number of views, another preprocessing, or a changed file: a miss.
    assert_eq!(
        run(&CacheKey {
            views: 2,
            ..key.clone()
        })
        .status,
        CacheStatus::Miss
    );
    assert_eq!(
        run(&CacheKey {
            preprocessing: "other".into(),
            ..key.clone()
        })
        .status,
        CacheStatus::Miss
    );
    std::fs::write(&files[1], b"more pixels").unwrap();
    let changed = CacheKey::new(&files, "tiny", "abc", "{\"size\":8}", 1).unwrap();
    assert_ne!(changed.digest(), key.digest());
    assert_eq!(run(&changed).status, CacheStatus::Miss);
    assert_eq!(computed, 4);
    // A missing dataset file is an error naming it.
    let err = CacheKey::new(&[data.path().join("gone.jpg")], "tiny", "abc", "", 1).unwrap_err();
    assert!(err.to_string().contains("gone.jpg"));
}

#[test]
fn early_stopping_on_a_binary_task_with_class_weights() {
    // Features carry no signal about the labels and the rate is 0: validation never improves after epoch 0.
    let names = vec!["neg".to_string(), "pos".to_string()];
    let head = Head::seeded(HeadConfig::linear(Task::Binary, names, 8), &Device::Cpu, 2).unwrap();
    let model = Model {
        backbone: None,
        head: &head,
    };
    let mut opt = Sgd::new(vec![ParamGroup::new("head", head.vars(), 0.0)], SgdConfig::default()).unwrap();
    let feats = || -> Batches {
        let x = Tensor::ones((4, 8), DType::F32, &Device::Cpu);
        vec![Ok((x.unwrap(), Tensor::new(&[0u32, 1, 1, 1], &Device::Cpu).unwrap()))]
    };
    let loss = training::LossConfig {
        class_weights: Some(vec![3.0, 1.0]),
        ..Default::default()
    };
    let cfg = FitConfig {
        epochs: 20,
        patience: Some(3),
        loss,
        ..Default::default()
    };
    let res = fit(
        model,
        &mut opt,
        &Schedule::Constant,
        &cfg,
        |_| feats(),
        |_| feats(),
        |_| Ok(()),
    )
    .unwrap();
    assert!(res.stopped_early);
    assert_eq!(res.history.len(), 4);
    assert_eq!(res.best_epoch, 0);
    // Weighted BCE: mean of w_y · l with w = (3, 1), equal to the hand formula.
    let z = head
        .forward(&Tensor::ones((1, 8), DType::F32, &Device::Cpu).unwrap(), None)
        .unwrap();
    let z = z.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0] as f64;
    let sp = |v: f64| v.max(0.0) + (1.0 + (-v.abs()).exp()).ln();
    let want = (3.0 * sp(z) + 3.0 * sp(-z)) / 4.0;
    assert!(
        (res.history[0].train_loss - want).abs() < 1e-5,
        "{} vs {want}",
        res.history[0].train_loss
    );
    let acc = if z >= 0.0 { 0.75 } else { 0.25 };
    assert_eq!(res.history[0].val_acc, acc);
}

/// Phase data over in-memory images (both phases) for `fine_tune_observed`.
struct Images {
    x: Tensor,
    y: Vec<u32>,
    vx: Tensor,
    vy: Vec<u32>,
}

impl training::PhaseData for Images {
    fn steps_per_epoch(&self, _: u8) -> usize {
        self.y.len().div_ceil(4)
    }
    fn train(&self, _: u8, epoch: usize) -> training::Batches<'_> {
        Box::new(batches(&self.x, &self.y, 4, Some((3, epoch))).into_iter())
    }
    fn val(&self, _: u8, _: usize) -> training::Batches<'_> {
        Box::new(batches(&self.vx, &self.vy, 6, None).into_iter())
    }
}

/// Every callback, epochs as the library numbers them (run-wide, from 0).
#[derive(Default, Debug, PartialEq)]
struct Seen {
    started: Vec<(usize, usize)>,
    batches: Vec<(usize, usize)>,
    ended: Vec<(u8, usize)>,
}

impl training::FitObserver for Seen {
    fn epoch_started(&mut self, epoch: usize, steps: usize) {
        self.started.push((epoch, steps));
    }
    fn batch(&mut self, p: &training::BatchProgress) {
        self.batches.push((p.epoch, p.batch));
    }
    fn epoch_ended(&mut self, phase: u8, r: &training::EpochRecord) -> training::Result<()> {
        self.ended.push((phase, r.epoch));
        Ok(())
    }
}

fn run_fine_tune(
    dir: &std::path::Path,
    recipe: &training::Recipe,
    freeze_epochs: usize,
    epochs: usize,
    resume: bool,
) -> (Seen, Vec<f32>) {
    let (x, y) = images(2, 12, 7);
    let (vx, vy) = images(2, 6, 8);
    let data = Images { x, y, vx, vy };
    let bb = Tiny::new(2);
    let head = head_for(2, 0.0);
    let model = Model {
        backbone: Some(&bb),
        head: &head,
    };
    let cfg = FineTuneConfig {
        freeze_epochs,
        epochs,
        base_lr: 0.01,
        lr_mult: 10.0,
        unfreeze: Unfreeze::All,
        train_bn: false,
        layer_decay: None,
        steps_per_epoch: 0,
        fit: FitConfig {
            seed: 1,
            checkpoint_dir: Some(dir.to_path_buf()),
            resume,
            ..Default::default()
        },
    };
    let mut seen = Seen::default();
    let mut names = Vec::new();
    training::fine_tune_observed(
        model,
        &cfg,
        recipe,
        |groups| {
            names.push(groups.iter().map(|g| g.name.clone()).collect::<Vec<_>>());
            Ok(Box::new(Adam::new(groups, AdamConfig::adamw())?) as Box<dyn Optimizer>)
        },
        &data,
        &mut seen,
    )
    .unwrap();
    if !resume && epochs > 0 {
        assert_eq!(names.last().unwrap(), &["backbone.stem", "backbone.stage1", "head"]);
    }
    assert!(
        bb.store().params().iter().all(|p| !p.is_trainable()),
        "the backbone is frozen again at the end"
    );
    let mut state = head_values(&head);
    state.extend(
        bb.store().state_dict()["conv2.weight"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
    );
    (seen, state)
}

#[test]
fn fine_tune_observed_numbers_epochs_over_the_run_checkpoints_per_phase_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (seen, state) = run_fine_tune(dir.path(), &training::Recipe::TwoPhase, 1, 2, false);
    // 24 images in batches of 4: 6 steps per epoch.
    assert_eq!(seen.started, [(0, 6), (1, 6), (2, 6)]);
    assert_eq!(seen.ended, [(1, 0), (2, 1), (2, 2)]);
    assert_eq!(seen.batches.len(), 18);
    assert_eq!(seen.batches[6..9], [(1, 0), (1, 1), (1, 2)]);
    // The run folder's layout: phase 1 in phase1/, the final phase in the folder itself.
    assert!(dir.path().join("phase1/last.json").is_file());
    assert!(dir.path().join("last.json").is_file() && !dir.path().join("phase2").exists());
    let p1 = training::finetune::checkpointed_history(&dir.path().join("phase1"));
    assert_eq!(p1.len(), 1);
    assert_eq!(training::finetune::checkpointed_history(dir.path()).len(), 2);

    // Resuming a finished run replays its epochs to the observer, trains nothing and restores the same weights.
    let (again, resumed) = run_fine_tune(dir.path(), &training::Recipe::TwoPhase, 1, 2, true);
    assert_eq!(again.ended, seen.ended);
    assert!(again.started.is_empty() && again.batches.is_empty(), "{again:?}");
    assert_eq!(resumed, state);

    // A plain fit with one phase checkpoints in the folder itself.
    let plain = tempfile::tempdir().unwrap();
    let (seen, _) = run_fine_tune(plain.path(), &training::Recipe::Plain(Schedule::Constant), 2, 0, false);
    assert_eq!(seen.ended, [(1, 0), (1, 1)]);
    assert!(plain.path().join("last.json").is_file() && !plain.path().join("phase1").exists());
}

#[test]
fn fine_tune_with_layer_decay_gives_each_vit_layer_its_rate() {
    let (x, y) = images(2, 12, 7);
    let (vx, vy) = images(2, 6, 8);
    let data = Images { x, y, vx, vy };
    let mut vcfg = backbones::vit::VitConfig::vit("tiny_vit", 4, 8, 2, 2);
    vcfg.img_size = 8;
    vcfg.num_classes = 0;
    let store = ParamStore::empty(DType::F32, &Device::Cpu);
    let bb = backbones::vit::Vit::new(&vcfg, &store).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for p in store.params() {
        let t = p.tensor();
        let v: Vec<f32> = (0..t.elem_count()).map(|_| rng.gen_range(-0.3f32..0.3)).collect();
        p.set(&Tensor::from_vec(v, t.shape(), &Device::Cpu).unwrap()).unwrap();
    }
    let before = store.state_dict()["blocks.0.attn.qkv.weight"].clone();
    let head = head_for(2, 0.0);
    let model = Model {
        backbone: Some(&bb),
        head: &head,
    };
    let cfg = FineTuneConfig {
        freeze_epochs: 0,
        epochs: 1,
        base_lr: 0.01,
        lr_mult: 10.0,
        unfreeze: Unfreeze::All,
        train_bn: false,
        layer_decay: Some(0.5),
        steps_per_epoch: 0,
        fit: FitConfig {
            seed: 1,
            ..Default::default()
        },
    };
    let mut rates = Vec::new();
    training::fine_tune_observed(
        model,
        &cfg,
        &training::Recipe::Plain(Schedule::Constant),
        |groups| {
            rates = groups.iter().map(|g| (g.name.clone(), g.lr)).collect::<Vec<_>>();
            Ok(Box::new(Adam::new(groups, AdamConfig::adamw())?) as Box<dyn Optimizer>)
        },
        &data,
        &mut Seen::default(),
    )
    .unwrap();
    let rate = |n: &str| {
        rates
            .iter()
            .find(|(k, _)| k == n)
            .unwrap_or_else(|| panic!("{n}: {rates:?}"))
            .1
    };
    // Depth 2: layer i at 0.01 · 0.5^(3 − i); the final norm and the head at 0.01.
    for (group, want) in [
        ("backbone.layer_0", 0.01 * 0.125),
        ("backbone.layer_0.no_decay", 0.01 * 0.125),
        ("backbone.layer_1", 0.01 * 0.25),
        ("backbone.layer_2.no_decay", 0.01 * 0.5),
        ("backbone.layer_3.no_decay", 0.01),
        ("head", 0.01),
        ("head.no_decay", 0.01),
    ] {
        assert!((rate(group) - want).abs() < 1e-15, "{group}: {}", rate(group));
    }
    let after = store.state_dict()["blocks.0.attn.qkv.weight"].clone();
    let moved: f32 = (after - before)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(moved > 0.0, "the backbone trained");
}
