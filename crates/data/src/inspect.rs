//! `inspect`: a dataset health report (classes, counts, imbalance, every unreadable file).

use std::fmt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::dataset::{Dataset, Ignored};
use crate::decode::{decode_image, SkippedFile};
use crate::error::{DataError, Result};
use crate::open::open;

/// What [`inspect`] found in a folder or CSV dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct InspectReport {
    /// The folder or CSV file.
    pub source: PathBuf,
    /// Class names, sorted.
    pub classes: Vec<String>,
    /// Files listed per class (readable or not), indexed like `classes`.
    pub counts: Vec<usize>,
    /// Readable files per class, indexed like `classes`.
    pub readable: Vec<usize>,
    /// Every file that could not be decoded, with the reason, in dataset order.
    pub unreadable: Vec<SkippedFile>,
    /// Entries the folder scan ignored.
    pub ignored: Ignored,
}

/// Opens `path` (folder or `.csv`) and tries to decode every file, in parallel.
///
/// Errors only when the dataset cannot be listed at all (missing path, empty class folder, malformed CSV).
pub fn inspect(path: &Path) -> Result<InspectReport> {
    Ok(inspect_dataset(&open(path)?))
}

/// Like [`inspect`], for a dataset already opened.
pub fn inspect_dataset(dataset: &Dataset) -> InspectReport {
    let results: Vec<Option<SkippedFile>> = dataset
        .samples
        .par_iter()
        .map(|s| match decode_image(&s.path) {
            Ok(_) => None,
            Err(DataError::Decode { path, reason }) => Some(SkippedFile { path, reason }),
            Err(other) => Some(SkippedFile {
                path: s.path.clone(),
                reason: other.to_string(),
            }),
        })
        .collect();
    let counts = dataset.class_counts();
    let mut readable = counts.clone();
    let mut unreadable = Vec::new();
    for (s, r) in dataset.samples.iter().zip(results) {
        if let Some(r) = r {
            readable[s.label] -= 1;
            unreadable.push(r);
        }
    }
    InspectReport {
        source: dataset.source.clone(),
        classes: dataset.classes.clone(),
        counts,
        readable,
        unreadable,
        ignored: dataset.ignored,
    }
}

impl InspectReport {
    /// Files listed, readable or not.
    pub fn total(&self) -> usize {
        self.counts.iter().sum()
    }

    /// Largest over smallest readable count per class (`None` when a class has no readable file).
    pub fn imbalance_ratio(&self) -> Option<f64> {
        let max = *self.readable.iter().max()?;
        let min = *self.readable.iter().min()?;
        (min > 0).then(|| max as f64 / min as f64)
    }

    /// Usable for training: at least 2 classes, each with at least one readable file.
    pub fn is_usable(&self) -> bool {
        self.classes.len() >= 2 && self.readable.iter().all(|&n| n > 0)
    }

    /// Whether any file could not be decoded (what `--strict` rejects).
    pub fn has_unreadable(&self) -> bool {
        !self.unreadable.is_empty()
    }
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "dataset: {}", self.source.display())?;
        writeln!(f, "classes: {}", self.classes.len())?;
        let width = self.classes.iter().map(|c| c.chars().count()).max().unwrap_or(0);
        for ((class, n), ok) in self.classes.iter().zip(&self.counts).zip(&self.readable) {
            let bad = n - ok;
            let note = if bad > 0 {
                format!(" ({bad} unreadable)")
            } else {
                String::new()
            };
            writeln!(f, "  {class:<width$}  {n}{note}")?;
        }
        let ratio = self
            .imbalance_ratio()
            .map(|r| format!("{r:.2}"))
            .unwrap_or_else(|| "n/a".into());
        writeln!(
            f,
            "images: {} ({} readable), imbalance ratio (max/min): {ratio}",
            self.total(),
            self.total() - self.unreadable.len()
        )?;
        if self.ignored.total() > 0 {
            writeln!(f, "ignored: {}", self.ignored)?;
        }
        writeln!(f, "unreadable: {}", self.unreadable.len())?;
        for s in &self.unreadable {
            writeln!(f, "  {}: {}", s.path.display(), s.reason)?;
        }
        let verdict = if self.is_usable() {
            "yes"
        } else if self.classes.len() < 2 {
            "no (training needs at least 2 classes)"
        } else {
            "no (a class has no readable image)"
        };
        write!(f, "usable: {verdict}")
    }
}
