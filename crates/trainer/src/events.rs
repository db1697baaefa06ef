//! Progress output: bars on a terminal, plain lines otherwise, one JSON object per line with `--log-format json`,
//! nothing with `--quiet`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::summary::EpochRow;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (progress bars on a terminal).
    #[default]
    Text,
    /// One JSON object per event line.
    Json,
}

/// Something worth telling the user.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A run folder was created.
    RunStarted {
        /// The run folder.
        run_dir: PathBuf,
        /// Backbone name.
        model: String,
        /// Planned epochs.
        epochs: usize,
    },
    /// An epoch begins.
    EpochStarted {
        /// Epoch number, from 1.
        epoch: usize,
        /// Planned epochs.
        epochs: usize,
        /// Batches in this epoch.
        batches: usize,
    },
    /// A training batch finished.
    Batch {
        /// Epoch number.
        epoch: usize,
        /// Batch number, from 1.
        batch: usize,
        /// Batches in this epoch.
        batches: usize,
        /// Mean training loss over the epoch so far.
        loss: f64,
        /// Training accuracy over the epoch so far.
        accuracy: f64,
        /// Samples trained on so far in this epoch.
        samples: usize,
    },
    /// Progress of a long task over images (e.g. feature extraction); `done == 0` starts it, `done == total` ends it.
    Progress {
        /// What is being done, e.g. `extracting features (train)`.
        task: String,
        /// Images processed.
        done: usize,
        /// Images in all.
        total: usize,
    },
    /// An epoch finished.
    EpochEnded(EpochRow),
    /// A file was written.
    Artifact {
        /// The file.
        path: PathBuf,
    },
    /// A free-form note.
    Info {
        /// The note.
        message: String,
    },
    /// The command finished.
    Finished {
        /// The run folder, when there is one.
        run_dir: Option<PathBuf>,
        /// Best validation accuracy, when known.
        val_accuracy: Option<f64>,
        /// Segmentation/detection: the best validation score and its name (`miou`, `map`).
        #[serde(skip_serializing_if = "Option::is_none")]
        best_score: Option<(String, f64)>,
    },
}

impl Event {
    /// The `batch` event of the library's progress within an epoch of `batches` (epoch and batch from 1; `loss`
    /// is the epoch's running mean).
    pub fn batch(p: &training::BatchProgress, batches: usize) -> Self {
        Event::Batch {
            epoch: p.epoch + 1,
            batch: p.batch + 1,
            batches,
            loss: p.mean_loss,
            accuracy: p.accuracy,
            samples: p.samples,
        }
    }
}

/// Makes the draw target of each new progress bar.
type TargetFactory = Box<dyn Fn() -> ProgressDrawTarget + Send>;

/// Prints events in the chosen style.
pub struct Reporter {
    format: LogFormat,
    quiet: bool,
    tty: bool,
    bar: Option<ProgressBar>,
    out: Box<dyn Write + Send>,
    target: TargetFactory,
    /// When the current epoch or task began.
    started: Instant,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("format", &self.format)
            .field("quiet", &self.quiet)
            .field("tty", &self.tty)
            .finish()
    }
}

/// Images per second over `elapsed` seconds.
fn rate(images: usize, elapsed: f64) -> f64 {
    if elapsed > 0.0 {
        images as f64 / elapsed
    } else {
        0.0
    }
}

impl Reporter {
    /// A reporter on stdout (progress bars only when stdout is a terminal and the format is text).
    pub fn stdout(format: LogFormat, quiet: bool) -> Self {
        let tty = std::io::stdout().is_terminal();
        Self {
            format,
            quiet,
            tty,
            bar: None,
            out: Box::new(std::io::stdout()),
            target: Box::new(ProgressDrawTarget::stdout),
            started: Instant::now(),
        }
    }

    /// A reporter writing plain lines (no bars) to `out`.
    pub fn to_writer(format: LogFormat, quiet: bool, out: Box<dyn Write + Send>) -> Self {
        Self {
            format,
            quiet,
            tty: false,
            bar: None,
            out,
            target: Box::new(ProgressDrawTarget::hidden),
            started: Instant::now(),
        }
    }

