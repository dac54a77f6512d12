//! SHA-256 digests kept as their 32 bytes and written as 64 hex characters.
//!
//! Records store digests of API keys and of model files. As hex `String`s each cost
//! 88 bytes and a heap allocation; a snapshot of 100,000 tenant-models holds three
//! each. Parsing also checks the form once, so nothing downstream meets a malformed one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Sum([u8; 32]);

/// A digest that is not 64 hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sha256 must be 64 hex characters")]
pub struct DigestError;

impl Sha256Sum {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Parses 64 hex characters (either case).
    pub fn from_hex(hex: &str) -> Result<Self, DigestError> {
        let mut out = [0; 32];
        hex::decode_to_slice(hex, &mut out).map_err(|_| DigestError)?;
        Ok(Self(out))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, as stored.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha256Sum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Sum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Sum({self})")
    }
}

impl FromStr for Sha256Sum {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, DigestError> {
        Self::from_hex(s)
    }
}

impl Serialize for Sha256Sum {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Sha256Sum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Self::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn round_trips_as_lowercase_hex() {
        let d = Sha256Sum::of(b"");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(
            json,
            "\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\""
        );
        assert_eq!(serde_json::from_str::<Sha256Sum>(&json).unwrap(), d);
        let upper = json.to_uppercase();
        assert_eq!(serde_json::from_str::<Sha256Sum>(&upper).unwrap(), d);
    }

    #[test]
    fn refuses_anything_but_64_hex_characters() {
        for bad in ["", "zz", &"a".repeat(63), &"a".repeat(65), &"g".repeat(64)] {
            let err = serde_json::from_str::<Sha256Sum>(&format!("\"{bad}\"")).unwrap_err();
            assert!(err.to_string().contains("64 hex"), "{bad:?}: {err}");
        }
        assert!(serde_json::from_str::<Sha256Sum>("12").is_err());
    }

    proptest! {
        #[test]
        fn hex_round_trips(bytes in any::<[u8; 32]>()) {
            let d = Sha256Sum::from_bytes(bytes);
            prop_assert_eq!(Sha256Sum::from_hex(&d.to_hex()).unwrap(), d);
        }
    }
}
