//! Listing a prefix in pages, every page at the revision of the first, so the whole
//! listing is one consistent cut however large the prefix is (one unpaginated range over
//! 100,000 tenants would be hundreds of MiB in one gRPC message).
//!
//! etcd counts every key from a page's start to the end of the range on each request
//! (3.4 and 3.5 alike), so many small pages cost O(keys² / page): 800,000 keys in pages
//! of 1,000 took 40 s. Pages are therefore sized from the largest key + value seen so far
//! ([`next_page`]: about [`PAGE_BYTES`] each, at most [`LIST_PAGE_MAX`] keys), starting
//! at [`LIST_PAGE`]; a page that still exceeds the client's decoding limit (bigger values
//! further on) is asked again with an eighth of the keys.
//!
//! Each page is handed on as soon as it arrives and then dropped: a watcher builds its
//! snapshot page by page, so a router listing 100,000 tenants never holds the whole
//! listing (≈ 2 KiB per tenant-model, which the allocator would keep afterwards).

use etcd_client::GetOptions;

use super::{EtcdStore, REQUEST_TIMEOUT, kv, prefix_end};
use crate::store::{KeyValue, StoreError};

/// Keys in the first range request of a listing.
pub const LIST_PAGE: i64 = 1000;

/// Most keys in one range request of a listing.
pub const LIST_PAGE_MAX: i64 = 20_000;

/// Bytes a listing page aims at, from the largest key + value seen so far.
pub const PAGE_BYTES: usize = 32 << 20;

/// The largest gRPC message the client decodes: a page of [`PAGE_BYTES`] with room for
/// values larger than those seen so far, or one watch response. etcd's own default
/// request limit is 1.5 MiB, and [`crate::ops`] refuses values over 64 KiB.
pub const MAX_MESSAGE: usize = 128 << 20;

/// Keys to ask for in the next page, when the largest key + value seen is `largest`
/// bytes and responses may be up to `max_message` bytes: about [`PAGE_BYTES`], or a
/// quarter of the limit when that is smaller.
pub fn next_page(largest: usize, max_message: usize) -> i64 {
    let keys = PAGE_BYTES.min(max_message / 4) / largest.max(1);
    i64::try_from(keys)
        .unwrap_or(i64::MAX)
        .clamp(1, LIST_PAGE_MAX)
}

impl EtcdStore {
    /// Every key under `prefix` at one revision, a page at a time; returns the revision.
    pub(super) async fn list_paged(
        &self,
        prefix: &str,
        page: &mut (dyn FnMut(Vec<KeyValue>) + Send),
    ) -> Result<i64, StoreError> {
        let end = prefix_end(prefix.as_bytes());
        let mut from = prefix.as_bytes().to_vec();
        let (mut revision, mut limit, mut largest) = (0, LIST_PAGE, 0);
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(limit);
            if revision > 0 {
                // Every later page at the first page's revision: one consistent cut.
                options = options.with_revision(revision);
            }
            let mut c = self.kv.clone();
            let resp =
                match tokio::time::timeout(REQUEST_TIMEOUT, c.get(from.clone(), Some(options)))
                    .await
                {
                    Ok(Err(etcd_client::Error::GRpcStatus(s)))
                        if s.code() == tonic::Code::OutOfRange && limit > 1 =>
                    {
                        // Larger values than seen so far: the same page, fewer keys.
                        limit = (limit / 8).max(1);
                        continue;
                    }
                    Ok(r) => r.map_err(|e| self.error(e))?,
                    Err(_) => {
                        return Err(self.unavailable(format!(
                            "no answer within {} s",
                            REQUEST_TIMEOUT.as_secs()
                        )));
                    }
                };
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or_default();
            }
            let mut kvs = Vec::with_capacity(resp.kvs().len());
            for item in resp.kvs() {
                largest = largest.max(item.key().len() + item.value().len());
                kvs.push(kv(item)?);
            }
            limit = next_page(largest, self.max_message);
            let next = match resp.kvs().last() {
                Some(last) if resp.more() => {
                    let mut key = last.key().to_vec();
                    key.push(0);
                    Some(key)
                }
                _ => None,
            };
            drop(resp);
            page(kvs);
            match next {
                Some(key) => from = key,
                None => return Ok(revision),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_hold_about_page_bytes_within_the_key_bounds() {
        assert_eq!(
            next_page(1_000, MAX_MESSAGE),
            LIST_PAGE_MAX,
            "small values: the most keys"
        );
        assert_eq!(
            next_page(64 << 10, MAX_MESSAGE),
            512,
            "64 KiB values: 32 MiB"
        );
        assert_eq!(next_page(usize::MAX, MAX_MESSAGE), 1);
        assert_eq!(next_page(0, MAX_MESSAGE), LIST_PAGE_MAX);
        // A full page of the first size always fits the client's limit, even at the
        // largest value ControlPlane writes (plus a long key).
        let worst = crate::ops::MAX_VALUE_BYTES + 1024;
        assert!(LIST_PAGE as usize * worst <= MAX_MESSAGE);
        assert!(next_page(worst, MAX_MESSAGE) as usize * worst <= MAX_MESSAGE);
    }
}
