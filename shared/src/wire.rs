//! Header names of the internal router ↔ worker API (see `docs/worker.md`), written by
//! routers and the controller and read by workers.

/// The router↔worker shared secret.
pub const TOKEN_HEADER: &str = "x-shardline-token";

/// The tokens of an `--internal-token` value: comma-separated, blanks around them
/// trimmed, empty ones dropped (a single token is a list of one).
pub fn token_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The model name as the client called it (the tenant's own model name); the infer
/// response's `model_name` then echoes it instead of `<tenant>.<model>`, so the router
/// can forward the response bytes unchanged.
pub const PUBLIC_NAME_HEADER: &str = "x-shardline-public-name";

/// The etcd revision the router resolved the model version at; the worker waits briefly
/// for its own snapshot to get there before resolving.
pub const REVISION_HEADER: &str = "x-shardline-revision";
