//! The error type of the data crate: every message is one line naming the file, line or option at fault.

use std::path::PathBuf;

/// Everything that can go wrong while reading, decoding or loading a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file could not be written (see [`crate::fsutil`]).
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        /// The destination file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The dataset path does not exist.
    #[error("dataset path {} does not exist", .0.display())]
    NotFound(PathBuf),
    /// The dataset path is neither a folder nor a `.csv` file.
    #[error("dataset path {} is neither a folder nor a .csv file", .0.display())]
    UnsupportedSource(PathBuf),
    /// An ImageFolder root holds no class folder.
    #[error("no class folders in {} (expected root/<class>/<image>)", .0.display())]
    NoClasses(PathBuf),
    /// A class folder holds no valid image file (torchvision's "found no valid file for class").
    #[error("found no valid image file for class `{class}` in {}", .path.display())]
    EmptyClass {
        /// The class name.
        class: String,
        /// The class folder.
        path: PathBuf,
    },
    /// Training needs at least two classes.
    #[error("{}: training needs at least 2 classes, found {found}", .path.display())]
    TooFewClasses {
        /// The dataset's source.
        path: PathBuf,
        /// How many classes it has.
        found: usize,
    },
    /// A CSV file is malformed (bad header, bad row, no rows).
    #[error("{}{}: {message}", .csv.display(), line_suffix(.line))]
    Csv {
        /// The CSV file.
        csv: PathBuf,
        /// The 1-based line, when known.
        line: Option<u64>,
        /// What is wrong.
        message: String,
    },
    /// A CSV path is absolute or has a `..` component.
    #[error("{} line {line}: path `{entry}` escapes the CSV's folder (absolute paths and `..` are not allowed)", .csv.display())]
    PathEscapes {
        /// The CSV file.
        csv: PathBuf,
        /// The 1-based line.
        line: u64,
        /// The path as written.
        entry: String,
    },
    /// A CSV row names a file that does not exist.
    #[error("{} line {line}: file {} does not exist", .csv.display(), .file.display())]
    MissingFile {
        /// The CSV file.
        csv: PathBuf,
        /// The 1-based line.
        line: u64,
        /// The resolved file path.
        file: PathBuf,
    },
    /// A validation label is not one of the training classes.
    #[error("validation label `{label}` ({}) is not a training class (set drop_unknown_val_classes to drop such samples)", .path.display())]
    UnknownClass {
        /// The label.
        label: String,
        /// The first file carrying it.
        path: PathBuf,
    },
    /// A file could not be decoded as an image.
    #[error("cannot decode {}: {reason}", .path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An option has an invalid value.
    #[error("invalid {name}: {message}")]
    InvalidOption {
        /// The option's name.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The transform pipeline produced a tensor of the wrong size.
    #[error("pipeline produced {got} values for {}, expected {expected} (3×H×W of output_hw)", .path.display())]
    PipelineOutput {
        /// The file.
        path: PathBuf,
        /// Values produced.
        got: usize,
        /// Values expected.
        expected: usize,
    },
    /// A mask, label file or annotation file is invalid; the message says what, `line` where.
    #[error("{}{}: {message}", .path.display(), line_suffix(.line))]
    Annotation {
        /// The mask, label or annotation file.
        path: PathBuf,
        /// The 1-based line, when the file is text.
        line: Option<u64>,
        /// What is wrong.
        message: String,
    },
    /// A dataset has no usable sample.
    #[error("{}: {message}", .path.display())]
    Empty {
        /// The dataset's source.
        path: PathBuf,
        /// What was looked for.
        message: String,
    },
    /// A transform step could not process a sample (e.g. a step without a joint path given masks or boxes).
    #[error("cannot transform {}: {message}", .path.display())]
    Transform {
        /// The image file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Building a tensor failed.
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
}

fn line_suffix(line: &Option<u64>) -> String {
    line.map(|l| format!(" line {l}")).unwrap_or_default()
}

/// The data crate's result type.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
