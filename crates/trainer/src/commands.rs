//! What each subcommand does, on top of a [`Backend`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::ArgMatches;

use crate::backend::{Backend, Context, DensePredictOptions, DensePrediction, ModelSource, TrainObserver};
use crate::cli::{Cli, Command, DataCommand, EvaluateArgs, ExportArgs, LrFindArgs, PredictArgs, TrainArgs};
use crate::config::{non_default_layer, read_config_file, recipe_config, resolve, Layer, TrainConfig};
use crate::error::UsageError;
use crate::events::{Event, LogFormat, Reporter};
use crate::plots::{encode_png, render_confusion, render_task_curves};
use crate::predict_out::{write_dense_predictions, write_predictions, FilePrediction};
use crate::report::{render_report, ReportInput};
use crate::spec::{Recipe, TaskKind};
use crate::summary::{best_epoch, write_metrics_csv, write_metrics_json, EpochRow, TrainOutcome};
use crate::{lr_find, models, run_dir, tutorial};
use data::fsutil::write_atomic;

/// Run the parsed command line; `matches` are clap's matches for the same line.
pub fn run(cli: Cli, matches: &ArgMatches, backend: &dyn Backend) -> anyhow::Result<ExitCode> {
    let mut reporter = Reporter::stdout(cli.log_format, cli.quiet);
    let ctx = Context {
        device: cli.device.unwrap_or_default(),
        seed: cli.seed.unwrap_or(TrainConfig::default().seed),
    };
    match cli.command {
        None => {
            let cfg = default_job_config(&cli, tutorial::cache_dir().as_deref(), tutorial::HYMENOPTERA_URL)?;
            train_run(cfg, backend, &mut reporter)?;
        }
        Some(Command::Train(args)) => {
            // Invariant: clap produced `Command::Train` from the `train` subcommand.
            let sub = matches.subcommand_matches("train").expect("train matches");
            let cfg = resolve_train_config(&args, sub, matches)?;
            train_run(cfg, backend, &mut reporter)?;
        }
        Some(Command::Evaluate(args)) => evaluate(ctx, &args, backend, cli.quiet, cli.log_format)?,
        Some(Command::Predict(args)) => return predict(ctx, &args, backend),
        Some(Command::Export(args)) => export(&args, backend, &mut reporter)?,
        Some(Command::Models) => list_models(),
        Some(Command::Data(DataCommand::Inspect { path, strict })) => {
            return inspect(&path, strict, backend, cli.log_format)
        }
        Some(Command::LrFind(args)) => lr_find_cmd(ctx, &args, backend, &mut reporter)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether the user typed `id` on the command line (in the subcommand or, for global flags, anywhere).
fn typed(id: &str, matches: &[&ArgMatches]) -> bool {
    matches
        .iter()
        .any(|m| m.try_get_raw(id).ok().flatten().is_some() && m.value_source(id) == Some(ValueSource::CommandLine))
}

/// Resolve `trainer train`'s settings: defaults < recipe < resumed run < `--config` file < typed flags.
pub fn resolve_train_config(args: &TrainArgs, sub: &ArgMatches, root: &ArgMatches) -> anyhow::Result<TrainConfig> {
    let file = match &args.config {
        Some(path) => Some(read_config_file(path)?),
        None => None,
    };
    let resumed = match &args.resume {
        Some(dir) => {
            let path = dir.join("config.toml");
            if !path.is_file() {
                return Err(UsageError(format!(
                    "--resume {}: no config.toml there (not a run folder)",
                    dir.display()
                ))
                .into());
            }
            Some(read_config_file(&path)?)
        }
        None => None,
    };
    let recipe = match args.recipe {
        Some(r) => Some(r),
        None => recipe_of(file.as_ref())?.or(recipe_of(resumed.as_ref())?),
    };

    // Typed flags: the serialised args, keeping only what the command line set.
    // Invariant: every TrainArgs field serialises to a TOML scalar.
    let all = toml::Table::try_from(args).expect("train args serialise to TOML");
    let mut cli_layer: Layer = all.into_iter().filter(|(k, _)| typed(k, &[sub])).collect();
    let root_and_sub = [root, sub];
    if let Some(seed) = root.get_one::<u64>("seed").filter(|_| typed("seed", &root_and_sub)) {
        cli_layer.insert("seed".into(), toml::Value::Integer(*seed as i64));
    }
    if let Some(device) = root
        .get_one::<crate::spec::DeviceSpec>("device")
        .filter(|_| typed("device", &root_and_sub))
    {
        cli_layer.insert("device".into(), toml::Value::String(device.to_string()));
    }

    let mut layers = Vec::new();
    if let Some(r) = recipe {
        layers.push(non_default_layer(&recipe_config(r)));
    }
    layers.extend(resumed);
    layers.extend(file);
    layers.push(cli_layer);
    let mut cfg = resolve(layers)?;
    cfg.normalize();
    cfg.validate()?;
    models::check(&cfg.model, &models::names()).map_err(UsageError)?;
    Ok(cfg)
}

fn recipe_of(layer: Option<&Layer>) -> Result<Option<Recipe>, UsageError> {
    match layer.and_then(|l| l.get("recipe")).and_then(|v| v.as_str()) {
        Some(s) => s.parse().map(Some).map_err(UsageError),
        None => Ok(None),
    }
}

/// The no-argument job: the torchvision recipe on the cached (or freshly fetched) hymenoptera data.
pub fn default_job_config(cli: &Cli, cache: Option<&Path>, url: &str) -> anyhow::Result<TrainConfig> {
    let data = match cache {
        Some(cache) => tutorial::ensure_hymenoptera(cache, url, Duration::from_secs(5))
            .map_err(|e| anyhow::anyhow!(tutorial::offline_message(Some(cache), &e)))?,
        None => {
            let e = tutorial::FetchError::Io(std::io::Error::other("no cache folder"));
            anyhow::bail!(tutorial::offline_message(None, &e))
        }
    };
    let mut cfg = recipe_config(Recipe::TorchvisionResnet18);
    cfg.data = Some(data.join("train"));
    cfg.val = Some(data.join("val"));
    cfg.seed = cli.seed.unwrap_or(cfg.seed);
    cfg.device = cli.device.unwrap_or(cfg.device);
    cfg.validate()?;
    Ok(cfg)
}

/// Prints progress and keeps `metrics.csv` current.
struct RunObserver<'a> {
    run_dir: PathBuf,
    history: Vec<EpochRow>,
    reporter: &'a mut Reporter,
}

impl TrainObserver for RunObserver<'_> {
    fn epoch_started(&mut self, epoch: usize, epochs: usize, batches: usize) {
        self.reporter.emit(Event::EpochStarted { epoch, epochs, batches });
    }
    fn batch(&mut self, p: &training::BatchProgress, batches: usize) {
        self.reporter.emit(Event::batch(p, batches));
    }
    fn progress(&mut self, task: &str, done: usize, total: usize) {
        self.reporter.emit(Event::Progress {
            task: task.to_string(),
            done,
            total,
        });
    }
    fn epoch_ended(&mut self, row: &EpochRow) -> anyhow::Result<()> {
        self.history.push(row.clone());
        write_metrics_csv(&self.run_dir, &self.history)?;
        self.reporter.emit(Event::EpochEnded(row.clone()));
        Ok(())
    }
    fn info(&mut self, message: &str) {
        self.reporter.emit(Event::Info {
            message: message.to_string(),
        });
    }
}

