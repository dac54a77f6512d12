//! The CLI's errors and the exit status of each: 1 the operation failed, 2 bad usage,
//! 3 a compare-and-swap was lost to a concurrent writer (re-run the command).
//!
//! Every error prints as one lowercase line; the exit status is chosen here and only here.

use shardline_control::{OpError, StoreError};

/// Exit status of a successful command.
pub const EXIT_OK: i32 = 0;
/// Exit status when the operation failed (etcd unreachable, refused, not found...).
pub const EXIT_FAILED: i32 = 1;
/// Exit status for bad flags or arguments (clap's own status for usage errors).
pub const EXIT_USAGE: i32 = 2;
/// Exit status when a concurrent writer won a compare-and-swap: re-run the command.
pub const EXIT_CONFLICT: i32 = 3;

/// Why a `shardctl` command did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// Arguments that cannot work together or are out of range.
    #[error("{0}")]
    Usage(String),
    /// The operation failed; nothing or only what the message says was changed.
    #[error("{0}")]
    Failed(String),
    /// Someone else changed what this command read; the message says to re-run.
    #[error("{0}")]
    Conflict(String),
}

impl CliError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Failed(_) => EXIT_FAILED,
            CliError::Conflict(_) => EXIT_CONFLICT,
        }
    }

    /// A failure with a message.
    pub fn failed(message: impl Into<String>) -> Self {
        CliError::Failed(message.into())
    }
}

impl From<OpError> for CliError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Conflict(what) => CliError::Conflict(format!("conflict: {what} (re-run)")),
            other => CliError::Failed(other.to_string()),
        }
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        CliError::Failed(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_exit_3_and_say_to_rerun() {
        let e = CliError::from(OpError::Conflict(
            "assignment changed concurrently; re-read and try again".into(),
        ));
        assert_eq!(e.exit_code(), EXIT_CONFLICT);
        assert!(e.to_string().starts_with("conflict: "), "{e}");
        assert!(e.to_string().contains("re-run"), "{e}");
        let e = CliError::from(StoreError::Unavailable {
            endpoints: "http://127.0.0.1:2379".into(),
            reason: "connection refused".into(),
        });
        assert_eq!(e.exit_code(), EXIT_FAILED);
        assert_eq!(
            e.to_string(),
            "etcd unreachable at http://127.0.0.1:2379: connection refused"
        );
        assert_eq!(CliError::Usage("x".into()).exit_code(), EXIT_USAGE);
    }
}
