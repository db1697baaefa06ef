//! The child side of `cargo xtask bench`: one measurement per process, reported as one JSON line on stdout.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use backbones::{freeze_all_but_last, unfreeze_all, Backbone, ParamStore};
use candle_core::{DType, Device, Tensor, Var};
use data::transforms::Preset;
use data::{Loader, LoaderConfig};
use training::{Optimizer, ParamGroup, Sgd, SgdConfig};

use super::{Measure, OneArgs, OneResult, RESULT_MARKER};

/// Run the measurement `args` describes and print its [`OneResult`] (or the error) on stdout.
pub fn run_one(args: OneArgs) -> anyhow::Result<()> {
    match measure(&args) {
        Ok(res) => {
            println!("{RESULT_MARKER}{}", serde_json::to_string(&res)?);
            Ok(())
        }
        Err(e) => {
            println!("{e:#}");
            Err(e)
        }
    }
}

/// Deterministic uniform values in `[-scale, scale)` (splitmix64), so the bench needs no RNG crate.
fn random_values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

pub(super) fn random_tensor(dims: &[usize], seed: u64, scale: f32) -> anyhow::Result<Tensor> {
    let n = dims.iter().product();
    Ok(Tensor::from_vec(random_values(n, seed, scale), dims, &Device::Cpu)?)
}

/// Peak resident memory of this process in MiB (`VmHWM` of `/proc/self/status`; 0 where unavailable).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

/// CPU seconds (user + system, all threads) this process has used.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the zero-initialised struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Run `f` `warmup` times untimed, then `reps` times timed: (wall seconds, CPU seconds) per repetition.
pub(super) fn time_reps(
    warmup: usize,
    reps: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    for _ in 0..warmup {
        f()?;
    }
    let (mut wall, mut cpu) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
    for _ in 0..reps {
        let (t0, c0) = (Instant::now(), cpu_seconds());
        f()?;
        wall.push(t0.elapsed().as_secs_f64());
        cpu.push(cpu_seconds() - c0);
    }
    Ok((wall, cpu))
}

/// The weights file the bench uses for `model`: the real Lite0 checkpoint, else the parity fixture's (when it does
/// not fit the registered model, e.g. DINOv2's 3-block fixture, the model is default-initialised instead).
fn weights_path(model: &str) -> Option<PathBuf> {
    let shared = tests::assets::shared_dir();
    let candidates = [
        shared.join(format!("weights/{model}.safetensors")),
        shared.join(format!("parity/{model}.weights.safetensors")),
    ];
    candidates.into_iter().find(|p| p.exists())
}

fn load_model(model: &str) -> anyhow::Result<(Box<dyn Backbone>, String)> {
    let fitted = weights_path(model).map(|p| {
        let source = backbones::WeightsSource::File(p.clone());
        (backbones::pretrained(model, &source, &Device::Cpu), p)
    });
    let (b, note) = match fitted {
        Some((Ok(pretrained), p)) => (pretrained.backbone, format!("weights {}", p.display())),
        Some((Err(e), p)) if p.to_string_lossy().contains("/parity/") => {
            let store = ParamStore::empty(DType::F32, &Device::Cpu);
            let b = backbones::zoo::build(model, &store).with_context(|| format!("cannot build {model}"))?;
            let why = data::text::one_line(&e.to_string());
            (b, format!("parity fixture does not fit ({why}): default-initialised"))
        }
        Some((Err(e), _)) => return Err(anyhow::Error::new(e).context(format!("cannot build {model}"))),
        None => {
            let store = ParamStore::empty(DType::F32, &Device::Cpu);
            let b = backbones::zoo::build(model, &store).with_context(|| format!("cannot build {model}"))?;
            (b, "no weights file: default-initialised".to_string())
        }
    };
    // Training steps measure BatchNorm with batch statistics, as a fresh store has it.
    b.store().set_batchnorm_train(true);
    Ok((b, note))
}