/// What a failed run may remove: only what this invocation created or wrote into an empty folder.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cleanup {
    /// The run folder was empty or absent before: everything in it is this run's.
    empty_before: bool,
    /// The run folder did not exist before.
    created: bool,
    /// The project folder (auto-named runs) did not exist before.
    created_project: Option<PathBuf>,
}

impl Cleanup {
    /// Look at the folders `train_run` is about to use, before it creates them.
    fn before(cfg: &TrainConfig) -> Option<Self> {
        if cfg.resume.is_some() {
            return None;
        }
        let empty = |p: &Path| std::fs::read_dir(p).map(|mut d| d.next().is_none()).unwrap_or(true);
        Some(match &cfg.out {
            Some(out) => Self {
                empty_before: empty(out),
                created: !out.exists(),
                created_project: None,
            },
            None => {
                // Without --exist-ok the run folder is always a new one; with it, `project/name` may be reused.
                let reused = cfg.project.join(&cfg.name);
                let fresh = !cfg.exist_ok || !reused.exists();
                Self {
                    empty_before: fresh || empty(&reused),
                    created: fresh,
                    created_project: (!cfg.project.exists()).then(|| cfg.project.clone()),
                }
            }
        })
    }

    /// Remove what a run that failed before finishing an epoch left in `run_dir`.
    fn apply(&self, run_dir: &Path) {
        if !self.empty_before {
            return;
        }
        if self.created {
            let _ = std::fs::remove_dir_all(run_dir);
        } else if let Ok(entries) = std::fs::read_dir(run_dir) {
            for e in entries.flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
        if let Some(project) = &self.created_project {
            // Only when empty: a concurrent run may have put its folder there.
            let _ = std::fs::remove_dir(project);
        }
    }
}

/// The paths a run needs, checked before its folder is created.
fn check_inputs(cfg: &TrainConfig) -> Result<(), UsageError> {
    for (path, flag) in [(&cfg.data, "--data"), (&cfg.val, "--val"), (&cfg.weights, "--weights")] {
        if let Some(p) = path {
            require_exists(p, flag)?;
        }
    }
    if let Some(out) = &cfg.out {
        if out.is_file() {
            return Err(UsageError(format!("--out {} is a file, not a folder", out.display())));
        }
    }
    Ok(())
}

/// Create (or reuse, for `--resume`) the run folder, record the config, train, and write every artifact.
///
/// Paths are checked before the folder is created; when training fails before its first epoch ends, the folder
/// this invocation created (or filled from empty) is removed again, so a mistake leaves nothing behind.
pub fn train_run(cfg: TrainConfig, backend: &dyn Backend, reporter: &mut Reporter) -> anyhow::Result<PathBuf> {
    check_inputs(&cfg)?;
    let cleanup = Cleanup::before(&cfg);
    let run_dir = match &cfg.resume {
        Some(dir) => dir.clone(),
        None => run_dir::create_run_dir(cfg.out.as_deref(), &cfg.project, &cfg.name, cfg.exist_ok)?,
    };
    let fail = |e: anyhow::Error| {
        if let Some(c) = &cleanup {
            c.apply(&run_dir);
        }
        e
    };
    write_atomic(&run_dir.join("config.toml"), cfg.to_toml().as_bytes()).map_err(|e| fail(e.into()))?;
    reporter.emit(Event::RunStarted {
        run_dir: run_dir.clone(),
        model: cfg.model.clone(),
        epochs: cfg.epochs,
    });
    let mut observer = RunObserver {
        run_dir: run_dir.clone(),
        history: Vec::new(),
        reporter,
    };
    let outcome = match backend.train(&cfg, &run_dir, &mut observer) {
        Ok(o) => o,
        // After an epoch the folder holds a checkpoint worth resuming from.
        Err(e) if observer.history.is_empty() => return Err(fail(e)),
        Err(e) => return Err(e),
    };
    for path in write_run_artifacts(&run_dir, &cfg, &outcome)? {
        reporter.emit(Event::Artifact { path });
    }
    let best = best_epoch(&outcome.history);
    let val_accuracy = best.and_then(|b| b.val_acc);
    let best_score = match (&outcome.dense, best.and_then(|b| b.score)) {
        (Some(d), Some(v)) => Some((d.score_name.clone(), v)),
        _ => None,
    };
    reporter.emit(Event::Finished {
        best_score,
        run_dir: Some(run_dir.clone()),
        val_accuracy,
    });
    Ok(run_dir)
}

/// Write `metrics.csv`, `metrics.json`, `curves.png`, `confusion_matrix.png` (with validation) and `report.html`.
pub fn write_run_artifacts(run_dir: &Path, cfg: &TrainConfig, outcome: &TrainOutcome) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut put = |name: &str, bytes: &[u8]| -> anyhow::Result<()> {
        let path = run_dir.join(name);
        write_atomic(&path, bytes)?;
        written.push(path);
        Ok(())
    };
    put("metrics.csv", crate::summary::metrics_csv(&outcome.history).as_bytes())?;
    write_metrics_json(run_dir, &outcome.history, outcome.eval.as_ref(), outcome.dense.as_ref())?;
    if let Some(d) = &outcome.dense {
        for (name, png) in &d.figures {
            let path = run_dir.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            put(name, png)?;
        }
    }
    let score_name = outcome.dense.as_ref().map(|d| d.score_name.as_str());
    let curves = encode_png(&render_task_curves(&outcome.history, score_name, 1000, 400)?)?;
    put("curves.png", &curves)?;
    let confusion = match &outcome.eval {
        Some(e) => {
            let png = encode_png(&render_confusion(&e.classes, &e.confusion)?)?;
            put("confusion_matrix.png", &png)?;
            Some(png)
        }
        None => None,
    };
    let settings = report_settings(cfg);
    let title = run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let html = render_report(&ReportInput {
        title,
        settings,
        history: &outcome.history,
        eval: outcome.eval.as_ref(),
        curves_png: &curves,
        confusion_png: confusion.as_deref(),
        wrong: &outcome.wrong,
        dense: outcome.dense.as_ref(),
    });
    put("report.html", html.as_bytes())?;
    written.insert(1, run_dir.join("metrics.json"));
    Ok(written)
}

