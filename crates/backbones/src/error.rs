//! Errors of the backbones crate.

use std::path::PathBuf;

/// Everything that can go wrong building or loading a backbone.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor the model needs is not in the checkpoint.
    #[error("tensor `{0}` is missing from the checkpoint")]
    MissingTensor(String),
    /// A checkpoint tensor that the model does not have.
    #[error("tensor `{0}` in the checkpoint is not part of the model")]
    UnexpectedTensor(String),
    /// A checkpoint tensor of the wrong shape.
    #[error("tensor `{name}` has shape {got:?}, the model expects {expected:?}")]
    ShapeMismatch {
        /// Tensor name.
        name: String,
        /// Shape the model expects.
        expected: Vec<usize>,
        /// Shape found.
        got: Vec<usize>,
    },
    /// A weights file could not be read.
    #[error("cannot read weights {path}: {reason}")]
    Weights {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An unknown model name.
    #[error("unknown model `{name}`{}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The nearest registered name.
        suggestion: Option<String>,
    },
    /// An unknown stage name or an out-of-range stage count.
    #[error("{0}")]
    Stage(String),
    /// Anything else, with its message.
    #[error("{0}")]
    Msg(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl From<kernels::Error> for Error {
    fn from(e: kernels::Error) -> Self {
        match e {
            kernels::Error::Candle(e) => Error::Candle(e),
            other => Error::Msg(other.to_string()),
        }
    }
}

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
