//! Errors of the heads crate.

use std::path::PathBuf;

/// Everything that can go wrong building, running, saving or loading a head.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An invalid head configuration.
    #[error("invalid head config: {0}")]
    Config(String),
    /// Input of the wrong shape.
    #[error("head input has shape {got:?}, expected {expected}")]
    InputShape {
        /// Shape received.
        got: Vec<usize>,
        /// What was expected, in words.
        expected: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A layer or parameter store of the backbones crate failed.
    #[error(transparent)]
    Backbone(#[from] backbones::Error),
    /// A file could not be written.
    #[error(transparent)]
    Data(#[from] data::DataError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
