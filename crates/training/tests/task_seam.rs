//! The task seam: a non-classification task (per-pixel 2-class segmentation on generated images) trains through the
//! shared fit loop with its own target type, loss, evaluator and score, and gets checkpoints, best-epoch selection
//! and exact resume from the loop.

use std::collections::{BTreeMap, HashMap};

use backbones::Backbone;
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use training::{
    cross_entropy, fit_task, Adam, AdamConfig, CrossEntropy, EvalSummary, Evaluator, FitConfig, Optimizer, ParamGroup,
    Schedule, StepLoss, Task,
};

const HW: usize = 16;

/// Images with a red rectangle (class 1) on a green background (class 0), with noise; masks N×H×W u32.
fn data(n: usize, seed: u64) -> (Tensor, Tensor) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut x, mut y) = (vec![0f32; n * 3 * HW * HW], vec![0u32; n * HW * HW]);
    for i in 0..n {
        let (y0, x0) = (rng.gen_range(0..HW - 4), rng.gen_range(0..HW - 4));
        let (h, w) = (rng.gen_range(3..HW - y0), rng.gen_range(3..HW - x0));
        for r in 0..HW {
            for c in 0..HW {
                let fg = r >= y0 && r < y0 + h && c >= x0 && c < x0 + w;
                y[i * HW * HW + r * HW + c] = fg as u32;
                for ch in 0..3 {
                    let base = match (ch, fg) {
                        (0, true) | (1, false) => 0.6,
                        _ => 0.0,
                    };
                    x[((i * 3 + ch) * HW + r) * HW + c] = base + rng.gen_range(-0.5f32..0.5);
                }
            }
        }
    }
    let dev = &Device::Cpu;
    (
        Tensor::from_vec(x, (n, 3, HW, HW), dev).unwrap(),
        Tensor::from_vec(y, (n, HW, HW), dev).unwrap(),
    )
}

/// A fixed random 3×3 convolution (the "encoder") and a trainable 1×1 convolution head to 2 classes.
struct PixelTask {
    encoder: Tensor,
    w: Var,
    b: Var,
}

impl PixelTask {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut v = |n: usize, a: f32| (0..n).map(|_| rng.gen_range(-a..a)).collect::<Vec<f32>>();
        let dev = &Device::Cpu;
        let encoder = Tensor::from_vec(v(8 * 3 * 9, 0.5), (8, 3, 3, 3), dev).unwrap();
        let w = Var::from_tensor(&Tensor::from_vec(v(2 * 8, 0.3), (2, 8), dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::zeros(2, DType::F32, dev).unwrap()).unwrap();
        Self { encoder, w, b }
    }

    /// Logits N×2×H×W.
    fn forward(&self, x: &Tensor) -> training::Result<Tensor> {
        let f = x.conv2d(&self.encoder, 1, 1, 1, 1)?.relu()?;
        let (n, c, h, w) = f.dims4()?;
        let rows = f.permute((0, 2, 3, 1))?.reshape((n * h * w, c))?;
        let logits = rows.matmul(&self.w.t()?)?.broadcast_add(&self.b)?;
        Ok(logits.reshape((n, h, w, 2))?.permute((0, 3, 1, 2))?)
    }

    fn loss(&self, logits: &Tensor, y: &Tensor) -> training::Result<Tensor> {
        let (n, k, h, w) = logits.dims4()?;
        let rows = logits.permute((0, 2, 3, 1))?.reshape((n * h * w, k))?;
        cross_entropy(&rows, &y.flatten_all()?, &CrossEntropy::default())
    }
}

struct PixelEval<'a> {
    task: &'a PixelTask,
    confusion: [[u64; 2]; 2],
    loss: f64,
    samples: usize,
}

