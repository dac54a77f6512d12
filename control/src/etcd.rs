//! [`KvStore`] over a real etcd cluster (3.4 and later) with `etcd-client`.
//!
//! Only v3 calls that etcd 3.4 serves are used (range, txn, watch, lease grant /
//! keep-alive / revoke, compact). Every unary call has a deadline, so an unreachable
//! etcd turns into a [`StoreError::Unavailable`] instead of a hang; watches rely on
//! HTTP/2 keep-alive pings to notice a dead connection.

//!
//! Listings are paginated at one revision ([`list`]).

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KvClient, PutOptions, TxnOp,
    WatchClient, WatchOptions,
};
use futures::StreamExt;

pub use list::{LIST_PAGE, LIST_PAGE_MAX, MAX_MESSAGE, PAGE_BYTES, next_page};

use crate::store::{
    Event, KeyValue, KvStore, Listing, Op, Position, Precondition, StoreError, Txn, TxnOutcome,
    WatchItem, WatchStream,
};

/// Deadline for one unary request.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to etcd. Cheap to clone.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    /// The KV and watch clients with the raised decoding limit ([`MAX_MESSAGE`]).
    kv: KvClient,
    watcher: WatchClient,
    endpoints: String,
    /// The decoding limit `kv` was built with (a listing page that exceeds it is asked
    /// again with fewer keys).
    max_message: usize,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl EtcdStore {
    /// Prepares a client for `endpoints` (comma-separated URLs are accepted in each item).
    /// Connection is lazy: this succeeds while etcd is down, and calls fail until it is up.
    pub async fn connect(endpoints: &[String]) -> Result<Self, StoreError> {
        Self::connect_with_message_limit(endpoints, MAX_MESSAGE).await
    }

    /// As [`EtcdStore::connect`], decoding responses of at most `max_message` bytes (tests
    /// use a small limit to exercise the listing's smaller-page retry).
    pub async fn connect_with_message_limit(
        endpoints: &[String],
        max_message: usize,
    ) -> Result<Self, StoreError> {
        let list: Vec<String> = endpoints
            .iter()
            .flat_map(|e| e.split(','))
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect();
        let joined = list.join(",");
        if list.is_empty() {
            return Err(StoreError::Failed("no etcd endpoints given".into()));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_keep_alive(Duration::from_secs(3), Duration::from_secs(3))
            .with_keep_alive_while_idle(true);
        let client =
            Client::connect(&list, Some(options))
                .await
                .map_err(|e| StoreError::Unavailable {
                    endpoints: joined.clone(),
                    reason: e.to_string(),
                })?;
        Ok(Self {
            kv: client.kv_client().max_decoding_message_size(max_message),
            watcher: client.watch_client().max_decoding_message_size(max_message),
            client,
            endpoints: joined,
            max_message,
        })
    }

    /// The endpoints this store talks to, comma-separated.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    pub(crate) fn error(&self, e: etcd_client::Error) -> StoreError {
        use etcd_client::Error as E;
        match &e {
            E::TransportError(_) | E::IoError(_) => self.unavailable(e.to_string()),
            E::GRpcStatus(s) => match s.code() {
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled => self.unavailable(s.message().to_owned()),
                _ if s.message().contains("lease not found") => StoreError::LeaseNotFound(0),
                // "etcdserver: mvcc: database space exceeded" (ResourceExhausted).
                _ if s.message().contains("database space exceeded") => StoreError::NoSpace {
                    endpoints: self.endpoints.clone(),
                },
                _ => StoreError::Failed(format!("{}: {}", code_name(s.code()), s.message())),
            },
            _ => StoreError::Failed(e.to_string()),
        }
    }

    pub(crate) fn unavailable(&self, reason: String) -> StoreError {
        StoreError::Unavailable {
            endpoints: self.endpoints.clone(),
            reason: simplify(&reason),
        }
    }

    async fn timed<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
            Ok(r) => r.map_err(|e| self.error(e)),
            Err(_) => {
                Err(self.unavailable(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())))
            }
        }
    }
}

fn code_name(code: tonic::Code) -> String {
    format!("{code:?}").to_lowercase()
}

/// Transport errors nest several layers deep; keep the most useful part.
fn simplify(reason: &str) -> String {
    if reason.contains("Connection refused") || reason.contains("connection refused") {
        "connection refused".into()
    } else {
        reason.to_lowercase()
    }
}

/// The end of the key range holding every key that starts with `prefix` (etcd's rule:
/// the prefix with its last byte below 0xff incremented; all keys for an empty or all-0xff
/// prefix).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            if let Some(b) = end.last_mut() {
                *b = last + 1;
            }
            return end;
        }
        end.pop();
    }
    vec![0]
}

pub(crate) fn kv(kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: kv
            .key_str()
            .map_err(|e| StoreError::Failed(format!("non-utf8 key: {e}")))?
            .to_owned(),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    })
}

