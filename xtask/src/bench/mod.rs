//! `cargo xtask bench`: CPU throughput and peak memory of forward passes, end-to-end feature extraction, training
//! steps and the data pipeline.
//!
//! Every measurement runs in its own child process (`xtask bench-one`), so its peak resident memory (`VmHWM`) is its
//! own. Each child warms up, times several repetitions and reports them; the parent prints a table of medians and
//! spreads and writes everything as JSON to `target/bench/` (`bench-<unix time>.json` and `latest.json`).

mod dense;
mod measure;
mod torch;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

pub use measure::run_one;

/// What one benchmark line measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Measure {
    /// Eval forward to pooled features on random input.
    Forward,
    /// JPEG files on disk to pooled features (decode, eval preprocessing, batching, forward), whole folder.
    E2eJpeg,
    /// Training step of a linear head on cached (random) pooled features.
    TrainHead,
    /// Training step with the backbone's last stage unfrozen (+ linear head).
    TrainLast,
    /// Training step with every backbone layer unfrozen (+ linear head).
    TrainAll,
    /// Data pipeline alone (decode, training augmentation, batching) on 1 thread.
    #[value(name = "data-1t")]
    #[serde(rename = "data-1t")]
    Data1,
    /// Data pipeline alone on 2 threads.
    #[value(name = "data-2t")]
    #[serde(rename = "data-2t")]
    Data2,
    /// Segmentation forward (frozen backbone → FPN, or U-Net for ResNets) on random input.
    SegForward,
    /// Segmentation training step, every layer trained.
    SegTrain,
    /// Detection forward (frozen backbone → FCOS P3–P5, postprocessing included) on random input.
    DetForward,
    /// Detection training step, every layer trained.
    DetTrain,
}

impl Measure {
    /// Every measurement, in table order.
    pub const ALL: [Measure; 11] = [
        Measure::Forward,
        Measure::E2eJpeg,
        Measure::TrainHead,
        Measure::TrainLast,
        Measure::TrainAll,
        Measure::Data1,
        Measure::Data2,
        Measure::SegForward,
        Measure::SegTrain,
        Measure::DetForward,
        Measure::DetTrain,
    ];

    /// The name used on the command line, in the table and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Measure::Forward => "forward",
            Measure::E2eJpeg => "e2e-jpeg",
            Measure::TrainHead => "train-head",
            Measure::TrainLast => "train-last",
            Measure::TrainAll => "train-all",
            Measure::Data1 => "data-1t",
            Measure::Data2 => "data-2t",
            Measure::SegForward => "seg-forward",
            Measure::SegTrain => "seg-train",
            Measure::DetForward => "det-forward",
            Measure::DetTrain => "det-train",
        }
    }

    /// Whether the measurement does not depend on the model (measured once, not per model).
    pub fn model_free(self) -> bool {
        matches!(self, Measure::Data1 | Measure::Data2)
    }
}

/// Options of `cargo xtask bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Models to measure (timm names), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "resnet18,tf_efficientnet_lite0")]
    pub models: Vec<String>,
    /// Measurements to run, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', value_enum)]
    pub only: Vec<Measure>,
    /// Images per batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Input height and width.
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Untimed warm-up repetitions.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Timed repetitions (median and spread are over these).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Compute threads of each child (`RAYON_NUM_THREADS`); the data measurements set their own.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Image folder for `e2e-jpeg` and the data measurements (default: the shared hymenoptera set).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output folder of the JSON files (default: `target/bench`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also measure forward / train-* in PyTorch + timm (`xtask/torch_bench.py`, interpreter `$TL_PYTHON` or
    /// `python3`) and print a table with the ratio graft ÷ PyTorch; skipped with a note when torch is missing.
    #[arg(long)]
    pub compare_torch: bool,
}

/// Options of the hidden `xtask bench-one` child.
#[derive(Debug, Clone, clap::Args)]
pub struct OneArgs {
    /// Model (timm name); ignored by model-free measurements.
    #[arg(long)]
    pub model: String,
    /// The measurement.
    #[arg(long, value_enum)]
    pub measure: Measure,
    /// Images per batch.
    #[arg(long)]
    pub batch: usize,
    /// Input height and width.
    #[arg(long)]
    pub size: usize,
    /// Untimed warm-up repetitions.
    #[arg(long)]
    pub warmup: usize,
    /// Timed repetitions.
    #[arg(long)]
    pub reps: usize,
    /// Image folder.
    #[arg(long)]
    pub data: PathBuf,
}

/// What a child reports (one line on stdout, after [`RESULT_MARKER`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OneResult {
    /// Images processed per timed repetition.
    pub images_per_rep: usize,
    /// Wall-clock seconds of each timed repetition.
    pub wall_s: Vec<f64>,
    /// Process CPU seconds (user + system, all threads) of each timed repetition.
    pub cpu_s: Vec<f64>,
    /// Peak resident memory of the child, MiB (`VmHWM`).
    pub peak_rss_mib: f64,
    /// Free-form details (weights used, optimizer, …).
    pub note: String,
}

