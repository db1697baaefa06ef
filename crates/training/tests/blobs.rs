//! Every optimizer, schedule, loss and head task trains a head on gaussian blobs (loss falls, accuracy high).

use candle_core::{Device, Tensor};
use heads::{Head, HeadConfig, InputKind, Task};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use training::metrics::{accuracy, argmax_rows};
use training::schedule::{LrSchedule, Schedule};
use training::{bce_with_logits, cross_entropy, Adam, AdamConfig, CrossEntropy, Optimizer, ParamGroup, Sgd, SgdConfig};

const F: usize = 8;

/// `n` points per class around random centres (spread 3) with unit noise.
fn blobs(classes: usize, n: usize, seed: u64) -> (Tensor, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..classes)
        .map(|_| (0..F).map(|_| rng.gen_range(-3.0..3.0)).collect())
        .collect();
    // Box–Muller standard normal.
    let normal = |rng: &mut ChaCha8Rng| -> f32 {
        let (u1, u2): (f32, f32) = (rng.gen_range(1e-7..1.0), rng.gen());
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    };
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for i in 0..classes * n {
        let c = i % classes;
        let point: Vec<f32> = centres[c].iter().map(|m| m + normal(&mut rng)).collect();
        x.extend(point);
        y.push(c);
    }
    (Tensor::from_vec(x, (classes * n, F), &Device::Cpu).unwrap(), y)
}

fn loss_of(task: Task, logits: &Tensor, y: &[usize], classes: usize) -> Tensor {
    match task {
        Task::MultiClass => {
            let t = Tensor::from_vec(y.iter().map(|&v| v as u32).collect::<Vec<_>>(), y.len(), &Device::Cpu).unwrap();
            let opts = CrossEntropy {
                label_smoothing: 0.05,
                class_weights: Some(vec![1.0; classes]),
            };
            cross_entropy(logits, &t, &opts).unwrap()
        }
        Task::Binary => {
            let t = Tensor::from_vec(
                y.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                (y.len(), 1),
                &Device::Cpu,
            )
            .unwrap();
            bce_with_logits(logits, &t, Some(&[1.5]), None).unwrap()
        }
        Task::MultiLabel => {
            // Label c is on for class c and for class (c + 1) % classes: two labels per sample.
            let mut t = vec![0f32; y.len() * classes];
            for (i, &c) in y.iter().enumerate() {
                t[i * classes + c] = 1.0;
                t[i * classes + (c + 1) % classes] = 1.0;
            }
            let t = Tensor::from_vec(t, (y.len(), classes), &Device::Cpu).unwrap();
            bce_with_logits(logits, &t, None, None).unwrap()
        }
    }
}

fn train(task: Task, classes: usize, opt_kind: &str, schedule: Schedule) -> (f32, f32, f64) {
    let (x, y) = blobs(classes, 40, 7);
    let names: Vec<String> = (0..classes).map(|c| format!("c{c}")).collect();
    let cfg = HeadConfig {
        hidden: vec![16],
        dropout: 0.2,
        ..HeadConfig::linear(task, names, F)
    };
    let cfg = HeadConfig {
        input: InputKind::Pooled { features: F },
        ..cfg
    };
    let head = Head::seeded(cfg, &Device::Cpu, 3).unwrap();
    let groups = vec![ParamGroup::new(
        "head",
        head.vars(),
        if opt_kind == "sgd" { 0.05 } else { 0.01 },
    )];
    let mut opt: Box<dyn Optimizer> = match opt_kind {
        "sgd" => Box::new(
            Sgd::new(
                groups,
                SgdConfig {
                    momentum: 0.9,
                    nesterov: true,
                    weight_decay: 1e-4,
                },
            )
            .unwrap(),
        ),
        "adam" => Box::new(Adam::new(groups, AdamConfig::adam()).unwrap()),
        _ => Box::new(Adam::new(groups, AdamConfig::adamw()).unwrap()),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let n = y.len();
    let bs = 20;
    let mut first = None;
    let mut last = 0.0;
    let mut step = 0;
    for _epoch in 0..15 {
        for b in (0..n).step_by(bs) {
            opt.set_lr_scale(schedule.multiplier(step));
            let xb = x.narrow(0, b, bs).unwrap();
            let logits = head.forward(&xb, Some(&mut rng)).unwrap();
            let loss = loss_of(task, &logits, &y[b..b + bs], classes);
            let l = loss.to_scalar::<f32>().unwrap();
            first.get_or_insert(l);
            last = l;
            opt.step(&loss.backward().unwrap()).unwrap();
            step += 1;
        }
    }
    let probs: Vec<Vec<f32>> = head.predict_proba(&x).unwrap().to_vec2().unwrap();
    let acc = match task {
        Task::MultiLabel => {
            let mut ok = 0;
            for (row, &c) in probs.iter().zip(&y) {
                ok += (0..classes)
                    .filter(|&j| (row[j] > 0.5) == (j == c || j == (c + 1) % classes))
                    .count();
            }
            ok as f64 / (n * classes) as f64
        }
        _ => accuracy(&argmax_rows(&probs), &y),
    };
    (first.unwrap(), last, acc)
}

#[test]
fn every_optimizer_schedule_and_task_learns_blobs() {
    let steps = 15 * 6; // 15 epochs of 6 batches (3 classes × 40 / 20)
    let schedules = [
        Schedule::Constant,
        Schedule::Step {
            step_epochs: 7,
            gamma: 0.5,
            steps_per_epoch: 6,
        },
        Schedule::WarmupCosine {
            warmup_steps: 6,
            total_steps: steps,
            min_factor: 0.01,
        },
        Schedule::OneCycle {
            total_steps: steps,
            pct_start: 0.3,
            div: 25.0,
            final_div: 1e4,
        },
    ];
    let mut i = 0;
    for (task, classes) in [(Task::MultiClass, 3), (Task::Binary, 2), (Task::MultiLabel, 3)] {
        for opt in ["sgd", "adam", "adamw"] {
            let schedule = schedules[i % schedules.len()];
            i += 1;
            let (first, last, acc) = train(task, classes, opt, schedule);
            assert!(last < first * 0.6, "{task:?}/{opt}/{schedule:?}: loss {first} → {last}");
            assert!(acc > 0.9, "{task:?}/{opt}/{schedule:?}: accuracy {acc}");
        }
    }
}
