//! Validated identifiers: tenants, models, versions and workers.
//!
//! Every name that reaches an etcd key, an object-store path or a URL goes through
//! [`validate_name`] first: 1–63 characters of `[a-z0-9-]`, starting with a letter or a
//! digit. That keeps keys parseable (no `/`), paths safe (no `..`) and names readable in
//! logs and dashboards.
//!
//! A name is an [`ArcStr`]: one pointer wide (an `Arc<str>` is two), cloning one is a
//! reference count, and the snapshot keeps one shared copy of each ([`crate::intern`]).
//! At 100,000 tenant-models a snapshot holds a few dozen names per model (keys of its
//! maps, workers of its assignment and resident lists), so the width is ~200 bytes each.

use arcstr::ArcStr;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Longest accepted name, as for a DNS label.
pub const MAX_NAME_LEN: usize = 63;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} name is empty")]
    Empty { kind: &'static str },
    #[error("{kind} name {name:?} is longer than {MAX_NAME_LEN} characters")]
    TooLong { kind: &'static str, name: String },
    #[error("{kind} name {name:?} must start with a lowercase letter or digit")]
    BadStart { kind: &'static str, name: String },
    #[error("{kind} name {name:?} has {ch:?}: only lowercase letters, digits and '-' are allowed")]
    BadChar {
        kind: &'static str,
        name: String,
        ch: char,
    },
}

/// Checks `name` against the naming rule; `kind` ("tenant", "model", ...) goes into the error.
pub fn validate_name(kind: &'static str, name: &str) -> Result<(), IdError> {
    let Some(first) = name.chars().next() else {
        return Err(IdError::Empty { kind });
    };
    if name.len() > MAX_NAME_LEN {
        return Err(IdError::TooLong {
            kind,
            name: truncate_for_error(name),
        });
    }
    if let Some(ch) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(IdError::BadChar {
            kind,
            name: name.to_owned(),
            ch,
        });
    }
    if first == '-' {
        return Err(IdError::BadStart {
            kind,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Keeps error messages bounded when someone sends a megabyte of name.
fn truncate_for_error(name: &str) -> String {
    let mut out: String = name.chars().take(MAX_NAME_LEN + 1).collect();
    if out.len() < name.len() {
        out.push('…');
    }
    out
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(ArcStr);

        impl $name {
            /// What this id names, as used in error messages.
            pub const KIND: &'static str = $kind;

            /// Validates and wraps `name`.
            pub fn new(name: impl Into<String>) -> Result<Self, IdError> {
                let name = name.into();
                validate_name($kind, &name)?;
                Ok(Self(ArcStr::from(name)))
            }

            /// The same name, sharing one allocation with every other interned copy
            /// (see [`crate::intern`]); for names kept in a long-lived structure.
            pub fn interned(&self) -> Self {
                Self(crate::intern::intern(&self.0))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.as_str().to_owned()
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A customer of the platform; all its models and keys hang off this name.
    TenantId,
    "tenant"
);
name_type!(
    /// A tenant's own name for one of its models (unique within the tenant only).
    ModelName,
    "model"
);
name_type!(
    /// One published version of a model (e.g. `1`, `2024-06-01`, `v3`).
    VersionId,
    "version"
);
name_type!(
    /// A worker process, stable across restarts when set with `--id`.
    WorkerId,
    "worker"
);

/// A tenant's model: the unit that gets a shard of workers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ModelKey {
    pub tenant: TenantId,
    pub model: ModelName,
}

impl ModelKey {
    pub fn new(tenant: TenantId, model: ModelName) -> Self {
        Self { tenant, model }
    }

    /// Both names interned (see [`TenantId::interned`]).
    pub fn interned(&self) -> Self {
        Self::new(self.tenant.interned(), self.model.interned())
    }

    /// The shard key that placement hashes: `tenant/model`. Unambiguous because
    /// neither part may contain `/`.
    pub fn shard_key(&self) -> String {
        format!("{}/{}", self.tenant, self.model)
    }

    /// Parses `tenant/model` (the inverse of [`ModelKey::shard_key`]).
    pub fn parse_shard_key(s: &str) -> Result<Self, IdError> {
        let (t, m) = s.split_once('/').unwrap_or((s, ""));
        Ok(Self::new(TenantId::new(t)?, ModelName::new(m)?))
    }
}

impl fmt::Display for ModelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_plain_names() {
        for ok in ["a", "acme", "0", "risk-v2", "a-b-c", &"x".repeat(63)] {
            assert!(TenantId::new(ok).is_ok(), "{ok:?} should be accepted");
        }
    }

    #[test]
    fn rejects_path_tricks_and_bad_names() {
        let cases = [
            ("", "empty"),
            ("-a", "must start"),
            ("../etc", "'.'"),
            ("a/b", "'/'"),
            ("Acme", "'A'"),
            ("a b", "' '"),
            ("a_b", "'_'"),
            ("é", "'é'"),
        ];
        for (name, needle) in cases {
            let err = ModelName::new(name).expect_err(name).to_string();
            assert!(err.contains(needle), "{name:?}: {err}");
            assert!(err.starts_with("model name"), "{err}");
        }
        let long = "a".repeat(64);
        assert!(matches!(WorkerId::new(long), Err(IdError::TooLong { .. })));
    }

    #[test]
    fn serde_validates() {
        let ok: TenantId = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(ok.as_str(), "acme");
        assert!(serde_json::from_str::<TenantId>("\"../x\"").is_err());
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"acme\"");
    }

    #[test]
    fn names_are_one_pointer_wide() {
        // The snapshot's memory per tenant-model rests on this (see tests/memory.rs).
        assert_eq!(std::mem::size_of::<TenantId>(), 8);
        assert_eq!(std::mem::size_of::<Option<WorkerId>>(), 8);
        assert_eq!(std::mem::size_of::<ModelKey>(), 16);
    }

    #[test]
    fn long_error_is_bounded() {
        let err = TenantId::new("a".repeat(10_000)).unwrap_err().to_string();
        assert!(err.len() < 200, "{err}");
    }

    proptest! {
        #[test]
        fn valid_iff_rule(s in "\\PC{0,70}") {
            let rule = !s.is_empty()
                && s.len() <= 63
                && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !s.starts_with('-');
            prop_assert_eq!(validate_name("x", &s).is_ok(), rule);
        }

        #[test]
        fn shard_key_round_trips(t in "[a-z0-9][a-z0-9-]{0,20}", m in "[a-z0-9][a-z0-9-]{0,20}") {
            let key = ModelKey::new(TenantId::new(&t).unwrap(), ModelName::new(&m).unwrap());
            prop_assert_eq!(ModelKey::parse_shard_key(&key.shard_key()).unwrap(), key);
        }
    }
}
