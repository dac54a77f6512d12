//! Thousands of tenants (and their assignments) written straight into etcd in the layout
//! `shardctl` writes, many per transaction, so a suite can make a control plane larger
//! than one 4 MiB gRPC message in a second instead of through thousands of commands.

use shardline_control::store::{Op, Txn};
use shardline_control::{ControlPlane, OpError};
use shardline_shared::auth::ApiKey;
use shardline_shared::ids::{ModelKey, TenantId, WorkerId};
use shardline_shared::keys::Key;
use shardline_shared::records::{Assignment, TenantLimits, TenantRecord};

/// Puts per transaction (etcd refuses more than `--max-txn-ops`, 128 by default; 64
/// tenants of a dozen digests are about 100 KiB, below its 1.5 MiB request limit).
const PER_TXN: usize = 64;

/// One bulk-written tenant and the first of its API keys.
#[derive(Debug, Clone)]
pub struct BulkTenant {
    pub id: TenantId,
    pub key: String,
}

/// Writes tenants `bulk-00000`… (`n` of them), each with `keys_each` API keys (only
/// digests are stored, as always; about 110 bytes each), and returns them with their
/// first key, and the bytes written (keys and values).
pub async fn write_tenants(
    cp: &ControlPlane,
    n: usize,
    keys_each: usize,
) -> Result<(Vec<BulkTenant>, usize), OpError> {
    let mut out = Vec::with_capacity(n);
    let mut records = Vec::with_capacity(n);
    for i in 0..n {
        let id = TenantId::new(format!("bulk-{i:05}")).map_err(refused)?;
        let keys = (0..keys_each.max(1))
            .map(|_| ApiKey::generate())
            .collect::<Result<Vec<_>, _>>()?;
        let record = TenantRecord {
            shard_size: Some(1),
            limits: TenantLimits::default(),
            keys: keys.iter().map(|k| k.digest(1)).collect(),
            created_at: 1,
        };
        records.push((
            Key::Tenant(id.clone()),
            serde_json::to_vec(&record).map_err(refused)?,
        ));
        out.push(BulkTenant {
            id,
            key: keys[0].expose().to_owned(),
        });
    }
    let bytes = write_all(cp, &records).await?;
    Ok((out, bytes))
}

/// Writes an assignment of model `model` of every tenant in `tenants` to `workers`;
/// returns the bytes written.
pub async fn write_assignments(
    cp: &ControlPlane,
    tenants: &[BulkTenant],
    model: &str,
    workers: &[WorkerId],
) -> Result<usize, OpError> {
    let records: Vec<(Key, Vec<u8>)> = tenants
        .iter()
        .map(|t| {
            let key = ModelKey::parse_shard_key(&format!("{}/{model}", t.id)).map_err(refused)?;
            let a = Assignment {
                workers: workers.to_vec(),
                epoch: 1,
                previous: vec![],
            };
            Ok((
                Key::Assignment(key),
                serde_json::to_vec(&a).map_err(refused)?,
            ))
        })
        .collect::<Result<_, OpError>>()?;
    write_all(cp, &records).await
}

async fn write_all(cp: &ControlPlane, records: &[(Key, Vec<u8>)]) -> Result<usize, OpError> {
    let mut bytes = 0;
    for chunk in records.chunks(PER_TXN) {
        let mut txn = Txn::new();
        for (key, json) in chunk {
            let key = cp.key(key);
            bytes += key.len() + json.len();
            txn = txn.op(Op::put(key, json.clone()));
        }
        cp.commit(txn, "bulk write").await?;
    }
    Ok(bytes)
}

fn refused(e: impl std::fmt::Display) -> OpError {
    OpError::Refused(e.to_string())
}

/// The old gRPC message limit (4 MiB) that a listing of the bulk tenants must exceed.
pub const GRPC_DEFAULT_LIMIT: usize = 4 << 20;