    /// A reporter that draws progress bars on the targets `target` makes (e.g. an in-memory terminal) and writes
    /// lines printed while no bar is shown to `out`.
    pub fn with_draw_target(
        format: LogFormat,
        quiet: bool,
        out: Box<dyn Write + Send>,
        target: impl Fn() -> ProgressDrawTarget + Send + 'static,
    ) -> Self {
        Self {
            format,
            quiet,
            tty: true,
            bar: None,
            out,
            target: Box::new(target),
            started: Instant::now(),
        }
    }

    fn new_bar(&mut self, len: usize, template: &str, prefix: String) {
        if let Some(old) = self.bar.take() {
            old.finish_and_clear();
        }
        let bar = ProgressBar::with_draw_target(Some(len as u64), (self.target)());
        bar.set_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(prefix);
        self.bar = Some(bar);
    }

    fn clear_bar(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    /// Report one event.
    pub fn emit(&mut self, event: Event) {
        if self.quiet {
            return;
        }
        if self.format == LogFormat::Json {
            // Invariant: events hold strings, paths and finite-or-null numbers.
            let line = serde_json::to_string(&event).expect("events serialise to JSON");
            self.line(&line);
            return;
        }
        match event {
            Event::EpochStarted { epoch, epochs, batches } => {
                self.started = Instant::now();
                if self.tty {
                    self.new_bar(
                        batches,
                        "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}",
                        format!("{epoch}/{epochs}"),
                    );
                }
            }
            Event::Batch {
                batch,
                loss,
                accuracy,
                samples,
                ..
            } => {
                if let Some(bar) = &self.bar {
                    let speed = rate(samples, self.started.elapsed().as_secs_f64());
                    bar.set_message(format!("loss {loss:.4} acc {accuracy:.4} {speed:.1} img/s"));
                    bar.set_position(batch as u64);
                }
            }
            Event::EpochEnded(row) => {
                self.clear_bar();
                self.line(&epoch_line(&row));
            }
            Event::Progress { task, done, total } => self.progress(&task, done, total),
            other => {
                let line = text_line(&other);
                self.line(&line);
            }
        }
    }

    /// Text-mode progress: a bar on a terminal, otherwise only a start and an end line.
    fn progress(&mut self, task: &str, done: usize, total: usize) {
        if done == 0 {
            self.started = Instant::now();
            if self.tty {
                self.new_bar(
                    total,
                    "{prefix} [{bar:30}] {pos}/{len} images {msg} ETA {eta}",
                    task.to_string(),
                );
            } else {
                self.line(&format!("{task}: {total} images"));
            }
        }
        let secs = self.started.elapsed().as_secs_f64();
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{:.1} img/s", rate(done, secs)));
            bar.set_position(done as u64);
        }
        if done >= total {
            self.clear_bar();
            self.line(&format!(
                "{task}: {total} images in {secs:.1} s ({:.1} img/s)",
                rate(total, secs)
            ));
        }
    }

    fn line(&mut self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => {
                // A closed stdout (e.g. `| head`) must not abort the run.
                let _ = writeln!(self.out, "{line}");
                let _ = self.out.flush();
            }
        }
    }
}

/// How a score is written for people (`mIoU`, `mAP`).
pub fn score_label(name: &str) -> &str {
    match name {
        "miou" => "mIoU",
        "map" => "mAP",
        other => other,
    }
}

/// `epoch 3: train loss 0.4120 acc 0.8200 | val loss 0.3010 acc 0.9100 | lr 1.0e-3 | 12.3s`; dense tasks add their
/// score (`mIoU 0.4990`, `mAP 0.3100` with `AP50`) after the validation accuracy (pixel accuracy, AP50).
pub fn epoch_line(r: &EpochRow) -> String {
    let mut val = match (r.val_loss, r.val_acc) {
        (Some(l), Some(a)) => format!(" | val loss {l:.4} acc {a:.4}"),
        _ => String::new(),
    };
    if r.score.is_some() {
        for name in ["miou", "map", "map50"] {
            if let Some(v) = r.metrics.get(name) {
                val.push_str(&format!(
                    " {} {v:.4}",
                    if name == "map50" { "AP50" } else { score_label(name) }
                ));
            }
        }
    }
    format!(
        "epoch {}: train loss {:.4} acc {:.4}{val} | lr {:.1e} | {:.1}s",
        r.epoch, r.train_loss, r.train_acc, r.lr, r.seconds
    )
}

