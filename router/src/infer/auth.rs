//! Who is asking: the tenant owning a request's bearer key (the tenant comes only from
//! the key, never from the path), and the per-connection [`KeyMemo`] that spares a
//! client presenting the same key a digest per request.

use shardline_shared::ids::TenantId;
use shardline_shared::snapshot::Snapshot;

use crate::error::RouterError;

/// The tenant owning the bearer key of an `Authorization` value.
pub fn authenticate(snap: &Snapshot, value: Option<&[u8]>) -> Result<TenantId, RouterError> {
    let value = value
        .and_then(|v| std::str::from_utf8(v).ok())
        .ok_or(RouterError::Unauthorized)?;
    let (scheme, key) = value
        .trim()
        .split_once(' ')
        .ok_or(RouterError::Unauthorized)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(RouterError::Unauthorized);
    }
    snap.tenant_for_key(key.trim())
        .cloned()
        .ok_or(RouterError::Unauthorized)
}

/// The tenant of the last key a connection presented, for one snapshot revision: a
/// client sending the same key on every request pays for one digest per snapshot, and
/// a rotated or revoked key stops working with the snapshot that says so (any change
/// moves the revision). Only the connection's own earlier key is compared, so the
/// plain comparison reveals nothing about anyone else's.
#[derive(Debug, Default)]
pub struct KeyMemo {
    revision: i64,
    key: Vec<u8>,
    tenant: Option<TenantId>,
}

impl KeyMemo {
    /// The tenant owning the bearer key of `value`, as [`authenticate`] says.
    pub fn tenant(
        &mut self,
        snap: &Snapshot,
        value: Option<&[u8]>,
    ) -> Result<TenantId, RouterError> {
        if let (Some(tenant), Some(value)) = (&self.tenant, value)
            && self.revision == snap.revision()
            && self.key == value
        {
            return Ok(tenant.clone());
        }
        self.tenant = None;
        let tenant = authenticate(snap, value)?;
        self.revision = snap.revision();
        self.key.clear();
        self.key.extend_from_slice(value.unwrap_or_default());
        self.tenant = Some(tenant.clone());
        Ok(tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shardline_shared::keys::Prefix;

    /// A snapshot at `revision` where tenant `acme` holds the keys whose digests are given.
    fn snapshot(revision: i64, keys: &[&str]) -> Snapshot {
        let keys: Vec<serde_json::Value> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let digest = hex::encode(shardline_shared::auth::digest_bytes(k));
                json!({"id": format!("k{i}"), "sha256": digest, "created_at": 1})
            })
            .collect();
        let record = json!({"keys": keys, "created_at": 1}).to_string();
        let (snap, invalid) = Snapshot::from_kvs(
            Prefix::default(),
            revision,
            [("/shardline/tenants/acme", record.as_bytes(), 1)],
        );
        assert!(invalid.is_empty(), "{invalid:?}");
        snap
    }

    #[test]
    fn the_key_memo_answers_like_the_snapshot_and_forgets_on_a_new_revision() {
        let mut memo = KeyMemo::default();
        let first = snapshot(5, &["secret-1"]);
        let acme = |r: Result<TenantId, RouterError>| r.map(|t| t.as_str().to_owned());
        for _ in 0..2 {
            assert_eq!(
                acme(memo.tenant(&first, Some(b"Bearer secret-1"))),
                Ok("acme".into())
            );
        }
        // Another key on the same connection is checked, not taken from the memo.
        for wrong in [
            &b"Bearer secret-2"[..],
            b"Bearer secret-1x",
            b"Basic secret-1",
        ] {
            assert_eq!(
                memo.tenant(&first, Some(wrong)),
                Err(RouterError::Unauthorized),
                "{}",
                String::from_utf8_lossy(wrong)
            );
        }
        assert_eq!(memo.tenant(&first, None), Err(RouterError::Unauthorized));
        // Rotated: the next snapshot no longer holds the key.
        assert_eq!(
            acme(memo.tenant(&first, Some(b"Bearer secret-1"))),
            Ok("acme".into())
        );
        let rotated = snapshot(6, &["secret-2"]);
        assert_eq!(
            memo.tenant(&rotated, Some(b"Bearer secret-1")),
            Err(RouterError::Unauthorized)
        );
        assert_eq!(
            acme(memo.tenant(&rotated, Some(b"Bearer secret-2"))),
            Ok("acme".into())
        );
    }
}
