//! CSV datasets: one row per image, `filename,label` columns by default, paths relative to the CSV's folder.
//!
//! Outcomes: a path that is absolute or has a `..` component is rejected ([`DataError::PathEscapes`]); a row whose
//! file does not exist is an error naming the file and the CSV line ([`DataError::MissingFile`]), never skipped, so
//! a typo cannot silently shrink a dataset. Classes are the distinct labels sorted by name.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use crate::dataset::{Dataset, Ignored, Sample};
use crate::error::{DataError, Result};

/// Which CSV columns hold the file path and the label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// Header name of the path column (default `filename`).
    pub path_column: String,
    /// Header name of the label column (default `label`).
    pub label_column: String,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            path_column: "filename".into(),
            label_column: "label".into(),
        }
    }
}

pub(crate) fn escapes(entry: &str) -> bool {
    let p = Path::new(entry);
    // A Windows-style drive or backslash-rooted path is treated as absolute too.
    entry.starts_with('/')
        || entry.starts_with('\\')
        || entry.contains(":\\")
        || entry.contains(":/")
        || p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        || entry.split(['/', '\\']).any(|part| part == "..")
}

/// Reads a CSV dataset file.
pub fn read_csv(csv_path: &Path, options: &CsvOptions) -> Result<Dataset> {
    if !csv_path.exists() {
        return Err(DataError::NotFound(csv_path.to_path_buf()));
    }
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
        headers.iter().position(|h| h == name).ok_or_else(|| {
            csv_err(
                Some(1),
                format!(
                    "no `{name}` column in the header (columns: {})",
                    headers.iter().collect::<Vec<_>>().join(",")
                ),
            )
        })
    };
    let (path_col, label_col) = (column(&options.path_column)?, column(&options.label_column)?);
    let base = csv_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut rows: Vec<(PathBuf, String)> = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_err(e.position().map(|p| p.line()), e.to_string()))?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let entry = record.get(path_col).unwrap_or("");
        let label = record.get(label_col).unwrap_or("");
        if entry.is_empty() || label.is_empty() {
            return Err(csv_err(Some(line), "empty file name or label".into()));
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
        rows.push((file, label.to_string()));
    }
    if rows.is_empty() {
        return Err(csv_err(None, "no data rows".into()));
    }
    let classes: Vec<String> = rows
        .iter()
        .map(|(_, l)| l.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let samples = rows
        .into_iter()
        .map(|(path, label)| {
            let label = classes.binary_search(&label).expect("label comes from the class set");
            Sample { path, label }
        })
        .collect();
    Ok(Dataset {
        samples,
        classes,
        source: csv_path.to_path_buf(),
        ignored: Ignored::default(),
    })
}
