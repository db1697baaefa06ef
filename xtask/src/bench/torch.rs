//! `cargo xtask bench --compare-torch`: the same measurements in PyTorch + timm (`xtask/torch_bench.py`, called once
//! per bench with every model and workload, one child process per measurement), and a table of graft's img/s and
//! peak memory against PyTorch's.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::{median, Args, Measure, Row};

/// Prefix of the script's result line on stdout.
pub const MARKER: &str = "TORCH_BENCH ";

/// The measurements the script has a PyTorch equivalent of.
pub const SUPPORTED: [Measure; 4] = [
    Measure::Forward,
    Measure::TrainHead,
    Measure::TrainLast,
    Measure::TrainAll,
];

/// What the script reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TorchReport {
    /// `torch.__version__`.
    pub torch: String,
    /// `timm.__version__`.
    pub timm: String,
    /// `torch.get_num_threads()` after setting it.
    pub threads: usize,
    /// One row per model and measurement.
    pub rows: Vec<TorchRow>,
}

/// One PyTorch measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TorchRow {
    /// timm name.
    pub model: String,
    /// The measurement's name (as graft's).
    pub measure: String,
    /// `ok` or `skipped: <reason>`.
    pub status: String,
    /// Images per timed repetition.
    pub images_per_rep: usize,
    /// Wall seconds of each timed repetition.
    pub wall_s: Vec<f64>,
    /// Details (which layers train, optimizer).
    pub note: String,
    /// Peak resident memory of the measurement's own process (MiB), when the script reported it.
    #[serde(default)]
    pub peak_rss_mib: Option<f64>,
}

impl TorchRow {
    /// Median images per second over the timed repetitions (`None` unless the row is `ok` with timings).
    pub fn median_img_s(&self) -> Option<f64> {
        if self.status != "ok" || self.wall_s.is_empty() || self.images_per_rep == 0 {
            return None;
        }
        let rates: Vec<f64> = self.wall_s.iter().map(|s| self.images_per_rep as f64 / s).collect();
        Some(median(&rates))
    }
}

/// The Python interpreter: `$TL_PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("TL_PYTHON")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "python3".into())
}

/// `Ok` when `python -c "import torch, timm"` works, else why not (one line).
pub fn available(python: &str) -> Result<(), String> {
    let out = Command::new(python)
        .args(["-c", "import torch, timm"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("failed");
    Err(format!("{python} -c \"import torch, timm\": {}", last.trim()))
}

/// The checked-in script.
pub fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("torch_bench.py")
}

/// The script's arguments for the models and measurements of `args` (only those with a PyTorch equivalent);
/// `None` when no measurement has one.
pub fn script_args(args: &Args, measures: &[Measure]) -> Option<Vec<String>> {
    let names: Vec<&str> = measures
        .iter()
        .filter(|m| SUPPORTED.contains(m))
        .map(|m| m.name())
        .collect();
    if names.is_empty() || args.models.is_empty() {
        return None;
    }
    Some(
        [
            ("--models", args.models.join(",")),
            ("--measures", names.join(",")),
            ("--batch", args.batch.to_string()),
            ("--size", args.size.to_string()),
            ("--warmup", args.warmup.to_string()),
            ("--reps", args.reps.to_string()),
            ("--threads", args.threads.to_string()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_string(), v])
        .collect(),
    )
}

/// The report in the script's stdout (the line after [`MARKER`]; other lines are ignored).
pub fn parse_output(stdout: &str) -> anyhow::Result<TorchReport> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(MARKER))
        .context("the PyTorch script printed no result line")?;
    serde_json::from_str(line).context("the PyTorch script's result is not valid JSON")
}

/// Run the script with `script_args` (threads pinned through the environment too).
pub fn run_script(python: &str, script_args: &[String], threads: usize) -> anyhow::Result<TorchReport> {
    let script = script_path();
    let out = Command::new(python)
        .arg(&script)
        .args(script_args)
        .env("OMP_NUM_THREADS", threads.to_string())
        .env("MKL_NUM_THREADS", threads.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {python} {}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("{} {} failed ({})", python, script.display(), out.status);
    }
    parse_output(&stdout)
}