fn report_settings(cfg: &TrainConfig) -> Vec<(String, String)> {
    let opt = |p: &Option<PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "-".into())
    };
    vec![
        ("model".into(), cfg.model.clone()),
        ("mode".into(), cfg.mode.to_string()),
        ("head".into(), cfg.head.to_string()),
        ("data".into(), opt(&cfg.data)),
        (
            "validation".into(),
            cfg.val_split
                .map(|f| format!("{f} of data"))
                .unwrap_or_else(|| opt(&cfg.val)),
        ),
        ("optimizer".into(), format!("{} lr {}", cfg.optimizer, cfg.lr)),
        ("scheduler".into(), cfg.scheduler.to_string()),
        ("epochs × batch".into(), format!("{} × {}", cfg.epochs, cfg.batch_size)),
        ("augmentation".into(), cfg.augment.to_string()),
        ("seed".into(), cfg.seed.to_string()),
    ]
}

fn evaluate(
    ctx: Context,
    args: &EvaluateArgs,
    backend: &dyn Backend,
    quiet: bool,
    format: LogFormat,
) -> anyhow::Result<()> {
    require_run_dir(&args.run, "--run")?;
    require_exists(&args.data, "--data")?;
    if backend.task_of(&ModelSource::Run(args.run.clone()))? != TaskKind::Classify {
        let eval = backend.evaluate_dense(ctx, &args.run, &args.data)?;
        // Invariant: the evaluation holds names and finite numbers.
        println!("{}", serde_json::to_string(&eval).expect("evaluation serialises"));
        if format == LogFormat::Text && !quiet {
            eprintln!("{} on {} images", eval.task, eval.images);
            for (k, v) in &eval.metrics {
                eprintln!("  {k}: {v:.4}");
            }
        }
        return Ok(());
    }
    let (eval, _wrong) = backend.evaluate(ctx, &args.run, &args.data)?;
    // The metrics go to stdout as JSON whatever the log format; a human summary goes to stderr in text mode.
    // Invariant: the summary holds names and finite numbers.
    println!("{}", serde_json::to_string(&eval).expect("evaluation serialises"));
    if format == LogFormat::Text && !quiet {
        eprintln!("accuracy {:.4}", eval.accuracy);
        for (name, m) in eval.classes.iter().zip(&eval.per_class) {
            eprintln!(
                "  {name}: precision {:.4} recall {:.4} f1 {:.4} support {}",
                m.precision, m.recall, m.f1, m.support
            );
        }
    }
    Ok(())
}

