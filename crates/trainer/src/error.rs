//! Error kinds that decide the exit code.

/// A mistake in the command line or a config file (exit code 2); the message is one line naming the flag or file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit code for an error: 2 for usage mistakes anywhere in the chain, 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err
        .chain()
        .any(|e| e.downcast_ref::<UsageError>().is_some())
    {
        2
    } else {
        1
    }
}