/// The CPU's name (`model name` of `/proc/cpuinfo`), or `unknown CPU`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| cpu_model_of(&s))
        .unwrap_or_else(|| "unknown CPU".into())
}

fn cpu_model_of(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "model name").then(|| v.trim().to_string())
    })
}

/// The comparison table (Markdown): one line per graft row with a PyTorch equivalent, the ratio graft ÷ PyTorch.
pub fn table(ours: &[Row], torch: &TorchReport, cpu: &str, args: &Args) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "graft vs PyTorch {} (timm {}, eager) on {cpu}, {} threads, batch {}, {}×{}, {} warm-up + {} reps (median img/s)",
        torch.torch, torch.timm, args.threads, args.batch, args.size, args.size, args.warmup, args.reps
    );
    let _ = writeln!(
        out,
        "| model | work | graft img/s | PyTorch img/s | graft ÷ PyTorch | graft peak MiB | PyTorch peak MiB |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
    for r in ours.iter().filter(|r| SUPPORTED.contains(&r.measure)) {
        let t = torch
            .rows
            .iter()
            .find(|t| t.model == r.model && t.measure == r.measure.name());
        let theirs = t.and_then(TorchRow::median_img_s);
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        let ratio = match (r.median_img_s, theirs) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
            _ => "-".into(),
        };
        let mib = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
        let mut line = format!(
            "| {} | {} | {} | {} | {ratio} | {} | {} |",
            r.model,
            r.measure.name(),
            fmt(r.median_img_s),
            fmt(theirs),
            mib(r.peak_rss_mib),
            mib(t.and_then(|t| t.peak_rss_mib)),
        );
        // Say why a side is missing.
        let why = [
            (r.median_img_s.is_none()).then(|| format!("graft {}", r.status)),
            match t {
                None => Some("PyTorch: not measured".to_string()),
                Some(t) if theirs.is_none() => Some(format!("PyTorch {}", t.status)),
                _ => None,
            },
        ];
        let why: Vec<String> = why.into_iter().flatten().collect();
        if !why.is_empty() {
            line.push_str(&format!(" {}", why.join("; ")));
        }
        let _ = writeln!(out, "{line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: Args,
    }

    fn args(line: &[&str]) -> Args {
        Wrap::parse_from(std::iter::once("bench").chain(line.iter().copied())).args
    }

    fn row(model: &str, measure: Measure, img_s: Option<f64>) -> Row {
        Row {
            model: model.into(),
            measure,
            threads: 2,
            status: if img_s.is_some() {
                "ok".into()
            } else {
                "skipped: no weights".into()
            },
            median_img_s: img_s,
            min_img_s: img_s,
            max_img_s: img_s,
            median_wall_s: None,
            cpu_ms_per_img: None,
            peak_rss_mib: None,
            result: None,
        }
    }

    fn trow(model: &str, measure: &str, wall_s: &[f64]) -> TorchRow {
        TorchRow {
            model: model.into(),
            measure: measure.into(),
            status: "ok".into(),
            images_per_rep: 16,
            wall_s: wall_s.to_vec(),
            note: String::new(),
            peak_rss_mib: Some(512.0),
        }
    }

    #[test]
    fn script_arguments_mirror_the_bench_and_keep_only_torch_workloads() {
        let a = args(&[
            "--models",
            "resnet18,vit_small_patch14_dinov2",
            "--only",
            "forward,e2e-jpeg,train-all",
            "--warmup",
            "2",
            "--reps",
            "3",
            "--threads",
            "4",
        ]);
        let measures = [Measure::Forward, Measure::E2eJpeg, Measure::TrainAll];
        let v = script_args(&a, &measures).unwrap();
        assert_eq!(
            v,
            [
                "--models",
                "resnet18,vit_small_patch14_dinov2",
                "--measures",
                "forward,train-all",
                "--batch",
                "16",
                "--size",
                "224",
                "--warmup",
                "2",
                "--reps",
                "3",
                "--threads",
                "4"
            ]
        );
        assert_eq!(script_args(&a, &[Measure::E2eJpeg, Measure::Data1]), None);
        assert!(!a.compare_torch && a.json.is_none());
        let b = args(&["--compare-torch", "--json", "out.json"]);
        assert!(b.compare_torch);
        assert_eq!(b.json.as_deref(), Some(Path::new("out.json")));
    }

    #[test]
    fn the_result_line_is_found_among_warnings_and_parsed() {
        let stdout = format!(
            "UserWarning: something\n{MARKER}{}\n",
            r#"{"torch": "2.15.0", "timm": "1.0.31", "threads": 2, "rows": [
                {"model": "resnet18", "measure": "forward", "status": "ok", "images_per_rep": 16,
                 "wall_s": [2.0, 1.0, 4.0], "note": "eval, no_grad"},
                {"model": "nosuch", "measure": "forward", "status": "skipped: RuntimeError: Unknown model",
                 "images_per_rep": 0, "wall_s": [], "note": ""}]}"#
                .replace('\n', " ")
        );
        let r = parse_output(&stdout).unwrap();
        assert_eq!((r.torch.as_str(), r.threads, r.rows.len()), ("2.15.0", 2, 2));
        assert_eq!(r.rows[0].median_img_s(), Some(8.0), "median of 8, 16, 4 img/s");
        assert_eq!(r.rows[1].median_img_s(), None);
        assert!(parse_output("no marker here\n").is_err());
        assert!(parse_output(&format!("{MARKER}{{not json")).is_err());
    }

    #[test]
    fn the_table_has_a_ratio_per_row_and_names_cpu_and_threads() {
        let a = args(&["--models", "resnet18,convnext_atto", "--reps", "3"]);
        let ours = [
            row("resnet18", Measure::Forward, Some(20.0)),
            row("resnet18", Measure::E2eJpeg, Some(60.0)),
            row("resnet18", Measure::TrainAll, Some(5.0)),
            row("convnext_atto", Measure::Forward, None),
        ];
        let torch = TorchReport {
            torch: "2.15.0".into(),
            timm: "1.0.31".into(),
            threads: 2,
            rows: vec![
                trow("resnet18", "forward", &[1.6, 1.6, 1.6]),
                trow("resnet18", "train-all", &[4.0, 3.2, 4.0]),
                trow("convnext_atto", "forward", &[0.5]),
            ],
        };
        let t = table(&ours, &torch, "AMD EPYC 7B13", &a);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].contains("AMD EPYC 7B13") && lines[0].contains("2 threads") && lines[0].contains("2.15.0"),
            "{t}"
        );
        assert_eq!(
            lines.len(),
            3 + 3,
            "header, columns, rule, one line per comparable row:\n{t}"
        );
        // graft's rows carry no peak here; PyTorch's report 512 MiB.
        assert_eq!(lines[3], "| resnet18 | forward | 20.00 | 10.00 | 2.00× | - | 512 |");
        assert_eq!(lines[4], "| resnet18 | train-all | 5.00 | 4.00 | 1.25× | - | 512 |");
        assert!(
            lines[5].starts_with("| convnext_atto | forward | - | 32.00 | - | - | 512 |"),
            "{t}"
        );
        assert!(lines[5].contains("graft skipped: no weights"), "{t}");
        assert!(!t.contains("e2e-jpeg"), "no PyTorch equivalent, no line");
    }

    #[test]
    fn cpu_model_comes_from_cpuinfo() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t: avx2\n";
        assert_eq!(cpu_model_of(info).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model_of("processor : 0\n"), None);
    }

    #[test]
    fn a_missing_interpreter_is_reported_not_fatal() {
        let e = available("/no/such/python3").unwrap_err();
        assert!(e.contains("/no/such/python3"), "{e}");
    }
}