/// Prefix of the child's result line on stdout.
pub const RESULT_MARKER: &str = "BENCH_RESULT ";

/// One row of the table and of the JSON file.
#[derive(Debug, Clone, Serialize)]
struct Row {
    model: String,
    measure: Measure,
    threads: usize,
    status: String,
    median_img_s: Option<f64>,
    min_img_s: Option<f64>,
    max_img_s: Option<f64>,
    median_wall_s: Option<f64>,
    cpu_ms_per_img: Option<f64>,
    peak_rss_mib: Option<f64>,
    result: Option<OneResult>,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    created_unix: u64,
    batch: usize,
    size: usize,
    warmup: usize,
    reps: usize,
    threads: usize,
    available_cpus: usize,
    load_average: Option<String>,
    cpu_model: String,
    rows: &'a [Row],
    /// The PyTorch side of `--compare-torch`, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    torch: Option<torch::TorchReport>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn row_from(model: &str, measure: Measure, threads: usize, res: OneResult) -> Row {
    let n = res.images_per_rep as f64;
    let rates: Vec<f64> = res.wall_s.iter().map(|s| n / s).collect();
    let fmax = |v: &[f64]| v.iter().copied().fold(f64::MIN, f64::max);
    let fmin = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
    Row {
        model: model.to_string(),
        measure,
        threads,
        status: "ok".into(),
        median_img_s: Some(median(&rates)),
        min_img_s: Some(fmin(&rates)),
        max_img_s: Some(fmax(&rates)),
        median_wall_s: Some(median(&res.wall_s)),
        cpu_ms_per_img: Some(median(&res.cpu_s) / n * 1e3),
        peak_rss_mib: Some(res.peak_rss_mib),
        result: Some(res),
    }
}

fn run_child(args: &Args, model: &str, measure: Measure, data: &Path) -> anyhow::Result<(usize, OneResult)> {
    let threads = match measure {
        Measure::Data1 => 1,
        Measure::Data2 => 2,
        _ => args.threads,
    };
    let exe = std::env::current_exe().context("cannot locate the xtask executable")?;
    let out = Command::new(exe)
        .arg("bench-one")
        .args(["--model", model, "--measure", measure.name()])
        .args(["--batch", &args.batch.to_string(), "--size", &args.size.to_string()])
        .args(["--warmup", &args.warmup.to_string(), "--reps", &args.reps.to_string()])
        .arg("--data")
        .arg(data)
        .env("RAYON_NUM_THREADS", threads.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot start the benchmark child process")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{} ({})",
            stdout.lines().last().unwrap_or("child failed").trim(),
            out.status
        );
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(RESULT_MARKER))
        .context("child printed no result")?;
    Ok((
        threads,
        serde_json::from_str(line).context("child result is not valid JSON")?,
    ))
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "-".into())
}