/// Image file extensions `predict` picks up from folders.
const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "gif", "bmp", "webp"];

/// Expand folders into their image files (sorted, recursive); missing inputs become per-file errors.
pub fn expand_inputs(inputs: &[PathBuf]) -> (Vec<PathBuf>, Vec<FilePrediction>) {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            if p.is_dir() {
                walk(&p, out);
            } else if p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            {
                out.push(p);
            }
        }
    }
    let (mut files, mut errors) = (Vec::new(), Vec::new());
    for input in inputs {
        if input.is_dir() {
            walk(input, &mut files);
        } else if input.is_file() {
            files.push(input.clone());
        } else {
            errors.push(FilePrediction {
                path: input.clone(),
                result: Err("no such file or folder".into()),
            });
        }
    }
    (files, errors)
}

fn predict(ctx: Context, args: &PredictArgs, backend: &dyn Backend) -> anyhow::Result<ExitCode> {
    if args.top_k == 0 {
        return Err(UsageError("--top-k must be at least 1".into()).into());
    }
    let source = match (&args.run, &args.model) {
        (Some(run), _) => {
            require_run_dir(run, "--run")?;
            ModelSource::Run(run.clone())
        }
        (None, Some(file)) => {
            require_exists(file, "--model")?;
            ModelSource::File(file.clone())
        }
        // Invariant: clap requires one of --run / --model.
        (None, None) => unreachable!("clap requires --run or --model"),
    };
    let (files, mut failed) = expand_inputs(&args.inputs);
    if backend.task_of(&source)? != TaskKind::Classify {
        return predict_dense(ctx, args, backend, &source, files, failed);
    }
    let mut preds = if files.is_empty() {
        Vec::new()
    } else {
        backend.predict(ctx, &source, &files, args.top_k, args.tta)?
    };
    preds.append(&mut failed);
    write_predictions(std::io::stdout().lock(), args.format, &preds)?;
    let errors: Vec<&FilePrediction> = preds.iter().filter(|p| p.result.is_err()).collect();
    for p in &errors {
        if let Err(e) = &p.result {
            eprintln!("error: {}: {e}", p.path.display());
        }
    }
    if files.is_empty() && errors.is_empty() {
        return Err(UsageError("no image files found in the given INPUTs".into()).into());
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `predict` with a segmentation or detection model: mask files or boxes, one row per mask or box.
fn predict_dense(
    ctx: Context,
    args: &PredictArgs,
    backend: &dyn Backend,
    source: &ModelSource,
    files: Vec<PathBuf>,
    failed: Vec<FilePrediction>,
) -> anyhow::Result<ExitCode> {
    let opts = DensePredictOptions {
        out_dir: args.out.clone().unwrap_or_else(|| PathBuf::from("predictions")),
        overlay: args.overlay,
        draw: args.draw.clone(),
        conf: args.conf,
        iou: args.iou,
        max_det: args.max_det,
    };
    let mut preds = if files.is_empty() {
        Vec::new()
    } else {
        backend.predict_dense(ctx, source, &files, &opts)?
    };
    preds.extend(failed.into_iter().map(|f| DensePrediction {
        path: f.path,
        result: Err(f.result.err().unwrap_or_default()),
    }));
    write_dense_predictions(std::io::stdout().lock(), args.format, &preds)?;
    let mut errors = 0;
    for p in &preds {
        if let Err(e) = &p.result {
            errors += 1;
            eprintln!("error: {}: {e}", p.path.display());
        }
    }
    if files.is_empty() && errors == 0 {
        return Err(UsageError("no image files found in the given INPUTs".into()).into());
    }
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn export(args: &ExportArgs, backend: &dyn Backend, reporter: &mut Reporter) -> anyhow::Result<()> {
    require_run_dir(&args.run, "--run")?;
    backend.export(&args.run, &args.out)?;
    reporter.emit(Event::Artifact { path: args.out.clone() });
    Ok(())
}

fn list_models() {
    for line in models::table() {
        println!("{line}");
    }
}

fn inspect(path: &Path, strict: bool, backend: &dyn Backend, format: LogFormat) -> anyhow::Result<ExitCode> {
    require_exists(path, "PATH")?;
    let report = backend.inspect(path, strict)?;
    // The whole report first, then one error line for what makes it fail.
    if format == LogFormat::Json {
        // Invariant: names, counts and paths serialise.
        println!("{}", serde_json::to_string(&report).expect("report serialises"));
    } else {
        let total: usize = report.classes.iter().map(|c| c.1).sum();
        println!(
            "{} ({}): {} classes, {total} images",
            path.display(),
            report.kind,
            report.classes.len()
        );
        for (name, count) in &report.classes {
            println!("  {name}: {count}");
        }
        for (file, why) in &report.skipped {
            println!("  skipped {}: {why}", file.display());
        }
        for problem in &report.problems {
            println!("  problem: {problem}");
        }
    }
    if strict {
        if let Some((file, why)) = report.skipped.first() {
            let more = match report.skipped.len() - 1 {
                0 => String::new(),
                n => format!(" (and {n} more unreadable files)"),
            };
            anyhow::bail!("--strict: {}: {why}{more}", file.display());
        }
    }
    if !report.problems.is_empty() {
        anyhow::bail!(
            "{} is not usable for training: {}",
            path.display(),
            report.problems.join("; ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn lr_find_cmd(ctx: Context, args: &LrFindArgs, backend: &dyn Backend, reporter: &mut Reporter) -> anyhow::Result<()> {
    if !(args.start_lr > 0.0 && args.end_lr > args.start_lr) {
        return Err(UsageError("--start-lr must be positive and below --end-lr".into()).into());
    }
    if args.steps < 5 {
        return Err(UsageError("--steps must be at least 5".into()).into());
    }
    if !(0.0..1.0).contains(&args.momentum) {
        return Err(UsageError(format!("--momentum must be in [0, 1), got {}", args.momentum)).into());
    }
    if !(args.weight_decay >= 0.0 && args.weight_decay.is_finite()) {
        return Err(UsageError(format!("--weight-decay must be >= 0, got {}", args.weight_decay)).into());
    }
    require_exists(&args.data, "--data")?;
    models::check(&args.model, &models::names()).map_err(UsageError)?;
    let sweep = backend.lr_find(ctx, args)?;
    let points = &sweep.raw;
    // The steepest descent of the library's rule; none when the loss never fell.
    let suggestion = sweep.steepest;
    if let Some(path) = &args.plot {
        let png = encode_png(&lr_find::render_lr_curve(points, suggestion, 800, 450)?)?;
        write_atomic(path, &png)?;
        reporter.emit(Event::Artifact { path: path.clone() });
    }
    match suggestion {
        Some(lr) => reporter.emit(Event::Info {
            message: format!("suggested lr {lr:.2e}"),
        }),
        None => anyhow::bail!("the loss never decreased during the sweep; try a smaller --start-lr or more --steps"),
    }
    Ok(())
}

fn require_exists(path: &Path, flag: &str) -> Result<(), UsageError> {
    if path.exists() {
        Ok(())
    } else {
        Err(UsageError(format!("{flag} {}: no such file or folder", path.display())))
    }
}

fn require_run_dir(path: &Path, flag: &str) -> Result<(), UsageError> {
    require_exists(path, flag)?;
    if path.join("config.toml").is_file() {
        Ok(())
    } else {
        Err(UsageError(format!(
            "{flag} {}: not a run folder (no config.toml)",
            path.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::DatasetReport;
    use crate::spec::{Mode, SchedulerSpec};
    use crate::summary::{EvalSummary, WrongExample};
    use clap::{CommandFactory, FromArgMatches};
    use std::sync::{Arc, Mutex};

    /// A backend that "trains" by reporting a fixed history, so the run-folder flow can be checked end to end.
    struct Fake {
        image: PathBuf,
        /// Fail (as a data error would) once this many epochs are done.
        fail_after: Option<usize>,
    }

    impl Backend for Fake {
        fn train(
            &self,
            cfg: &TrainConfig,
            run_dir: &Path,
            obs: &mut dyn TrainObserver,
        ) -> anyhow::Result<TrainOutcome> {
            assert!(
                run_dir.join("config.toml").is_file(),
                "config.toml is written before training"
            );
            let history = crate::summary::tests::history(cfg.epochs, true);
            for row in &history {
                if self.fail_after.is_some_and(|n| row.epoch > n) {
                    anyhow::bail!("--data: cannot decode d/ants/broken.jpg");
                }
                obs.epoch_started(row.epoch, cfg.epochs, 2);
                for batch in 0..2 {
                    obs.batch(
                        &training::BatchProgress {
                            epoch: row.epoch - 1,
                            batch,
                            steps: 2 * (row.epoch - 1) + batch + 1,
                            loss: 0.7,
                            mean_loss: 0.7,
                            accuracy: 0.5,
                            samples: 4 * (batch + 1),
                        },
                        2,
                    );
                }
                obs.epoch_ended(row)?;
                let csv = std::fs::read_to_string(run_dir.join("metrics.csv"))?;
                assert_eq!(
                    csv.lines().count(),
                    row.epoch + 1,
                    "metrics.csv is current after each epoch"
                );
            }
            let eval =
                EvalSummary::from_confusion(vec!["ants".into(), "bees".into()], vec![vec![9, 1], vec![2, 8]], None);
            let wrong = vec![WrongExample {
                path: self.image.clone(),
                true_class: "ants".into(),
                pred_class: "bees".into(),
                prob: 0.9,
            }];
            Ok(TrainOutcome {
                history,
                eval: Some(eval),
                wrong,
                dense: None,
            })
        }
        fn evaluate(&self, _: Context, _: &Path, _: &Path) -> anyhow::Result<(EvalSummary, Vec<WrongExample>)> {
            unimplemented!()
        }
        fn predict(
            &self,
            _: Context,
            _: &ModelSource,
            _: &[PathBuf],
            _: usize,
            _: bool,
        ) -> anyhow::Result<Vec<FilePrediction>> {
            unimplemented!()
        }
        fn export(&self, _: &Path, _: &Path) -> anyhow::Result<()> {
            unimplemented!()
        }
        fn inspect(&self, _: &Path, _: bool) -> anyhow::Result<DatasetReport> {
            unimplemented!()
        }
        fn lr_find(&self, _: Context, _: &LrFindArgs) -> anyhow::Result<training::LrFinderResult> {
            unimplemented!()
        }
    }

    fn parse(line: &[&str]) -> (Cli, ArgMatches) {
        let m = Cli::command().try_get_matches_from(line).unwrap();
        (Cli::from_arg_matches(&m).unwrap(), m)
    }

    fn resolve_line(line: &[&str]) -> anyhow::Result<TrainConfig> {
        let (cli, m) = parse(line);
        let Some(Command::Train(args)) = cli.command else {
            panic!("not train")
        };
        resolve_train_config(&args, m.subcommand_matches("train").unwrap(), &m)
    }

    #[test]
    fn precedence_is_recipe_then_file_then_typed_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("my.toml");
        std::fs::write(
            &file,
            "lr = 0.01\nepochs = 3\nbatch_size = 8\nstrict = true\nseed = 5\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let cfg = resolve_line(&[
            "trainer",
            "--device",
            "cpu",
            "train",
            "--recipe",
            "torchvision-resnet18",
            "--config",
            f,
            "--epochs",
            "5",
            "--data",
            "d",
            "--seed",
            "7",
        ])
        .unwrap();
        assert_eq!(cfg.epochs, 5, "typed flag beats the file");
        assert_eq!((cfg.lr, cfg.batch_size), (0.01, 8), "file beats the recipe");
        assert!(cfg.strict, "an untyped boolean flag does not reset the file's value");
        assert_eq!(cfg.seed, 7, "global flag after the subcommand counts as typed");
        assert_eq!(cfg.device, crate::spec::DeviceSpec::Cpu);
        assert_eq!((cfg.mode, cfg.momentum), (Mode::FineTune, 0.9), "recipe beats defaults");
        assert_eq!(cfg.scheduler, SchedulerSpec::Step { step: 7, gamma: 0.1 });
        // Without the typed seed, the file's seed holds.
        let cfg = resolve_line(&["trainer", "train", "--config", f, "--data", "d"]).unwrap();
        assert_eq!((cfg.seed, cfg.epochs), (5, 3));
        // A recipe named in the file applies under it.
        std::fs::write(&file, "recipe = \"keras-vgg16-binary\"\nepochs = 2\n").unwrap();
        let cfg = resolve_line(&["trainer", "train", "--config", f, "--data", "d"]).unwrap();
        assert_eq!((cfg.model.as_str(), cfg.epochs, cfg.lr), ("vgg16", 2, 1e-4));
    }

    #[test]
    fn resolution_errors_are_usage_errors() {
        let e = resolve_line(&["trainer", "train", "--epochs", "0", "--data", "d"]).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 2);
        assert!(e.to_string().contains("--epochs"));
        let e = resolve_line(&["trainer", "train", "--data", "d", "--config", "/nonexistent/c.toml"]).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 2);
        let e = resolve_line(&["trainer", "train", "--data", "d", "--resume", "/nonexistent/run"]).unwrap_err();
        assert!(e.to_string().contains("--resume") && crate::error::exit_code(&e) == 2);
    }

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn train_run_fills_the_run_folder_and_resume_reuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("ant.png");
        image::RgbImage::from_pixel(50, 40, image::Rgb([200, 30, 30]))
            .save(&image)
            .unwrap();
        let project = dir.path().join("runs");
        let p = project.to_str().unwrap();
        let data = dir.path().join("d");
        std::fs::create_dir(&data).unwrap();
        let d = data.to_str().unwrap();
        let cfg = resolve_line(&["trainer", "train", "--data", d, "--epochs", "3", "--project", p]).unwrap();
        let sink = Sink::default();
        let mut rep = Reporter::to_writer(LogFormat::Json, false, Box::new(sink.clone()));
        let fake = Fake {
            image,
            fail_after: None,
        };
        let run = train_run(cfg.clone(), &fake, &mut rep).unwrap();
        assert_eq!(run, project.join("train"));
        for f in [
            "config.toml",
            "metrics.csv",
            "metrics.json",
            "curves.png",
            "confusion_matrix.png",
            "report.html",
        ] {
            assert!(run.join(f).is_file(), "missing {f}");
        }
        let saved: TrainConfig = toml::from_str(&std::fs::read_to_string(run.join("config.toml")).unwrap()).unwrap();
        assert_eq!(saved, cfg);
        let html = std::fs::read_to_string(run.join("report.html")).unwrap();
        assert!(html.contains("data:image/jpeg;base64,") && html.contains("resnet18"));
        let events = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(events.lines().filter(|l| l.contains("\"epoch_ended\"")).count(), 3);
        assert!(events.lines().last().unwrap().contains("\"finished\""));

        // A second run never reuses the folder.
        let mut quiet = Reporter::to_writer(LogFormat::Text, true, Box::new(Sink::default()));
        assert_eq!(train_run(cfg, &fake, &mut quiet).unwrap(), project.join("train2"));

        // Resume: the run's config is the base, typed flags override, the folder is reused.
        let r = run.to_str().unwrap();
        let resumed = resolve_line(&["trainer", "train", "--resume", r, "--epochs", "4"]).unwrap();
        assert_eq!((resumed.epochs, resumed.data.as_deref()), (4, Some(data.as_path())));
        assert_eq!(train_run(resumed, &fake, &mut quiet).unwrap(), run);
        let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
        assert_eq!(csv.lines().count(), 5);
        assert!(!project.join("train3").exists());
    }

    #[test]
    fn a_run_failing_before_its_first_epoch_leaves_no_folder_behind() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let (d, project) = (data.to_str().unwrap(), dir.path().join("runs"));
        let p = project.to_str().unwrap();
        let quiet = || Reporter::to_writer(LogFormat::Text, true, Box::new(Sink::default()));
        let failing = Fake {
            image: dir.path().join("none.png"),
            fail_after: Some(0),
        };

        // A missing path is refused before any folder is made.
        let cfg = resolve_line(&["trainer", "train", "--data", "/no/such/data", "--project", p]).unwrap();
        let e = train_run(cfg, &failing, &mut quiet()).unwrap_err();
        assert!(e.to_string().contains("--data /no/such/data") && crate::error::exit_code(&e) == 2);
        assert!(!project.exists());
        let cfg = resolve_line(&[
            "trainer",
            "train",
            "--data",
            d,
            "--weights",
            "/no/w.safetensors",
            "--project",
            p,
        ]);
        let e = train_run(cfg.unwrap(), &failing, &mut quiet()).unwrap_err();
        assert!(e.to_string().contains("--weights") && !project.exists());

        // Training fails after the folder was made: the folder (and the project folder it made) go away.
        let cfg = resolve_line(&["trainer", "train", "--data", d, "--project", p]).unwrap();
        let e = train_run(cfg.clone(), &failing, &mut quiet()).unwrap_err();
        assert!(e.to_string().contains("broken.jpg"));
        assert!(!project.exists(), "no empty run folder left");

        // An existing project folder stays; so do other runs in it.
        let ok = Fake {
            image: dir.path().join("none.png"),
            fail_after: None,
        };
        assert_eq!(
            train_run(cfg.clone(), &ok, &mut quiet()).unwrap(),
            project.join("train")
        );
        train_run(cfg.clone(), &failing, &mut quiet()).unwrap_err();
        assert!(project.join("train/report.html").is_file() && !project.join("train2").exists());

        // A failure after an epoch keeps the folder (it holds a checkpoint to resume from).
        let late = Fake {
            image: dir.path().join("none.png"),
            fail_after: Some(1),
        };
        train_run(cfg.clone(), &late, &mut quiet()).unwrap_err();
        assert_eq!(
            std::fs::read_to_string(project.join("train2/metrics.csv"))
                .unwrap()
                .lines()
                .count(),
            2
        );

        // --exist-ok into a folder with content, and --resume: nothing is removed.
        let line = ["trainer", "train", "--data", d, "--project", p, "--exist-ok"];
        train_run(resolve_line(&line).unwrap(), &failing, &mut quiet()).unwrap_err();
        assert!(project.join("train/report.html").is_file());
        let r = project.join("train2");
        let resumed = resolve_line(&["trainer", "train", "--resume", r.to_str().unwrap()]).unwrap();
        train_run(resumed, &failing, &mut quiet()).unwrap_err();
        assert!(r.join("metrics.csv").is_file());

        // --out: a folder this run created goes away; a pre-existing empty one is emptied but kept.
        let out = dir.path().join("mine");
        let line = ["trainer", "train", "--data", d, "--out", out.to_str().unwrap()];
        train_run(resolve_line(&line).unwrap(), &failing, &mut quiet()).unwrap_err();
        assert!(!out.exists());
        std::fs::create_dir(&out).unwrap();
        train_run(resolve_line(&line).unwrap(), &failing, &mut quiet()).unwrap_err();
        assert!(out.is_dir() && std::fs::read_dir(&out).unwrap().next().is_none());
    }

    #[test]
    fn default_job_uses_the_cached_data_or_explains_offline() {
        let dir = tempfile::tempdir().unwrap();
        let (cli, _) = parse(&["trainer", "--seed", "3"]);
        let url = "http://127.0.0.1:9/hymenoptera_data.zip";
        let e = default_job_config(&cli, Some(dir.path()), url).unwrap_err().to_string();
        assert!(e.contains(url) && e.contains("--data") && !e.contains('\n'), "{e}");
        let data = dir.path().join(tutorial::HYMENOPTERA_DIR);
        std::fs::create_dir_all(data.join("train/ants")).unwrap();
        std::fs::create_dir_all(data.join("val/ants")).unwrap();
        let cfg = default_job_config(&cli, Some(dir.path()), url).unwrap();
        assert_eq!(cfg.data, Some(data.join("train")));
        assert_eq!(cfg.val, Some(data.join("val")));
        assert_eq!((cfg.seed, cfg.recipe), (3, Some(Recipe::TorchvisionResnet18)));
    }

    #[test]
    fn inputs_expand_folders_and_flag_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        for f in ["b.JPG", "a.png", "notes.txt", "sub/c.jpeg"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let missing = dir.path().join("gone.jpg");
        let (files, errors) = expand_inputs(&[dir.path().to_path_buf(), missing.clone()]);
        let names: Vec<String> = files
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a.png", "b.JPG", "sub/c.jpeg"]);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, missing);
    }
}
