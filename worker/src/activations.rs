//! The inference memory budget: a request's activations — the output of every layer for
//! all its rows, 4 bytes a value — are reserved before the forward pass allocates them,
//! and held until that pass ends, even when the client has gone (a blocking forward
//! cannot be stopped half-way, and its memory is in use until it returns).
//!
//! Without it a model with one wide layer (the manifest allows 2²⁰) at the largest
//! batch asks for gigabytes per request, and a few at once kill the worker — after
//! which the router retries the other members and the whole shard goes. A request that
//! could never fit gets 413; one that fits but finds the budget taken waits a moment
//! for it and then gets 503 (the router fails over to another member).

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget is counted in KiB, so that a `u32` of permits covers 4 TiB.
const UNIT: u64 = 1024;

/// Bytes of activations a forward pass over `rows` rows of a model with layer widths
/// `dims` (input first) holds at most: every layer's output at once, as f32. An upper
/// bound (candle frees each input once the next layer is computed); saturating, so no
/// input can overflow it.
pub fn bytes_needed(rows: usize, dims: &[usize]) -> u64 {
    let values = dims
        .iter()
        .fold(0u64, |sum, &d| sum.saturating_add(d as u64));
    (rows as u64).saturating_mul(values).saturating_mul(4)
}

/// Why a request's activations were not reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// More than the whole budget: this request can never run here.
    TooLarge { need: u64, budget: u64 },
    /// The budget stayed in use by other requests for the whole wait.
    Busy { need: u64, budget: u64 },
}

/// The worker's inference memory; `gauge` always shows the bytes reserved.
#[derive(Debug, Clone)]
pub struct Activations {
    permits: Arc<Semaphore>,
    budget: u64,
    gauge: IntGauge,
}

/// Bytes reserved for one forward pass, given back (and the gauge updated) when dropped.
#[derive(Debug)]
pub struct Reserved {
    permit: Option<OwnedSemaphorePermit>,
    activations: Activations,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.activations.show();
    }
}

impl Activations {
    /// A budget of `bytes` (rounded down to whole KiB, at most 4 TiB), shown in `gauge`.
    pub fn new(bytes: u64, gauge: IntGauge) -> Self {
        let units = (bytes / UNIT).min(u64::from(u32::MAX));
        Self {
            permits: Arc::new(Semaphore::new(units as usize)),
            budget: units * UNIT,
            gauge,
        }
    }

    /// Reserves `need` bytes, waiting up to `wait` for others to give theirs back.
    pub async fn reserve(&self, need: u64, wait: Duration) -> Result<Reserved, Refusal> {
        let permit = self.acquire(need, wait).await?;
        let reserved = Reserved {
            permit: Some(permit),
            activations: self.clone(),
        };
        self.show();
        Ok(reserved)
    }

    fn show(&self) {
        self.gauge
            .set(i64::try_from(self.in_use()).unwrap_or(i64::MAX));
    }

    async fn acquire(&self, need: u64, wait: Duration) -> Result<OwnedSemaphorePermit, Refusal> {
        let units = need.div_ceil(UNIT).max(1);
        let refusal = Refusal::Busy {
            need,
            budget: self.budget,
        };
        let Ok(units) = u32::try_from(units) else {
            return Err(Refusal::TooLarge {
                need,
                budget: self.budget,
            });
        };
        if u64::from(units) * UNIT > self.budget {
            return Err(Refusal::TooLarge {
                need,
                budget: self.budget,
            });
        }
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_many_owned(units) {
            return Ok(permit);
        }
        match tokio::time::timeout(wait, Arc::clone(&self.permits).acquire_many_owned(units)).await
        {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(refusal),
        }
    }

    /// Bytes reserved right now.
    pub fn in_use(&self) -> u64 {
        let free = self.permits.available_permits() as u64 * UNIT;
        self.budget.saturating_sub(free)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn budget(bytes: u64) -> Activations {
        Activations::new(bytes, IntGauge::new("activation_bytes", "test").unwrap())
    }

    #[tokio::test]
    async fn reserves_within_the_budget_and_refuses_beyond_it() {
        let a = budget(1 << 20);
        let big = a.reserve(768 << 10, Duration::ZERO).await.unwrap();
        assert_eq!(a.in_use(), 768 << 10);
        assert_eq!(a.gauge.get(), 768 << 10);
        assert_eq!(
            a.reserve(512 << 10, Duration::from_millis(10))
                .await
                .unwrap_err(),
            Refusal::Busy {
                need: 512 << 10,
                budget: 1 << 20
            }
        );
        assert!(matches!(
            a.reserve(2 << 20, Duration::ZERO).await,
            Err(Refusal::TooLarge { .. })
        ));
        drop(big);
        assert_eq!(a.in_use(), 0);
        assert_eq!(a.gauge.get(), 0);
        let _ = a.reserve(1 << 20, Duration::ZERO).await.unwrap();
    }

    #[tokio::test]
    async fn a_waiter_gets_the_memory_when_it_is_given_back() {
        let a = budget(1 << 20);
        let held = a.reserve(1 << 20, Duration::ZERO).await.unwrap();
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move { a.reserve(1 << 20, Duration::from_secs(5)).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert!(waiter.await.unwrap());
    }

    proptest! {
        #[test]
        fn the_bound_never_overflows_and_grows_with_rows_and_widths(
            rows in any::<usize>(),
            dims in prop::collection::vec(any::<usize>(), 0..6),
        ) {
            let need = bytes_needed(rows, &dims);
            prop_assert!(need >= bytes_needed(rows / 2, &dims));
            let exact = dims
                .iter()
                .map(|&d| d as u128)
                .sum::<u128>()
                .saturating_mul(rows as u128 * 4);
            prop_assert_eq!(u128::from(need), exact.min(u128::from(u64::MAX)));
        }
    }
}
