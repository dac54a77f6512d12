//! Tenant API keys: generation, the stored digest, and constant-time verification.
//!
//! A key is 256 random bits shown to the operator once (`sl_` + 64 hex characters).
//! Only its SHA-256 digest is stored. A slow password hash buys nothing for a key with
//! 256 bits of entropy, and a plain digest lets routers find the tenant with one map
//! lookup. The plain key never appears in `Debug` output or logs.

use std::fmt;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::digest::Sha256Sum;

/// Every key starts with this, so leaked keys are easy to grep for.
pub const KEY_PREFIX: &str = "sl_";

/// A plain API key. Deliberately not `Serialize` and redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

/// Why a key could not be generated.
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed: {0}")]
pub struct RandomError(String);

impl ApiKey {
    /// Draws a fresh key from the operating system's generator.
    pub fn generate() -> Result<Self, RandomError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| RandomError(e.to_string()))?;
        Ok(Self(format!("{KEY_PREFIX}{}", hex::encode(bytes))))
    }

    /// The key to hand to the tenant, once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The digest to store.
    pub fn digest(&self, created_at: u64) -> KeyDigest {
        let sha = digest_bytes(&self.0);
        KeyDigest {
            id: hex::encode(&sha[..4]).into(),
            sha256: Sha256Sum::from_bytes(sha),
            created_at,
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// SHA-256 of a presented key, as used for lookups.
pub fn digest_bytes(presented: &str) -> [u8; 32] {
    Sha256::digest(presented.as_bytes()).into()
}

/// What is stored for one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDigest {
    /// Short public fingerprint for listings (first 4 bytes of the digest).
    pub id: CompactString,
    /// SHA-256 of the key (lowercase hex in JSON).
    pub sha256: Sha256Sum,
    /// Unix seconds when issued.
    pub created_at: u64,
}

impl KeyDigest {
    /// The digest as bytes.
    pub fn bytes(&self) -> [u8; 32] {
        *self.sha256.bytes()
    }

    /// Whether `presented` is this key, compared in constant time.
    pub fn verify(&self, presented: &str) -> bool {
        self.bytes().ct_eq(&digest_bytes(presented)).into()
    }
}

/// Constant-time equality of two digests.
pub fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_distinct_and_verify() {
        let a = ApiKey::generate().unwrap();
        let b = ApiKey::generate().unwrap();
        assert_ne!(a, b);
        assert!(a.expose().starts_with(KEY_PREFIX));
        assert_eq!(a.expose().len(), KEY_PREFIX.len() + 64);
        let d = a.digest(7);
        assert!(d.verify(a.expose()));
        assert!(!d.verify(b.expose()));
        assert!(!d.verify(""));
        assert_eq!(d.bytes(), digest_bytes(a.expose()));
        assert!(digests_equal(&d.bytes(), &digest_bytes(a.expose())));
    }

    #[test]
    fn plain_key_never_printed() {
        let a = ApiKey::generate().unwrap();
        let debug = format!("{a:?}");
        assert!(!debug.contains(&a.expose()[3..]), "{debug}");
        let stored = serde_json::to_string(&a.digest(0)).unwrap();
        assert!(!stored.contains(&a.expose()[3..]));
    }

    #[test]
    fn malformed_stored_digest_is_refused_when_read() {
        let err = serde_json::from_str::<KeyDigest>(r#"{"id":"x","sha256":"zz","created_at":0}"#)
            .unwrap_err();
        assert!(err.to_string().contains("64 hex"), "{err}");
    }
}
