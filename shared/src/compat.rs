//! Reading values written by another release (the schema evolution rule of
//! `docs/etcd-layout.md`): every value stored in etcd is parsed leniently, so a field a
//! newer release added is *ignored and noted*, never a reason to treat the value as
//! absent; an enum value this release does not know (an admin state, an activation)
//! parses into that enum's `Unknown` variant, which each reader handles safely, and is
//! noted too. [`from_json`] returns the value with an [`Ignored`] note of what it skipped,
//! so the watcher can count it (`shardline_control_ignored_fields_total{kind}`) and log
//! it once per key kind.
//!
//! Files an operator writes for this release (a model's `config.json` at publish time)
//! are read strictly instead: [`strict`] turns any ignored field into an error.

use serde::de::DeserializeOwned;

/// At most this many field paths are kept in one note (a value can be large).
pub const MAX_NOTED: usize = 8;

/// What parsing one value skipped. Empty for a value this release fully understands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ignored {
    /// Paths (`limits.burst`, `keys.0.scope`) of fields this release does not know, at
    /// most [`MAX_NOTED`].
    pub fields: Vec<String>,
    /// Paths of enum values this release does not know (parsed as `Unknown`).
    pub values: Vec<&'static str>,
    /// Fields beyond the first [`MAX_NOTED`].
    pub more: usize,
}

impl Ignored {
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.values.is_empty() && self.more == 0
    }

    fn field(&mut self, path: String) {
        if self.fields.len() < MAX_NOTED {
            self.fields.push(path);
        } else {
            self.more += 1;
        }
    }
}

impl std::fmt::Display for Ignored {
    /// `fields [a, b.c] (+3 more); unknown values [state]`, for logs and errors.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut sep = "";
        if !self.fields.is_empty() || self.more > 0 {
            write!(f, "fields [{}]", self.fields.join(", "))?;
            if self.more > 0 {
                write!(f, " (+{} more)", self.more)?;
            }
            sep = "; ";
        }
        if !self.values.is_empty() {
            write!(f, "{sep}unknown values [{}]", self.values.join(", "))?;
        }
        Ok(())
    }
}

/// A stored type that may hold enum values a newer release added (parsed into an
/// `Unknown` variant). The default says "none".
pub trait Evolving {
    /// Pushes the path of every field holding a value this release does not know.
    fn unknown_values(&self, _found: &mut Vec<&'static str>) {}
}

/// A raw JSON value keeps everything: nothing to note.
impl Evolving for serde_json::Value {}

/// Parses `bytes` as a `T`, ignoring (and noting) fields `T` does not have.
pub fn from_json<T: DeserializeOwned + Evolving>(
    bytes: &[u8],
) -> Result<(T, Ignored), serde_json::Error> {
    let mut ignored = Ignored::default();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_ignored::deserialize(&mut de, |path| ignored.field(path.to_string()))?;
    de.end()?;
    value.unknown_values(&mut ignored.values);
    Ok((value, ignored))
}

/// Parses `bytes` as a `T` that must hold nothing this release does not understand:
/// the error names the first unknown field (as serde's `deny_unknown_fields` would).
pub fn strict<T: DeserializeOwned + Evolving>(bytes: &[u8]) -> Result<T, String> {
    let (value, ignored) = from_json::<T>(bytes).map_err(|e| e.to_string())?;
    if let Some(field) = ignored.fields.first() {
        return Err(format!("unknown field `{field}`"));
    }
    if let Some(path) = ignored.values.first() {
        return Err(format!("unknown value in `{path}`"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Outer {
        a: u32,
        #[serde(default)]
        inner: Vec<Inner>,
        mode: Mode,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Inner {
        b: String,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        On,
        #[serde(other)]
        Unknown,
    }

    impl Evolving for Outer {
        fn unknown_values(&self, found: &mut Vec<&'static str>) {
            if self.mode == Mode::Unknown {
                found.push("mode");
            }
        }
    }

    #[test]
    fn extra_fields_are_noted_not_refused() {
        let (v, ignored) = from_json::<Outer>(
            br#"{"a":1,"new":{"x":[1,2]},"inner":[{"b":"x","deeper":true}],"mode":"on"}"#,
        )
        .unwrap();
        assert_eq!(v.a, 1);
        assert_eq!(v.inner[0].b, "x");
        assert_eq!(ignored.fields, ["new", "inner.0.deeper"]);
        assert!(ignored.values.is_empty());
        assert_eq!(
            ignored.to_string(),
            "fields [new, inner.0.deeper]",
            "{ignored:?}"
        );
        let (_, clean) = from_json::<Outer>(br#"{"a":1,"mode":"on"}"#).unwrap();
        assert!(clean.is_empty());
    }

    #[test]
    fn unknown_enum_values_are_noted() {
        let (v, ignored) = from_json::<Outer>(br#"{"a":1,"mode":"sideways"}"#).unwrap();
        assert_eq!(v.mode, Mode::Unknown);
        assert_eq!(ignored.values, ["mode"]);
        assert_eq!(ignored.to_string(), "unknown values [mode]");
        assert_eq!(
            strict::<Outer>(br#"{"a":1,"mode":"sideways"}"#).unwrap_err(),
            "unknown value in `mode`"
        );
    }

    #[test]
    fn many_fields_are_counted_not_kept() {
        let extra: String = (0..20).map(|i| format!(",\"f{i}\":{i}")).collect();
        let json = format!(r#"{{"a":1,"mode":"on"{extra}}}"#);
        let (_, ignored) = from_json::<Outer>(json.as_bytes()).unwrap();
        assert_eq!(ignored.fields.len(), MAX_NOTED);
        assert_eq!(ignored.more, 20 - MAX_NOTED);
        assert!(ignored.to_string().ends_with("(+12 more)"), "{ignored}");
    }

    #[test]
    fn strict_refuses_what_lenient_notes() {
        assert_eq!(
            strict::<Outer>(br#"{"a":1,"mode":"on","typo":2}"#).unwrap_err(),
            "unknown field `typo`"
        );
        // Malformed JSON and missing fields are errors either way.
        assert!(from_json::<Outer>(br#"{"a":1}"#).is_err());
        assert!(from_json::<Outer>(br#"{"a":1,"mode":"on"} x"#).is_err());
        assert!(strict::<Outer>(br#"{"a":"1","mode":"on"}"#).is_err());
    }
}
