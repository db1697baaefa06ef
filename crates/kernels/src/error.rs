//! Errors of the kernels crate.

/// Everything that can go wrong setting up or running a kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A window (kernel, stride, padding) that does not fit its input.
    #[error("{op}: {reason}")]
    Window {
        /// The operation that checked the window.
        op: &'static str,
        /// Why it does not fit.
        reason: String,
    },
    /// A layer the inference plan cannot run (the general path must be used).
    #[error("inference plan: {0}")]
    Unsupported(String),
    /// Shapes or values that do not match what a kernel expects.
    #[error("{0}")]
    Msg(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(e) => e,
            other => candle_core::Error::Msg(other.to_string()),
        }
    }
}
