//! Opening a dataset from either an ImageFolder root or a `.csv` file.

use std::path::Path;

use crate::csv::{read_csv, CsvOptions};
use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::folder::scan_folder;

/// Opens a folder (ImageFolder layout) or a `.csv` file (default columns `filename,label`).
pub fn open(path: &Path) -> Result<Dataset> {
    open_with(path, &CsvOptions::default())
}

/// Like [`open`], with the CSV column names given.
pub fn open_with(path: &Path, csv: &CsvOptions) -> Result<Dataset> {
    if !path.exists() {
        return Err(DataError::NotFound(path.to_path_buf()));
    }
    if path.is_dir() {
        return scan_folder(path);
    }
    let is_csv = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if is_csv {
        read_csv(path, csv)
    } else {
        Err(DataError::UnsupportedSource(path.to_path_buf()))
    }
}