fn measure(args: &OneArgs) -> anyhow::Result<OneResult> {
    let (n, s) = (args.batch, args.size);
    let (images_per_rep, (wall_s, cpu_s), note) = match args.measure {
        Measure::Forward => {
            let (model, note) = load_model(&args.model)?;
            let x = random_tensor(&[n, 3, s, s], 1, 1.0)?;
            let t = time_reps(args.warmup, args.reps, || {
                model.forward_pooled(&x, false)?;
                Ok(())
            })?;
            (n, t, note)
        }
        Measure::SegForward | Measure::SegTrain | Measure::DetForward | Measure::DetTrain => {
            let (model, note) = load_model(&args.model)?;
            super::dense::measure(model.as_ref(), args, note)?
        }
        Measure::TrainHead | Measure::TrainLast | Measure::TrainAll => {
            let (model, note) = load_model(&args.model)?;
            train_step(model.as_ref(), args, note)?
        }
        Measure::E2eJpeg => {
            let (model, note) = load_model(&args.model)?;
            let spec = backbones::registry::get(&args.model)?;
            let pipeline = || Preset::Timm.eval(&spec.preprocess);
            let loaders = loaders(&args.data, n, false, pipeline)?;
            let count = loaders.iter().map(|l| l.dataset().len()).sum();
            let t = time_reps(args.warmup, args.reps, || {
                for l in &loaders {
                    for batch in l.epoch(0) {
                        model.forward_pooled(&batch?.images, false)?;
                    }
                }
                Ok(())
            })?;
            (count, t, format!("{note}; {count} files, timm eval preprocessing"))
        }
        Measure::Data1 | Measure::Data2 => {
            let cfg = data::PreprocessConfig::default();
            let pipeline = || Preset::Timm.train(&cfg);
            let loaders = loaders(&args.data, n, true, pipeline)?;
            let count = loaders.iter().map(|l| l.dataset().len()).sum();
            let mut epoch = 0;
            let t = time_reps(args.warmup, args.reps, || {
                for l in &loaders {
                    for batch in l.epoch(epoch) {
                        batch?;
                    }
                }
                epoch += 1;
                Ok(())
            })?;
            let threads = rayon::current_num_threads();
            (
                count,
                t,
                format!("{count} files, timm train augmentation 224, {threads} threads"),
            )
        }
    };
    Ok(OneResult {
        images_per_rep,
        wall_s,
        cpu_s,
        peak_rss_mib: peak_rss_mib(),
        note,
    })
}

/// Loaders over `root`'s `train` and `val` folders when it has them (ImageFolder layout), else over `root` itself.
fn loaders(
    root: &Path,
    batch: usize,
    shuffle: bool,
    pipeline: impl Fn() -> data::transforms::Pipeline,
) -> anyhow::Result<Vec<Loader>> {
    let splits: Vec<PathBuf> = ["train", "val"]
        .iter()
        .map(|s| root.join(s))
        .filter(|p| p.is_dir())
        .collect();
    let roots = if splits.is_empty() {
        vec![root.to_path_buf()]
    } else {
        splits
    };
    roots
        .iter()
        .map(|r| {
            let ds = data::open(r).with_context(|| format!("cannot open the image folder {}", r.display()))?;
            let cfg = LoaderConfig {
                batch_size: batch,
                shuffle,
                ..LoaderConfig::default()
            };
            Ok(Loader::new(ds, pipeline(), cfg, Device::Cpu)?)
        })
        .collect()
}

pub(super) type Timed = (usize, (Vec<f64>, Vec<f64>), String);

/// Training steps: backbone (part) + linear head, cross-entropy, graft's SGD (momentum 0.9, lr 0.01).
fn train_step(model: &dyn Backbone, args: &OneArgs, note: String) -> anyhow::Result<Timed> {
    let (n, s) = (args.batch, args.size);
    let classes = 2;
    let nf = model.num_features();
    let head_w = Var::from_tensor(&random_tensor(&[classes, nf], 2, 0.01)?)?;
    let head_b = Var::zeros(classes, DType::F32, &Device::Cpu)?;
    let labels = Tensor::from_vec((0..n as u32).map(|i| i % 2).collect::<Vec<_>>(), n, &Device::Cpu)?;
    let head = |f: &Tensor| -> anyhow::Result<Tensor> {
        let logits = f.matmul(&head_w.as_tensor().t()?)?.broadcast_add(head_b.as_tensor())?;
        Ok(candle_nn::loss::cross_entropy(&logits, &labels)?)
    };
    match args.measure {
        Measure::TrainHead => freeze_all_but_last(model, 0)?,
        Measure::TrainLast => freeze_all_but_last(model, 1)?,
        _ => unfreeze_all(model)?,
    }
    let mut vars = model.store().trainable_vars();
    vars.extend([
        ("head.weight".to_string(), head_w.clone()),
        ("head.bias".to_string(), head_b.clone()),
    ]);
    let mut opt = Sgd::new(vec![ParamGroup::new("all", vars, 0.01)], SgdConfig::default())?;
    let mut step = |loss: &Tensor| -> anyhow::Result<()> { Ok(opt.step(&loss.backward()?)?) };
    if args.measure == Measure::TrainHead {
        // Cached features: the step is tiny, so one repetition is an epoch of 100 steps.
        let feats = random_tensor(&[n, nf], 3, 1.0)?;
        let steps = 100;
        let t = time_reps(args.warmup, args.reps, || {
            for _ in 0..steps {
                step(&head(&feats)?)?;
            }
            Ok(())
        })?;
        return Ok((n * steps, t, format!("{note}; graft SGD momentum 0.9")));
    }
    let x = random_tensor(&[n, 3, s, s], 1, 1.0)?;
    let t = time_reps(args.warmup, args.reps, || {
        let loss = head(&model.forward_pooled(&x, true)?)?;
        step(&loss)?;
        Ok(())
    })?;
    Ok((n, t, format!("{note}; graft SGD momentum 0.9")))
}
