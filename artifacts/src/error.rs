//! The two error types of the artifact store, and the one place where `object_store`'s
//! errors are sorted into "not there", "try again later" and "broken".

use std::error::Error as StdError;
use std::path::PathBuf;

use object_store::client::{HttpError, HttpErrorKind};

/// Why a `--store` URL cannot be used. Reported once at startup (exit code 64).
#[derive(Debug, thiserror::Error)]
pub enum StoreConfigError {
    /// Not a URL, or a URL with parts a store URL cannot have.
    #[error("store url {url:?} is not valid: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// A scheme other than `file` and `s3`.
    #[error(
        "store url scheme {scheme:?} is not supported (use file:///abs/dir or s3://bucket[/prefix])"
    )]
    UnsupportedScheme { scheme: String },
    /// The directory of a `file://` store is missing or is not a directory.
    #[error("store directory {}: {reason}", path.display())]
    Directory { path: PathBuf, reason: String },
    /// `object_store` refused the S3 configuration (URL plus `AWS_*` variables).
    #[error("s3 store configuration: {reason}")]
    S3 { reason: String },
}

/// Why reading (or writing) an artifact failed.
///
/// The worker turns [`FetchError::Unavailable`] into 503 + `Retry-After`
/// ([`FetchError::is_retryable`]); everything else is a failed load of that model version.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The store answered, and the object is not there.
    #[error("artifact {path} not found in the store")]
    NotFound { path: String },
    /// The bytes are not the ones the manifest recorded (size or sha256).
    #[error("artifact {path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
    /// The store could not be reached or answered with a transient failure (connection
    /// refused, timeout, 5xx, throttling). Worth retrying later.
    #[error("object store unavailable: {reason}")]
    Unavailable { reason: String },
    /// The manifest says the artifact is bigger than the caller accepts.
    #[error("artifact {path} is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge { path: String, size: u64, limit: u64 },
    /// Anything else: access denied, an invalid object path, a local I/O error, a 4xx.
    #[error("object store error: {reason}")]
    Other { reason: String },
}

impl FetchError {
    /// Whether the same request may succeed later without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// Sorts an `object_store` error about the object at `path`.
pub(crate) fn from_store(path: &str, err: object_store::Error) -> FetchError {
    use object_store::Error as E;
    match err {
        E::NotFound { .. } => FetchError::NotFound {
            path: path.to_owned(),
        },
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => FetchError::Other {
            reason: format!("access to {path} denied: {err}"),
        },
        E::Generic { .. } => match transient(&err) {
            Some(what) => FetchError::Unavailable {
                reason: format!("{what} on {path} ({err})"),
            },
            None => FetchError::Other {
                reason: format!("{path}: {err}"),
            },
        },
        _ => FetchError::Other {
            reason: format!("{path}: {err}"),
        },
    }
}

/// What went wrong in transit, if it is worth retrying: a transport failure anywhere in
/// the source chain (connect, timeout, reset), or a transient HTTP status.
fn transient(err: &object_store::Error) -> Option<&'static str> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(http) = e.downcast_ref::<HttpError>() {
            return Some(match http.kind() {
                HttpErrorKind::Connect => "cannot connect",
                HttpErrorKind::Timeout => "timed out",
                HttpErrorKind::Interrupted => "connection interrupted",
                HttpErrorKind::Request => "request failed",
                _ => "transport error",
            });
        }
        current = e.source();
    }
    transient_status_in(&err.to_string()).then_some("transient http status")
}

/// Reads the HTTP status back from an `object_store` message.
///
/// object_store 0.14 keeps the status of a failed request in `RetryError`, a type it does
/// not export, so it cannot be downcast; its message reads "...non-2xx status code: 503
/// Service Unavailable: ..." ("Server returned error response" is S3's `InternalError`
/// or `SlowDown` inside a 200). `tests/artifacts.rs` pins this against a fake server.
fn transient_status_in(message: &str) -> bool {
    const MARK: &str = "status code: ";
    if message.contains("Server returned error response") {
        return true;
    }
    message.match_indices(MARK).any(|(at, _)| {
        message
            .get(at + MARK.len()..at + MARK.len() + 3)
            .and_then(|code| code.parse::<u16>().ok())
            .is_some_and(|code| code >= 500 || code == 429 || code == 408)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_in_messages() {
        let msg = |code: &str| {
            format!(
                "Generic S3 error: Error performing GET http://x/b/k in 1ms - \
                 Server returned non-2xx status code: {code}: <Error/>"
            )
        };
        assert!(transient_status_in(&msg("503 Service Unavailable")));
        assert!(transient_status_in(&msg("500 Internal Server Error")));
        assert!(transient_status_in(&msg("429 Too Many Requests")));
        assert!(!transient_status_in(&msg("400 Bad Request")));
        assert!(!transient_status_in(&msg("416 Range Not Satisfiable")));
        assert!(!transient_status_in(
            "Generic LocalFileSystem error: status code: 5"
        ));
        assert!(transient_status_in(
            "Generic S3 error: Error performing PUT u in 1ms - Server returned error response: \
             <Error><Code>SlowDown</Code></Error>"
        ));
    }

    #[test]
    fn not_found_and_denied() {
        let not_found = object_store::Error::NotFound {
            path: "a/b".into(),
            source: "gone".into(),
        };
        assert!(matches!(
            from_store("a/b", not_found),
            FetchError::NotFound { path } if path == "a/b"
        ));
        let denied = object_store::Error::PermissionDenied {
            path: "a/b".into(),
            source: "no".into(),
        };
        let err = from_store("a/b", denied);
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("denied"), "{err}");
    }
}
