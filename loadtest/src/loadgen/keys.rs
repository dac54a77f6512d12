//! The keys file: which tenants the load generator speaks for, with what API key, to which
//! of their models.
//!
//! One JSON array, one object per tenant, in rank order (with a Zipf mix the first tenant
//! is the busiest):
//!
//! ```json
//! [
//!   {"tenant": "t1", "key": "sk-…", "models": ["risk"]},
//!   {"tenant": "t2", "key": "sk-…", "models": ["risk", "churn"]}
//! ]
//! ```
//!
//! `tenant` only labels the report (the router finds the tenant from the key); each request
//! picks one of the tenant's `models` uniformly. Unknown fields are ignored, so a fleet
//! launcher may add its own.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One tenant's entry in the keys file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantKey {
    pub tenant: String,
    /// Sent as `Authorization: Bearer <key>`.
    pub key: String,
    /// Model names as the tenant knows them (non-empty).
    pub models: Vec<String>,
}

/// Why a keys file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read keys file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("keys file {path} is malformed: {reason}")]
    Malformed { path: String, reason: String },
}

/// Reads and checks the keys file at `path`.
pub fn load(path: &Path) -> Result<Vec<TenantKey>, KeysError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&text).map_err(|reason| KeysError::Malformed {
        path: shown,
        reason,
    })
}

/// Parses and checks a keys file's text; every problem is reported at once.
pub fn parse(text: &str) -> Result<Vec<TenantKey>, String> {
    let tenants: Vec<TenantKey> = serde_json::from_str(text).map_err(|e| {
        format!(r#"{e} (expected a JSON array of {{"tenant", "key", "models": [..]}})"#)
    })?;
    check(&tenants)?;
    Ok(tenants)
}

/// Checks entries built in-process as [`parse`] checks a file's.
pub fn check(tenants: &[TenantKey]) -> Result<(), String> {
    if tenants.is_empty() {
        return Err("no tenants".to_owned());
    }
    let mut problems = Vec::new();
    for (i, t) in tenants.iter().enumerate() {
        if t.tenant.is_empty() {
            problems.push(format!("entry {i}: empty tenant"));
        }
        if t.key.is_empty() || http::HeaderValue::from_str(&format!("Bearer {}", t.key)).is_err() {
            problems.push(format!(
                "entry {i} ({}): key is empty or not a header value",
                t.tenant
            ));
        }
        if t.models.is_empty() {
            problems.push(format!("entry {i} ({}): no models", t.tenant));
        }
        for m in &t.models {
            let path_safe = !m.is_empty()
                && m.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b));
            if !path_safe {
                problems.push(format!(
                    "entry {i} ({}): model {m:?} is not a plain name",
                    t.tenant
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_format() {
        let text = r#"[
            {"tenant": "t1", "key": "k1", "models": ["risk"]},
            {"tenant": "t2", "key": "k2", "models": ["risk", "churn"], "extra": 1}
        ]"#;
        let tenants = parse(text).expect("valid");
        assert_eq!(tenants.len(), 2);
        assert_eq!(tenants[1].models, ["risk", "churn"]);
    }

    #[test]
    fn reports_every_problem() {
        assert!(parse("").is_err());
        assert!(
            parse("{}")
                .expect_err("object")
                .contains("expected a JSON array")
        );
        assert_eq!(parse("[]").expect_err("empty"), "no tenants");
        let err = parse(
            r#"[{"tenant": "", "key": "a\nb", "models": []},
                           {"tenant": "t", "key": "k", "models": ["a/b"]}]"#,
        )
        .expect_err("bad entries");
        for needle in ["empty tenant", "not a header value", "no models", "\"a/b\""] {
            assert!(err.contains(needle), "{err}");
        }
        assert!(parse(r#"[{"tenant": "t", "models": ["m"]}]"#).is_err());
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let err = load(Path::new("/nonexistent/keys.json")).expect_err("missing");
        assert!(matches!(err, KeysError::Read { .. }));
        assert!(
            err.to_string()
                .starts_with("cannot read keys file /nonexistent/keys.json")
        );
    }
}