impl Evaluator<Tensor> for PixelEval<'_> {
    fn add(&mut self, x: &Tensor, y: &Tensor) -> training::Result<()> {
        let logits = self.task.forward(x)?.detach();
        let n = x.dim(0)?;
        self.loss += self.task.loss(&logits, y)?.to_scalar::<f32>()? as f64 * n as f64;
        self.samples += n;
        let pred: Vec<u32> = logits.argmax(1)?.flatten_all()?.to_vec1()?;
        let truth: Vec<u32> = y.flatten_all()?.to_vec1()?;
        for (p, t) in pred.iter().zip(&truth) {
            self.confusion[*t as usize][*p as usize] += 1;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> training::Result<EvalSummary> {
        let m = self.confusion;
        let iou = |c: usize| {
            let tp = m[c][c] as f64;
            tp / (m[c][0] + m[c][1] + m[0][c] + m[1][c] - m[c][c]).max(1) as f64
        };
        let total = (m[0][0] + m[0][1] + m[1][0] + m[1][1]) as f64;
        let accuracy = (m[0][0] + m[1][1]) as f64 / total;
        let miou = (iou(0) + iou(1)) / 2.0;
        Ok(EvalSummary {
            loss: self.loss / self.samples as f64,
            accuracy,
            score: miou,
            metrics: BTreeMap::from([("miou".into(), miou), ("pixel_accuracy".into(), accuracy)]),
        })
    }
}

impl Task for PixelTask {
    type Target = Tensor;
    type Prediction = Tensor;
    fn name(&self) -> &'static str {
        "segment"
    }
    fn score_name(&self) -> &'static str {
        "miou"
    }
    fn train_step(&self, x: &Tensor, y: &Tensor, _rng: &mut ChaCha8Rng) -> training::Result<StepLoss> {
        let logits = self.forward(x)?;
        let loss = self.loss(&logits, y)?;
        let pred = logits.argmax(1)?;
        let correct = pred.eq(y)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? as usize;
        Ok(StepLoss {
            loss,
            parts: vec![("ce".into(), 0.0)],
            correct,
            count: y.elem_count(),
        })
    }
    fn evaluator(&self) -> Box<dyn Evaluator<Tensor> + '_> {
        Box::new(PixelEval {
            task: self,
            confusion: [[0; 2]; 2],
            loss: 0.0,
            samples: 0,
        })
    }
    fn backbone(&self) -> Option<&dyn Backbone> {
        None
    }
    fn head_vars(&self) -> Vec<(String, Var)> {
        vec![("w".into(), self.w.clone()), ("b".into(), self.b.clone())]
    }
    fn state(&self) -> training::Result<HashMap<String, Tensor>> {
        Ok(self
            .head_vars()
            .into_iter()
            .map(|(k, v)| (format!("head/{k}"), v.as_tensor().copy().unwrap()))
            .collect())
    }
    fn load_state(&self, state: &HashMap<String, Tensor>) -> training::Result<()> {
        for (k, v) in self.head_vars() {
            v.set(&state[&format!("head/{k}")])?;
        }
        Ok(())
    }
    fn predict(&self, x: &Tensor) -> training::Result<Vec<Tensor>> {
        let m = self.forward(x)?.argmax(1)?;
        Ok((0..m.dim(0)?).map(|i| m.get(i).unwrap()).collect())
    }
    fn report_section(&self, summary: &EvalSummary) -> training::ReportSection {
        training::ReportSection::per_class("IoU", "IoU", "iou", &["bg".into(), "fg".into()], &summary.metrics)
    }
}

type Batches = Vec<training::Result<(Tensor, Tensor)>>;

fn batches(x: &Tensor, y: &Tensor, bs: usize) -> Batches {
    let n = x.dim(0).unwrap();
    (0..n)
        .step_by(bs)
        .map(|s| {
            let k = bs.min(n - s);
            Ok((x.narrow(0, s, k).unwrap(), y.narrow(0, s, k).unwrap()))
        })
        .collect()
}

