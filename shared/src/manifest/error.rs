//! Why a config, a tensor table or a manifest was refused: [`ManifestError`].

/// Why a config, a tensor table or a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("config.json is not valid: {0}")]
    Json(String),
    #[error("unsupported format {0:?} (expected \"shardline/v1\")")]
    Format(String),
    #[error("{0}")]
    Invalid(String),
    /// An architecture or activation this release does not know: a typo in a file
    /// being published, or something a newer release added to a stored manifest.
    #[error("config.json: {0}")]
    Unsupported(String),
    #[error("missing tensor {0:?}")]
    MissingTensor(String),
    #[error("tensor {name:?} has dtype {dtype}, expected F32")]
    Dtype { name: String, dtype: String },
    #[error("tensor {name:?} has shape {actual:?}, expected {expected:?}")]
    Shape {
        name: String,
        actual: Vec<usize>,
        expected: Vec<usize>,
    },
}

pub(super) fn invalid(msg: impl Into<String>) -> ManifestError {
    ManifestError::Invalid(msg.into())
}
