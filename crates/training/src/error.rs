//! Errors of the training crate.

use std::path::PathBuf;

/// Everything that can go wrong while training.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The loss became NaN or infinite.
    #[error("loss is {loss} at epoch {epoch}, step {step}: training diverged (lower the learning rate)")]
    NonFinite {
        /// Epoch (0-based).
        epoch: usize,
        /// Step within the epoch (0-based).
        step: usize,
        /// The offending value.
        loss: f32,
    },
    /// An invalid setting.
    #[error("{0}")]
    Config(String),
    /// A file could not be read or written, or its content is invalid.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A backbone error.
    #[error(transparent)]
    Backbone(#[from] backbones::Error),
    /// A head error.
    #[error(transparent)]
    Head(#[from] heads::Error),
    /// A data error (e.g. a file that could not be written).
    #[error(transparent)]
    Data(#[from] data::DataError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// An I/O error for `path`.
    pub fn io(path: &std::path::Path, reason: impl std::fmt::Display) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
