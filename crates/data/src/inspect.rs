//! `inspect`: a dataset health report (classes, counts, imbalance, every unreadable file).

use std::fmt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::dataset::{Dataset, Ignored};
use crate::decode::{decode_image, SkippedFile};
use crate::error::{DataError, Result};
use crate::folder::scan_folder_keeping_empty_classes;
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
/// A class folder without image files is reported (a class with no file, see [`InspectReport::problems`]), not an
/// error, so the report lists every problem at once. Errors only when the dataset cannot be listed at all (missing
/// path, no class folder, malformed CSV).
pub fn inspect(path: &Path) -> Result<InspectReport> {
    let dataset = if path.is_dir() {
        scan_folder_keeping_empty_classes(path)?
    } else {
        open(path)?
    };
    Ok(inspect_dataset(&dataset))
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

    /// Classes with no image file at all (an empty class folder).
    pub fn empty_classes(&self) -> Vec<&str> {
        self.classes
            .iter()
            .zip(&self.counts)
            .filter(|(_, &n)| n == 0)
            .map(|(c, _)| c.as_str())
            .collect()
    }

    /// What makes the dataset unusable for training, one line each: too few classes, an empty class folder, a class
    /// whose files are all unreadable. Empty when [`Self::is_usable`].
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.classes.len() < 2 {
            out.push(format!(
                "training needs at least 2 classes, found {}",
                self.classes.len()
            ));
        }
        for ((class, &n), &ok) in self.classes.iter().zip(&self.counts).zip(&self.readable) {
            if n == 0 {
                out.push(format!("class `{class}` has no image file"));
            } else if ok == 0 {
                out.push(format!("class `{class}` has no readable image (all {n} unreadable)"));
            }
        }
        out
    }
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "dataset: {}", self.source.display())?;
        writeln!(f, "classes: {}", self.classes.len())?;
        let width = self.classes.iter().map(|c| c.chars().count()).max().unwrap_or(0);
        for ((class, n), ok) in self.classes.iter().zip(&self.counts).zip(&self.readable) {
            let bad = n - ok;
            let note = if *n == 0 {
                " (empty: no image file)".to_string()
            } else if bad > 0 {
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
        let problems = self.problems();
        if problems.is_empty() {
            write!(f, "usable: yes")
        } else {
            write!(f, "usable: no ({})", problems.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::tests::fixtures::{problem_dataset, BAD_FILES, GOOD_FILES};

    #[test]
    fn a_problem_folder_is_reported_in_full() {
        let dir = tempfile::tempdir().unwrap();
        problem_dataset(dir.path()).unwrap();
        // An empty class folder does not stop the report (opening it for training does).
        assert!(matches!(open(dir.path()), Err(DataError::EmptyClass { .. })));
        let report = inspect(dir.path()).unwrap();
        assert_eq!(report.classes, ["bad", "empty_class", "good"]);
        assert_eq!(report.counts, [BAD_FILES.len(), 0, GOOD_FILES.len()]);
        assert_eq!(report.readable, [0, 0, GOOD_FILES.len()], "{:?}", report.unreadable);
        let mut unreadable: Vec<String> = report
            .unreadable
            .iter()
            .map(|s| s.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        unreadable.sort();
        let mut expected = BAD_FILES.map(String::from).to_vec();
        expected.sort();
        assert_eq!(unreadable, expected);
        assert!(report
            .unreadable
            .iter()
            .all(|s| !s.reason.is_empty() && !s.reason.contains('\n')));
        assert_eq!(report.empty_classes(), ["empty_class"]);
        assert!(!report.is_usable() && report.imbalance_ratio().is_none());
        assert_eq!(
            report.problems(),
            [
                "class `bad` has no readable image (all 4 unreadable)",
                "class `empty_class` has no image file"
            ]
        );
        let text = report.to_string();
        for name in BAD_FILES {
            assert!(
                text.lines().any(|l| l.contains(name) && l.contains(": ")),
                "{name}:\n{text}"
            );
        }
        assert!(text.contains("empty_class  0 (empty: no image file)"), "{text}");
        assert!(text.contains("images: 9 (5 readable)"), "{text}");
        assert!(text.ends_with("usable: no (class `bad` has no readable image (all 4 unreadable); class `empty_class` has no image file)"), "{text}");
    }

    #[test]
    fn a_healthy_folder_has_no_problems() {
        let dir = tempfile::tempdir().unwrap();
        problem_dataset(dir.path()).unwrap();
        std::fs::remove_dir_all(dir.path().join("bad")).unwrap();
        std::fs::remove_dir(dir.path().join("empty_class")).unwrap();
        std::fs::create_dir(dir.path().join("more")).unwrap();
        std::fs::copy(
            dir.path().join("good").join(GOOD_FILES[2]),
            dir.path().join("more/copy.png"),
        )
        .unwrap();
        let report = inspect(dir.path()).unwrap();
        assert!(report.is_usable() && report.problems().is_empty(), "{report}");
        assert!(report.to_string().ends_with("usable: yes"));
    }
}