#[async_trait]
impl KvStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let mut c = self.client.clone();
        let resp = self.timed(c.get(key, None)).await?;
        resp.kvs().first().map(kv).transpose()
    }

    async fn position(&self) -> Result<Position, StoreError> {
        // A linearizable count of one key: the cheapest request whose header carries the
        // cluster id and the current revision.
        let mut c = self.client.clone();
        let resp = self
            .timed(c.get("\0", Some(GetOptions::new().with_count_only())))
            .await?;
        let header = resp
            .header()
            .ok_or_else(|| StoreError::Failed("etcd answered without a header".into()))?;
        Ok(Position {
            cluster: header.cluster_id(),
            revision: header.revision(),
        })
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let mut kvs = Vec::new();
        let revision = self
            .list_paged(prefix, &mut |page| kvs.extend(page))
            .await?;
        Ok(Listing { revision, kvs })
    }

    async fn list_pages(
        &self,
        prefix: &str,
        page: &mut (dyn FnMut(Vec<KeyValue>) + Send),
    ) -> Result<i64, StoreError> {
        self.list_paged(prefix, page).await
    }

    async fn watch(&self, prefix: &str, start_revision: i64) -> Result<WatchStream, StoreError> {
        let mut c = self.watcher.clone();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(start_revision)
            .with_progress_notify();
        let stream = self.timed(c.watch(prefix, Some(options))).await?;
        let this = self.clone();
        let (sender, responses) = stream.split();
        let items = responses.map(move |resp| {
            // Keep the request half alive for as long as the stream is polled.
            let _ = &sender;
            let resp = resp.map_err(|e| this.error(e))?;
            if resp.compact_revision() > 0 {
                return Ok(WatchItem::Compacted {
                    compact_revision: resp.compact_revision(),
                });
            }
            if resp.canceled() {
                return Err(StoreError::Failed(format!(
                    "watch canceled: {}",
                    resp.cancel_reason()
                )));
            }
            let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
            let mut events = Vec::with_capacity(resp.events().len());
            for e in resp.events() {
                let Some(k) = e.kv() else { continue };
                let k = kv(k)?;
                events.push(match e.event_type() {
                    EventType::Put => Event::Put(k),
                    EventType::Delete => Event::Delete {
                        key: k.key,
                        mod_revision: k.mod_revision,
                    },
                });
            }
            Ok(WatchItem::Batch { revision, events })
        });
        Ok(items.boxed())
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let compares: Vec<Compare> = txn
            .checks
            .iter()
            .filter_map(|(key, pre)| match pre {
                Precondition::Any => None,
                Precondition::Absent => Some(Compare::version(key.as_str(), CompareOp::Equal, 0)),
                Precondition::ModRevision(r) => {
                    Some(Compare::mod_revision(key.as_str(), CompareOp::Equal, *r))
                }
            })
            .collect();
        let ops: Vec<TxnOp> = txn
            .ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    let options = (lease != 0).then(|| PutOptions::new().with_lease(lease));
                    TxnOp::put(key, value, options)
                }
                Op::Delete { key } => TxnOp::delete(key, None),
            })
            .collect();
        let mut c = self.client.clone();
        let resp = self
            .timed(c.txn(etcd_client::Txn::new().when(compares).and_then(ops)))
            .await?;
        if resp.succeeded() {
            let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
            Ok(TxnOutcome::Applied { revision })
        } else {
            Ok(TxnOutcome::Refused)
        }
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<i64, StoreError> {
        let mut c = self.client.clone();
        let secs = ttl.as_secs().max(1) as i64;
        let resp = self.timed(c.lease_grant(secs, None)).await?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: i64) -> Result<Duration, StoreError> {
        let mut c = self.client.clone();
        match tokio::time::timeout(REQUEST_TIMEOUT, c.lease_keep_alive(lease)).await {
            Err(_) => Err(self.unavailable("keep-alive got no answer".into())),
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(_))) => {
                Err(StoreError::LeaseNotFound(lease))
            }
            Ok(Err(e)) => Err(self.error(e)),
            // The first answer carried a positive TTL (the client checks it); the lease
            // was refreshed. Dropping the keeper closes the stream; the lease stays.
            Ok(Ok((_keeper, _stream))) => {
                let mut c = self.client.clone();
                let ttl = self.timed(c.lease_time_to_live(lease, None)).await?;
                if ttl.ttl() <= 0 {
                    return Err(StoreError::LeaseNotFound(lease));
                }
                Ok(Duration::from_secs(ttl.ttl() as u64))
            }
        }
    }

    async fn revoke_lease(&self, lease: i64) -> Result<(), StoreError> {
        let mut c = self.client.clone();
        match self.timed(c.lease_revoke(lease)).await {
            Ok(_) => Ok(()),
            Err(StoreError::LeaseNotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        let mut c = self.client.clone();
        self.timed(c.compact(revision, None)).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_range_ends_after_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"/shardline/"), b"/shardline0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"a\xff\xff"), b"b".to_vec());
        // No upper bound: etcd's "\0" means every key from the start key on.
        assert_eq!(prefix_end(b"\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }
}

mod list;