fn print_row(r: &Row) {
    match r.median_img_s {
        Some(m) => println!(
            "{:<24} {:<11} {:>10} ({:>6}–{:<6}) {:>9} cpu-ms/img {:>8} MiB peak",
            r.model,
            r.measure.name(),
            format!("{m:.2} img/s"),
            fmt_opt(r.min_img_s, 2),
            fmt_opt(r.max_img_s, 2),
            fmt_opt(r.cpu_ms_per_img, 1),
            fmt_opt(r.peak_rss_mib, 0),
        ),
        None => println!("{:<24} {:<11} {}", r.model, r.measure.name(), r.status),
    }
}

/// Run the benchmarks described by `args`, print the table and write the JSON report.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.batch == 0 || args.reps == 0 || args.size < 32 {
        bail!("--batch and --reps must be positive and --size at least 32");
    }
    let measures: Vec<Measure> = if args.only.is_empty() {
        Measure::ALL.to_vec()
    } else {
        Measure::ALL.into_iter().filter(|m| args.only.contains(m)).collect()
    };
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| tests::assets::shared_dir().join("data/hymenoptera"));
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| workspace_root().join("target/bench"));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;

    let mut jobs: Vec<(String, Measure)> = Vec::new();
    for &m in &measures {
        if m.model_free() {
            jobs.push(("data".into(), m));
        } else {
            jobs.extend(args.models.iter().map(|model| (model.clone(), m)));
        }
    }
    jobs.sort_by_key(|(model, m)| {
        (
            model == "data",
            args.models.iter().position(|x| x == model),
            *m as usize,
        )
    });

    let python = torch::python();
    let compare = match (args.compare_torch, torch::script_args(&args, &measures)) {
        (false, _) => None,
        (true, None) => {
            println!("--compare-torch: none of these measurements has a PyTorch equivalent (forward, train-*)");
            None
        }
        (true, Some(script_args)) => match torch::available(&python) {
            Ok(()) => Some(script_args),
            Err(why) => {
                println!("--compare-torch: PyTorch + timm unavailable, graft only ({why}; set TL_PYTHON)");
                None
            }
        },
    };
    let cpu_model = torch::cpu_model();
    println!(
        "graft bench on {cpu_model}: batch {}, {}×{}, {} warm-up + {} reps, {} threads (median img/s, min–max over reps)",
        args.batch, args.size, args.size, args.warmup, args.reps, args.threads
    );
    let mut rows = Vec::new();
    for (model, m) in jobs {
        eprintln!("bench: {model} {} …", m.name());
        let row = match run_child(&args, &model, m, &data) {
            Ok((threads, res)) => row_from(&model, m, threads, res),
            Err(e) => Row {
                model: model.clone(),
                measure: m,
                threads: args.threads,
                status: format!("skipped: {e:#}"),
                median_img_s: None,
                min_img_s: None,
                max_img_s: None,
                median_wall_s: None,
                cpu_ms_per_img: None,
                peak_rss_mib: None,
                result: None,
            },
        };
        print_row(&row);
        rows.push(row);
    }
    let torch_report = match compare {
        Some(script_args) => {
            eprintln!("bench: PyTorch side ({python} {}) …", torch::script_path().display());
            match torch::run_script(&python, &script_args, args.threads) {
                Ok(r) => {
                    print!("{}", torch::table(&rows, &r, &cpu_model, &args));
                    Some(r)
                }
                Err(e) => {
                    println!("--compare-torch: the PyTorch side failed, graft only ({e:#})");
                    None
                }
            }
        }
        None => None,
    };

    let created_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let report = Report {
        created_unix,
        batch: args.batch,
        size: args.size,
        warmup: args.warmup,
        reps: args.reps,
        threads: args.threads,
        available_cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        load_average: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .map(|s| s.trim().to_string()),
        cpu_model,
        rows: &rows,
        torch: torch_report,
    };
    let json = serde_json::to_vec_pretty(&report)?;
    let path = out_dir.join(format!("bench-{created_unix}.json"));
    data::fsutil::write_atomic(&path, &json)?;
    data::fsutil::write_atomic(&out_dir.join("latest.json"), &json)?;
    println!("wrote {}", path.display());
    if let Some(file) = &args.json {
        data::fsutil::write_atomic(file, &json).with_context(|| format!("--json {}", file.display()))?;
        println!("wrote {}", file.display());
    }
    Ok(())
}
