//! Multi-label classification datasets: each image has a set of classes (possibly none).
//!
//! [`MultiLabelDataset::from_csv`] reads a CSV whose label column holds the classes separated by a delimiter
//! (fastai's `label_delim`, e.g. `street;car;person`); an empty cell is an image of no class. Paths follow the
//! rules of [`crate::csv`] (relative to the CSV; absolute/`..` paths and missing files are errors naming the line).
//! Classes are the distinct labels sorted by name. Batches carry [`crate::Targets::ClassSets`] (`N×C` multi-hot).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::csv::{escapes, CsvOptions};
use crate::error::{DataError, Result};
use crate::loader::SampleSource;
use crate::target::TargetKind;

/// One image and its classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiLabelSample {
    /// The image file.
    pub path: PathBuf,
    /// Indices into the dataset's classes, sorted, without repeats.
    pub labels: Vec<usize>,
}

/// A multi-label dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiLabelDataset {
    /// The samples in file order.
    pub samples: Vec<MultiLabelSample>,
    /// Class names, sorted.
    pub classes: Vec<String>,
    /// The CSV file.
    pub source: PathBuf,
}

impl MultiLabelDataset {
    /// Reads a CSV with `options`' columns, labels separated by `delimiter`.
    pub fn from_csv(csv_path: &Path, options: &CsvOptions, delimiter: char) -> Result<Self> {
        let csv_err = |line: Option<u64>, message: String| DataError::Csv {
            csv: csv_path.to_path_buf(),
            line,
            message,
        };
        let mut reader = ::csv::ReaderBuilder::new()
            .trim(::csv::Trim::All)
            .from_path(csv_path)
            .map_err(|e| csv_err(None, e.to_string()))?;
        let headers = reader.headers().map_err(|e| csv_err(Some(1), e.to_string()))?.clone();
        let column = |name: &str| {
            headers
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| csv_err(Some(1), format!("no `{name}` column in the header")))
        };
        let (path_col, label_col) = (column(&options.path_column)?, column(&options.label_column)?);
        let base = csv_path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut rows: Vec<(PathBuf, Vec<String>)> = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| csv_err(e.position().map(|p| p.line()), e.to_string()))?;
            let line = record.position().map(|p| p.line()).unwrap_or(0);
            let entry = record.get(path_col).unwrap_or("");
            if entry.is_empty() {
                return Err(csv_err(Some(line), "empty file name".into()));
            }
            if escapes(entry) {
                return Err(DataError::PathEscapes {
                    csv: csv_path.to_path_buf(),
                    line,
                    entry: entry.to_string(),
                });
            }
            let file = base.join(entry);
            if !file.is_file() {
                return Err(DataError::MissingFile {
                    csv: csv_path.to_path_buf(),
                    line,
                    file,
                });
            }
            let labels = record
                .get(label_col)
                .unwrap_or("")
                .split(delimiter)
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            rows.push((file, labels));
        }
        if rows.is_empty() {
            return Err(csv_err(None, "no data rows".into()));
        }
        let classes: Vec<String> = rows
            .iter()
            .flat_map(|(_, l)| l.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let samples = rows
            .into_iter()
            .map(|(path, labels)| {
                let set: BTreeSet<usize> = labels
                    .iter()
                    .map(|l| classes.binary_search(l).expect("label comes from the class set"))
                    .collect();
                MultiLabelSample {
                    path,
                    labels: set.into_iter().collect(),
                }
            })
            .collect();
        Ok(Self {
            samples,
            classes,
            source: csv_path.to_path_buf(),
        })
    }
}

impl SampleSource for MultiLabelDataset {
    fn num_samples(&self) -> usize {
        self.samples.len()
    }
    fn image_path(&self, index: usize) -> &Path {
        &self.samples[index].path
    }
    fn target_kind(&self) -> TargetKind {
        TargetKind::ClassSets {
            num_classes: self.classes.len(),
        }
    }
    fn class_ids(&self, index: usize) -> Vec<u32> {
        self.samples[index].labels.iter().map(|&l| l as u32).collect()
    }
}