fn run(task: &PixelTask, epochs: usize, dir: Option<&std::path::Path>) -> training::FitResult {
    let (x, y) = data(32, 1);
    let (vx, vy) = data(16, 2);
    let mut opt = Adam::new(
        vec![ParamGroup::new("head", task.head_vars(), 0.05)],
        AdamConfig::adam(),
    )
    .unwrap();
    let cfg = FitConfig {
        epochs,
        checkpoint_dir: dir.map(|d| d.to_path_buf()),
        resume: dir.is_some(),
        ..FitConfig::default()
    };
    let sched = Schedule::Constant;
    fit_task(
        task,
        &mut opt as &mut dyn Optimizer,
        &sched,
        &cfg,
        |_| batches(&x, &y, 8),
        |_| batches(&vx, &vy, 8),
        |_| Ok(()),
        &mut |_| {},
    )
    .unwrap()
}

fn values(task: &PixelTask) -> Vec<f32> {
    let mut v = task.w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v.extend(task.b.to_vec1::<f32>().unwrap());
    v
}

#[test]
fn a_per_pixel_task_trains_through_the_shared_loop() {
    let task = PixelTask::new(3);
    let (vx, vy) = data(16, 2);
    let mut before = task.evaluator();
    before.add(&vx, &vy).unwrap();
    let before = before.finish().unwrap();
    let r = run(&task, 8, None);
    let last = r.history.last().unwrap();
    // The score the task defines (mIoU) picks the best epoch and is reported with its metrics and loss parts.
    let best = r.history.iter().map(|e| e.score.unwrap()).fold(f64::MIN, f64::max);
    assert_eq!(r.best_score, best);
    assert_eq!(r.history[r.best_epoch].score, Some(best));
    assert!(last.metrics.contains_key("miou") && last.metrics.contains_key("pixel_accuracy"));
    assert!(last.loss_parts.contains_key("ce"));
    assert_eq!(last.val_acc, last.metrics["pixel_accuracy"]);
    // It learns: red vs green per pixel is linearly separable from the encoder's features up to noise.
    assert!(best > 0.8, "best mIoU {best:.3} (before training {:.3})", before.score);
    assert!(best > before.score + 0.2, "mIoU {:.3} -> {best:.3}", before.score);
    assert!(r.history[0].train_loss > last.train_loss);
    // The best epoch's weights are restored at the end: evaluating them gives the best score.
    let mut after = task.evaluator();
    after.add(&vx, &vy).unwrap();
    assert!((after.finish().unwrap().score - best).abs() < 1e-9);
}

#[test]
fn a_per_pixel_task_checkpoints_and_resumes_exactly() {
    let straight = PixelTask::new(4);
    let dir = tempfile::tempdir().unwrap();
    let full = run(&straight, 6, Some(&dir.path().join("a")));

    let resumed = PixelTask::new(4);
    let d = dir.path().join("b");
    let first = run(&resumed, 3, Some(&d));
    assert_eq!(first.history.len(), 3);
    // A fresh model resumes from the checkpoint written by the shared loop.
    let again = PixelTask::new(4);
    let second = run(&again, 6, Some(&d));
    assert_eq!(second.resumed_from, Some(3));
    let strip = |h: &[training::EpochRecord]| {
        h.iter()
            .map(|r| training::EpochRecord {
                seconds: 0.0,
                ..r.clone()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&second.history), strip(&full.history));
    assert_eq!(values(&again), values(&straight));
    assert!(d.join("last.safetensors").exists());
}

/// Images with a bright disc (class 1) and a dark square (class 2) on mid-grey noise, with their masks and boxes.
fn shapes(n: usize, hw: usize, seed: u64) -> (Tensor, Tensor, Vec<training::ImageBoxes>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut x, mut y) = (vec![0f32; n * 3 * hw * hw], vec![0u32; n * hw * hw]);
    let mut boxes = Vec::new();
    for i in 0..n {
        let r = rng.gen_range(6..12) as f32;
        let (cx, cy) = (rng.gen_range(r..hw as f32 - r), rng.gen_range(r..hw as f32 - r));
        let s = rng.gen_range(10..18);
        let (sx, sy) = (rng.gen_range(0..hw - s), rng.gen_range(0..hw - s));
        let mut img = training::ImageBoxes::default();
        for py in 0..hw {
            for px in 0..hw {
                let d = ((px as f32 + 0.5 - cx).powi(2) + (py as f32 + 0.5 - cy).powi(2)).sqrt();
                let in_sq = px >= sx && px < sx + s && py >= sy && py < sy + s;
                let c = if in_sq {
                    2
                } else if d <= r {
                    1
                } else {
                    0
                };
                y[(i * hw + py) * hw + px] = c;
                let v = match c {
                    1 => 1.5,
                    2 => -1.5,
                    _ => 0.0,
                } + rng.gen_range(-0.3f32..0.3);
                for ch in 0..3 {
                    x[((i * 3 + ch) * hw + py) * hw + px] = v;
                }
            }
        }
        img.boxes.push([cx - r, cy - r, cx + r, cy + r]);
        img.classes.push(0);
        img.boxes.push([sx as f32, sy as f32, (sx + s) as f32, (sy + s) as f32]);
        img.classes.push(1);
        img.iscrowd = vec![false, false];
        boxes.push(img);
    }
    let dev = &Device::Cpu;
    (
        Tensor::from_vec(x, (n, 3, hw, hw), dev).unwrap(),
        Tensor::from_vec(y, (n, hw, hw), dev).unwrap(),
        boxes,
    )
}

