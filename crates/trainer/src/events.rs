//! Progress output: bars on a terminal, plain lines otherwise, one JSON object per line with `--log-format json`,
//! nothing with `--quiet`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
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
        /// Loss of this batch.
        loss: f64,
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
    },
}

/// Prints events in the chosen style.
pub struct Reporter {
    format: LogFormat,
    quiet: bool,
    tty: bool,
    bar: Option<ProgressBar>,
    out: Box<dyn Write + Send>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("format", &self.format)
            .field("quiet", &self.quiet)
            .finish()
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
            Event::EpochStarted {
                epoch,
                epochs,
                batches,
            } if self.tty => {
                let bar = ProgressBar::new(batches as u64);
                bar.set_style(
                    ProgressStyle::with_template(
                        "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(format!("{epoch}/{epochs}"));
                self.bar = Some(bar);
            }
            Event::EpochStarted { .. } => {}
            Event::Batch { batch, loss, .. } => {
                if let Some(bar) = &self.bar {
                    bar.set_position(batch as u64);
                    bar.set_message(format!("loss {loss:.4}"));
                }
            }
            Event::EpochEnded(row) => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                self.line(&epoch_line(&row));
            }
            other => {
                let line = text_line(&other);
                self.line(&line);
            }
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

/// `epoch 3: train loss 0.4120 acc 0.8200 | val loss 0.3010 acc 0.9100 | lr 1.0e-3 | 12.3s`.
pub fn epoch_line(r: &EpochRow) -> String {
    let val = match (r.val_loss, r.val_acc) {
        (Some(l), Some(a)) => format!(" | val loss {l:.4} acc {a:.4}"),
        _ => String::new(),
    };
    format!(
        "epoch {}: train loss {:.4} acc {:.4}{val} | lr {:.1e} | {:.1}s",
        r.epoch, r.train_loss, r.train_acc, r.lr, r.seconds
    )
}

fn text_line(e: &Event) -> String {
    match e {
        Event::RunStarted {
            run_dir,
            model,
            epochs,
        } => {
            format!(
                "run folder {} ({model}, {epochs} epochs)",
                run_dir.display()
            )
        }
        Event::Artifact { path } => format!("wrote {}", path.display()),
        Event::Info { message } => message.clone(),
        Event::Finished {
            run_dir,
            val_accuracy,
        } => {
            let acc = val_accuracy
                .map(|a| format!(", best val accuracy {a:.4}"))
                .unwrap_or_default();
            match run_dir {
                Some(d) => format!("done: results in {}{acc}", d.display()),
                None => format!("done{acc}"),
            }
        }
        Event::EpochStarted { .. } | Event::Batch { .. } => String::new(),
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
        r.emit(Event::Batch {
            epoch: 1,
            batch: 1,
            batches: 3,
            loss: 0.5,
        });
        let row = crate::summary::tests::history(1, true).remove(0);
        r.emit(Event::EpochEnded(row));
        r.emit(Event::Finished {
            run_dir: Some("runs/train2".into()),
            val_accuracy: Some(0.5),
        });
        let bytes = sink.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn json_prints_one_tagged_object_per_event() {
        let out = run(LogFormat::Json, false);
        let v: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let kinds: Vec<&str> = v.iter().map(|e| e["event"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "run_started",
                "epoch_started",
                "batch",
                "epoch_ended",
                "finished"
            ]
        );
        assert_eq!(v[3]["val_acc"], 0.5);
        assert_eq!(v[0]["run_dir"], "runs/train2");
    }

    #[test]
    fn text_prints_plain_lines_without_bars_and_quiet_prints_nothing() {
        let out = run(LogFormat::Text, false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].contains("runs/train2"));
        assert!(
            lines[1].starts_with("epoch 1: train loss 1.0000") && lines[1].contains("val loss")
        );
        assert!(lines[2].contains("best val accuracy 0.5000"));
        assert_eq!(run(LogFormat::Json, true), "");
        assert_eq!(run(LogFormat::Text, true), "");
    }
}