fn text_line(e: &Event) -> String {
    match e {
        Event::RunStarted { run_dir, model, epochs } => {
            format!("run folder {} ({model}, {epochs} epochs)", run_dir.display())
        }
        Event::Artifact { path } => format!("wrote {}", path.display()),
        Event::Info { message } => message.clone(),
        Event::Finished {
            run_dir,
            val_accuracy,
            best_score,
        } => {
            let acc = match best_score {
                Some((name, v)) => format!(", best val {} {v:.4}", score_label(name)),
                None => val_accuracy
                    .map(|a| format!(", best val accuracy {a:.4}"))
                    .unwrap_or_default(),
            };
            match run_dir {
                Some(d) => format!("done: results in {}{acc}", d.display()),
                None => format!("done{acc}"),
            }
        }
        Event::EpochStarted { .. } | Event::Batch { .. } => String::new(),
        Event::Progress { task, done, total } => format!("{task}: {done}/{total} images"),
        Event::EpochEnded(r) => epoch_line(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn run(format: LogFormat, quiet: bool) -> String {
        let sink = Sink::default();
        let mut r = Reporter::to_writer(format, quiet, Box::new(sink.clone()));
        r.emit(Event::RunStarted {
            run_dir: "runs/train2".into(),
            model: "resnet18".into(),
            epochs: 2,
        });
        r.emit(Event::EpochStarted {
            epoch: 1,
            epochs: 2,
            batches: 3,
        });
        r.emit(Event::Progress {
            task: "extracting features (train)".into(),
            done: 0,
            total: 40,
        });
        for done in [16, 32, 40] {
            r.emit(Event::Progress {
                task: "extracting features (train)".into(),
                done,
                total: 40,
            });
        }
        for batch in 1..=3 {
            r.emit(Event::Batch {
                epoch: 1,
                batch,
                batches: 3,
                loss: 0.5,
                accuracy: 0.75,
                samples: 8 * batch,
            });
        }
        let row = crate::summary::tests::history(1, true).remove(0);
        r.emit(Event::EpochEnded(row));
        r.emit(Event::Finished {
            best_score: None,
            run_dir: Some("runs/train2".into()),
            val_accuracy: Some(0.5),
        });
        let bytes = sink.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn json_prints_one_tagged_object_per_event() {
        let out = run(LogFormat::Json, false);
        let v: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let kinds: Vec<&str> = v.iter().map(|e| e["event"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "run_started",
                "epoch_started",
                "progress",
                "progress",
                "progress",
                "progress",
                "batch",
                "batch",
                "batch",
                "epoch_ended",
                "finished"
            ]
        );
        assert_eq!((v[3]["done"].as_u64(), v[3]["total"].as_u64()), (Some(16), Some(40)));
        assert_eq!(v[3]["task"], "extracting features (train)");
        assert_eq!((v[8]["batch"].as_u64(), v[8]["samples"].as_u64()), (Some(3), Some(24)));
        assert_eq!(v[8]["accuracy"], 0.75);
        assert_eq!(v[9]["val_acc"], 0.5);
        assert_eq!(v[0]["run_dir"], "runs/train2");
    }

    #[test]
    fn text_prints_plain_lines_without_bars_and_quiet_prints_nothing() {
        let out = run(LogFormat::Text, false);
        let lines: Vec<&str> = out.lines().collect();
        // No per-batch or per-update lines: a start and an end line for the extraction, one line per epoch.
        assert_eq!(lines.len(), 5, "{out}");
        assert!(lines[0].contains("runs/train2"));
        assert_eq!(lines[1], "extracting features (train): 40 images");
        assert!(
            lines[2].starts_with("extracting features (train): 40 images in ") && lines[2].ends_with("img/s)"),
            "{out}"
        );
        assert!(lines[3].starts_with("epoch 1: train loss 1.0000") && lines[3].contains("val loss"));
        assert!(lines[4].contains("best val accuracy 0.5000"));
        assert!(!out.contains("loss 0.5000") && !out.contains("16/40"), "{out}");
        assert_eq!(run(LogFormat::Json, true), "");
        assert_eq!(run(LogFormat::Text, true), "");
    }

    use indicatif::{InMemoryTerm, ProgressDrawTarget};

    fn term_reporter(term: &InMemoryTerm, sink: &Sink) -> Reporter {
        let t = term.clone();
        Reporter::with_draw_target(LogFormat::Text, false, Box::new(sink.clone()), move || {
            ProgressDrawTarget::term_like(Box::new(t.clone()))
        })
    }

    #[test]
    fn terminal_shows_an_epoch_bar_with_loss_accuracy_speed_and_eta() {
        let term = InMemoryTerm::new(10, 120);
        let sink = Sink::default();
        let mut r = term_reporter(&term, &sink);
        r.emit(Event::EpochStarted {
            epoch: 2,
            epochs: 5,
            batches: 4,
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        r.emit(Event::Batch {
            epoch: 2,
            batch: 3,
            batches: 4,
            loss: 0.4123,
            accuracy: 0.8125,
            samples: 48,
        });
        let screen = term.contents();
        assert!(screen.contains("epoch 2/5 ["), "{screen}");
        assert!(screen.contains("3/4 loss 0.4123 acc 0.8125 "), "{screen}");
        let speed: f64 = screen
            .split_whitespace()
            .take_while(|w| *w != "img/s")
            .last()
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no images/s figure: {screen}"));
        assert!(speed > 0.0 && speed <= 48.0 / 0.02, "{screen}");
        assert!(screen.contains("ETA "), "{screen}");
        let row = crate::summary::tests::history(2, true).remove(1);
        r.emit(Event::EpochEnded(row));
        let screen = term.contents();
        assert!(!screen.contains("img/s"), "the bar is cleared: {screen}");
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(
            out.starts_with("epoch 2: train loss") && out.lines().count() == 1,
            "{out}"
        );
    }

    #[test]
    fn terminal_shows_a_feature_extraction_bar_then_a_summary_line() {
        let term = InMemoryTerm::new(10, 120);
        let sink = Sink::default();
        let mut r = term_reporter(&term, &sink);
        let task = "extracting features (train)".to_string();
        r.emit(Event::Progress {
            task: task.clone(),
            done: 0,
            total: 398,
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        r.emit(Event::Progress {
            task: task.clone(),
            done: 160,
            total: 398,
        });
        let screen = term.contents();
        assert!(screen.contains("extracting features (train) ["), "{screen}");
        assert!(
            screen.contains("] 160/398 images ") && screen.contains(" img/s ETA "),
            "{screen}"
        );
        r.emit(Event::Info {
            message: "a note while the bar is up".into(),
        });
        assert!(term.contents().contains("a note while the bar is up"));
        r.emit(Event::Progress {
            task,
            done: 398,
            total: 398,
        });
        let screen = term.contents();
        assert!(!screen.contains("160/398"), "the bar is cleared: {screen}");
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(
            out.starts_with("extracting features (train): 398 images in ") && out.lines().count() == 1,
            "one summary line once the bar is gone: {out}"
        );
    }

    #[test]
    fn dense_epochs_and_the_finish_line_show_the_score() {
        let mut row = crate::summary::tests::history(1, true).remove(0);
        row.score = Some(0.5);
        row.metrics = [("miou".to_string(), 0.5), ("iou/ant".to_string(), 0.25)].into();
        assert!(
            epoch_line(&row).contains("acc 0.5000 mIoU 0.5000 |"),
            "{}",
            epoch_line(&row)
        );
        let done = text_line(&Event::Finished {
            run_dir: None,
            val_accuracy: Some(0.9),
            best_score: Some(("map".into(), 0.3125)),
        });
        assert_eq!(done, "done, best val mAP 0.3125");
    }
}
