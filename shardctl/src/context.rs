//! What every command needs: the etcd connection and control plane, one consistent
//! read of the whole prefix, id parsing with usage errors, and the [`Output`] type.

use std::io::IsTerminal;
use std::str::FromStr;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use shardline_control::{ControlPlane, EtcdStore, KvStore};
use shardline_shared::keys::Prefix;
use shardline_shared::snapshot::Snapshot;

use super::error::CliError;

/// A connected CLI run.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub store: Arc<EtcdStore>,
    pub cp: ControlPlane,
    pub prefix: Prefix,
    /// `--json`: no progress bars, one JSON document on stdout.
    pub json: bool,
}

impl Ctx {
    /// Prepares the etcd client (lazily: the first request reports an unreachable etcd).
    pub async fn connect(etcd: &[String], prefix: &str, json: bool) -> Result<Self, CliError> {
        let prefix = Prefix::new(prefix).map_err(|e| CliError::Usage(format!("--prefix: {e}")))?;
        let store = Arc::new(EtcdStore::connect(etcd).await?);
        let cp = ControlPlane::new(store.clone(), prefix.clone());
        Ok(Self {
            store,
            cp,
            prefix,
            json,
        })
    }

    /// The whole control plane at one revision (a single prefix listing).
    pub async fn snapshot(&self) -> Result<Snapshot, CliError> {
        let listing = self.store.list(self.prefix.root()).await?;
        let (snap, _invalid) = Snapshot::from_kvs(
            self.prefix.clone(),
            listing.revision,
            listing
                .kvs
                .iter()
                .map(|kv| (kv.key.as_str(), kv.value.as_slice(), kv.mod_revision)),
        );
        Ok(snap)
    }

    /// Whether to draw progress on stderr (a terminal, and not `--json`).
    pub fn show_progress(&self) -> bool {
        !self.json && std::io::stderr().is_terminal()
    }
}

/// Parses an id argument; a bad one is a usage error naming the rule it breaks.
pub fn parse_id<T: FromStr>(s: &str) -> Result<T, CliError>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e: T::Err| CliError::Usage(e.to_string()))
}

/// What a command prints: `text` normally, `json` with `--json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub text: String,
    pub json: Value,
}

impl Output {
    /// An output whose JSON form is `value` serialised.
    pub fn new<T: Serialize>(text: impl Into<String>, value: &T) -> Result<Self, CliError> {
        let json = serde_json::to_value(value)
            .map_err(|e| CliError::failed(format!("cannot encode the result as JSON: {e}")))?;
        Ok(Self {
            text: text.into(),
            json,
        })
    }

    /// A listing: `{"<name>": [rows...]}` or a table.
    pub fn rows<T: Serialize>(name: &str, rows: &[T], table: String) -> Result<Self, CliError> {
        let mut map = serde_json::Map::new();
        let rows = serde_json::to_value(rows)
            .map_err(|e| CliError::failed(format!("cannot encode the result as JSON: {e}")))?;
        map.insert(name.to_owned(), rows);
        Ok(Self {
            text: table,
            json: Value::Object(map),
        })
    }

    /// The text to print for this run.
    pub fn render(&self, json: bool) -> String {
        if json {
            let mut s = serde_json::to_string_pretty(&self.json).unwrap_or_else(|_| "{}".into());
            s.push('\n');
            s
        } else if self.text.ends_with('\n') || self.text.is_empty() {
            self.text.clone()
        } else {
            format!("{}\n", self.text)
        }
    }
}