/// A small resnet18 with seeded random weights (frozen), as the encoder of the dense-task checks.
fn encoder() -> Box<dyn Backbone> {
    let store = backbones::ParamStore::empty(DType::F32, &Device::Cpu);
    let model = backbones::zoo::build("resnet18", &store).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for p in store.params() {
        let t = p.tensor();
        let dims = t.dims().to_vec();
        if dims.len() == 4 {
            let fan_in: usize = dims[1..].iter().product();
            let a = (6.0 / fan_in as f32).sqrt();
            let v: Vec<f32> = (0..t.elem_count()).map(|_| rng.gen_range(-a..a)).collect();
            p.set(&Tensor::from_vec(v, dims.as_slice(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    backbones::freeze_all_but_last(model.as_ref(), 0).unwrap();
    model
}

#[test]
fn segmentation_task_learns_shapes_through_the_shared_loop() {
    use heads::{Decoder, SegHead, SegHeadConfig};
    let backbone = encoder();
    let names = vec!["background".to_string(), "disc".into(), "square".into()];
    let cfg = SegHeadConfig {
        pyramid_channels: 32,
        segmentation_channels: 32,
        ..SegHeadConfig::for_encoder(Decoder::Fpn, names, &backbone.feature_info()).unwrap()
    };
    let head = SegHead::new(cfg, &Device::Cpu, 2).unwrap();
    let loss = training::SegLoss::default();
    let task = training::Segment {
        backbone: backbone.as_ref(),
        head: &head,
        loss: &loss,
    };
    let (x, y, _) = shapes(24, 64, 1);
    let (vx, vy, _) = shapes(8, 64, 2);
    let mut opt = Adam::new(
        vec![ParamGroup::new("head", task.head_vars(), 3e-3)],
        AdamConfig::adam(),
    )
    .unwrap();
    let cfg = FitConfig {
        epochs: 12,
        ..FitConfig::default()
    };
    let r = fit_task(
        &task,
        &mut opt as &mut dyn Optimizer,
        &Schedule::Constant,
        &cfg,
        |_| batches(&x, &y, 8),
        |_| batches(&vx, &vy, 8),
        |_| Ok(()),
        &mut |_| {},
    )
    .unwrap();
    let last = r.history.last().unwrap();
    assert!(last.metrics.contains_key("iou/square"), "{:?}", last.metrics);
    // Constant prediction (background everywhere) has mIoU = background IoU / 3 ≈ 0.27 here.
    let bg = vy.flatten_all().unwrap().to_vec1::<u32>().unwrap();
    let frac = bg.iter().filter(|&&v| v == 0).count() as f64 / bg.len() as f64;
    let constant = frac / 3.0;
    eprintln!(
        "segmentation: best mIoU {:.3} at epoch {} (constant {constant:.3})",
        r.best_score,
        r.best_epoch + 1
    );
    assert!(
        r.best_score > constant + 0.3,
        "best mIoU {:.3} vs constant {constant:.3}",
        r.best_score
    );
    assert!(r.history[0].train_loss > last.train_loss);
}

#[test]
fn detection_task_finds_shapes_through_the_shared_loop() {
    use heads::{DetHead, DetHeadConfig, PostProcess};
    // The real ImageNet Lite0 (frozen): detection needs features that localise small shapes.
    let Some(weights) = tests::assets::require("weights/tf_efficientnet_lite0.safetensors") else {
        return;
    };
    let store = backbones::ParamStore::from_safetensors(&weights, DType::F32, &Device::Cpu).unwrap();
    let backbone = backbones::zoo::build("tf_efficientnet_lite0", &store).unwrap();
    let cfg = DetHeadConfig {
        channels: 32,
        tower_convs: 2,
        ..DetHeadConfig::for_encoder(vec!["disc".into(), "square".into()], &backbone.feature_info(), 3).unwrap()
    };
    let head = DetHead::new(cfg, &Device::Cpu, 3).unwrap();
    let task = training::Detect {
        backbone: backbone.as_ref(),
        head: &head,
        post: PostProcess::default(),
    };
    let (x, _, b) = shapes(32, 64, 3);
    let (vx, _, vb) = shapes(8, 64, 4);
    let mut opt = Adam::new(
        vec![ParamGroup::new("head", task.head_vars(), 3e-3)],
        AdamConfig::adam(),
    )
    .unwrap();
    let cfg = FitConfig {
        epochs: 20,
        ..FitConfig::default()
    };
    let chunks =
        |x: &Tensor, b: &[training::ImageBoxes]| -> Vec<training::Result<(Tensor, Vec<training::ImageBoxes>)>> {
            (0..x.dim(0).unwrap())
                .step_by(8)
                .map(|s| {
                    let k = 8.min(x.dim(0).unwrap() - s);
                    Ok((x.narrow(0, s, k).unwrap(), b[s..s + k].to_vec()))
                })
                .collect()
        };
    let r = fit_task(
        &task,
        &mut opt as &mut dyn Optimizer,
        &Schedule::Constant,
        &cfg,
        |_| chunks(&x, &b),
        |_| chunks(&vx, &vb),
        |_| Ok(()),
        &mut |_| {},
    )
    .unwrap();
    let first = &r.history[0];
    let last = r.history.last().unwrap();
    for k in ["cls", "box", "centerness"] {
        assert!(last.loss_parts.contains_key(k), "{:?}", last.loss_parts);
    }
    assert!(
        last.train_loss < first.train_loss * 0.8,
        "{} -> {}",
        first.train_loss,
        last.train_loss
    );
    let ap50 = r.history.iter().map(|e| e.metrics["map50"]).fold(f64::MIN, f64::max);
    assert_eq!(
        r.best_score,
        r.history.iter().map(|e| e.metrics["map"]).fold(f64::MIN, f64::max)
    );
    eprintln!(
        "detection: best AP50 {ap50:.3}, AP {:.3} at epoch {}",
        r.best_score,
        r.best_epoch + 1
    );
    // Random boxes score ~0 AP50 on two objects per image; a detector that learned gets far above.
    assert!(
        ap50 > 0.5,
        "best AP50 {ap50:.3}, history {:?}",
        r.history.iter().map(|e| e.metrics["map50"]).collect::<Vec<_>>()
    );
}

/// The real ISBI membrane set (24 train / 6 val 512² EM images, resized to 256²): frozen ImageNet Lite0 + FPN.
/// A measurement for the notes, not a CI test (minutes on 2 cores):
/// `cargo test --release -p training --test task_seam membrane -- --ignored --nocapture`.
#[test]
#[ignore]
fn membrane_lite0_fpn_run() {
    use data::transforms::{Pipeline, RandomHorizontalFlip, Resize, ResizeSize};
    use data::{Interpolation, Loader, LoaderConfig, SegOptions, Targets};
    use heads::{Decoder, SegHead, SegHeadConfig};
    let (Some(root), Some(weights)) = (
        tests::assets::require("data/membrane"),
        tests::assets::require("weights/tf_efficientnet_lite0.safetensors"),
    ) else {
        return;
    };
    let (train, val) = data::segment::open_train_val(&root, &SegOptions::default()).unwrap();
    let classes = train.classes.clone();
    let pipe = |flip: bool| {
        let mut steps: Vec<Box<dyn data::transforms::ImageTransform>> = vec![Box::new(
            Resize::new(ResizeSize::Exact { h: 256, w: 256 }, Interpolation::Bilinear).unwrap(),
        )];
        if flip {
            steps.push(Box::new(RandomHorizontalFlip::default()));
        }
        Pipeline {
            steps,
            mean: [0.5; 3],
            std: [0.5; 3],
            output_hw: (256, 256),
        }
    };
    let cfg = |shuffle| LoaderConfig {
        batch_size: 8,
        shuffle,
        ..LoaderConfig::default()
    };
    let tl = Loader::new(train, pipe(true), cfg(true), Device::Cpu).unwrap();
    let vl = Loader::new(val, pipe(false), cfg(false), Device::Cpu).unwrap();
    let store = backbones::ParamStore::from_safetensors(&weights, DType::F32, &Device::Cpu).unwrap();
    let backbone = backbones::zoo::build("tf_efficientnet_lite0", &store).unwrap();
    let head = SegHead::new(
        SegHeadConfig::for_encoder(Decoder::Fpn, classes, &backbone.feature_info()).unwrap(),
        &Device::Cpu,
        0,
    )
    .unwrap();
    let loss = training::SegLoss::default();
    let task = training::Segment {
        backbone: backbone.as_ref(),
        head: &head,
        loss: &loss,
    };
    let epochs = 20;
    let mut opt = Adam::new(
        vec![ParamGroup::new("head", task.head_vars(), 3e-3)],
        AdamConfig::adamw(),
    )
    .unwrap();
    let to_batches = |l: &Loader<data::segment::SegDataset>, e: usize| -> Vec<training::Result<(Tensor, Tensor)>> {
        l.epoch(e as u64)
            .map(|b| {
                let b = b.unwrap();
                let Targets::Masks(m) = b.targets else { panic!("masks") };
                Ok((b.images, m))
            })
            .collect()
    };
    let t0 = std::time::Instant::now();
    let r = fit_task(
        &task,
        &mut opt as &mut dyn Optimizer,
        &Schedule::Constant,
        &FitConfig {
            epochs,
            ..FitConfig::default()
        },
        |e| to_batches(&tl, e),
        |e| to_batches(&vl, e),
        |rec| {
            eprintln!(
                "epoch {:>2}: train loss {:.4}, val loss {:.4}, mIoU {:.4}, pixel acc {:.4} ({:.1}s)",
                rec.epoch + 1,
                rec.train_loss,
                rec.val_loss,
                rec.metrics["miou"],
                rec.metrics["pixel_accuracy"],
                rec.seconds
            );
            Ok(())
        },
        &mut |_| {},
    )
    .unwrap();
    let best = &r.history[r.best_epoch];
    eprintln!(
        "membrane, frozen Lite0 + FPN, {epochs} epochs in {:.0}s: best mIoU {:.4} (epoch {}), {:?}",
        t0.elapsed().as_secs_f64(),
        r.best_score,
        r.best_epoch + 1,
        best.metrics
    );
    assert!(r.best_score > 0.5);
}
