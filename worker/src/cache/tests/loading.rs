//! Loading: concurrent cold calls share one loader call, failures reach every waiter and
//! are cached for the backoff, an abandoned load hands over to a waiting call, and sizes
//! beyond the budget or the hint are refused.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::time::{advance, sleep};

use super::{Loads, Recorder, accounted, cache, cache_with, get, in_secs};
use crate::cache::{CacheConfig, CacheError, EvictReason, LoadSize};

#[tokio::test(start_paused = true)]
async fn fifty_concurrent_cold_gets_share_one_loader_call() {
    let (cache, events) = cache(1_000);
    let loads = Loads::default();
    let slow = || loads.after(Duration::from_millis(100), Ok(100));
    let gets = join_all((0..50).map(|_| get(&cache, "m", 100, slow())));
    let leases: Vec<_> = gets.await.into_iter().map(Result::unwrap).collect();
    assert_eq!(loads.calls(), 1);
    assert!(leases.iter().all(|lease| Arc::ptr_eq(lease, &leases[0])));
    assert_eq!(cache.resident()[0].leases, 50);
    assert_eq!(Recorder::count(&events.waits), 50, "every call waited");
    drop(leases);
    assert_eq!(cache.resident()[0].leases, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_cold_gets_on_many_threads_share_one_loader_call() {
    let (cache, _) = cache(1_000);
    let loads = Loads::default();
    let tasks = (0..50).map(|_| {
        let (cache, loader) = (
            cache.clone(),
            loads.after(Duration::from_millis(5), Ok(100)),
        );
        tokio::spawn(async move { get(&cache, "m", 100, loader).await })
    });
    let leases: Vec<_> = join_all(tasks)
        .await
        .into_iter()
        .map(|t| t.unwrap().unwrap())
        .collect();
    assert_eq!(loads.calls(), 1);
    assert!(leases.iter().all(|lease| Arc::ptr_eq(lease, &leases[0])));
}

#[tokio::test(start_paused = true)]
async fn failed_load_reaches_every_waiter_then_fails_fast_until_the_backoff_ends() {
    let (cache, events) = cache(1_000);
    let loads = Loads::default();
    let failing = || loads.after(Duration::from_millis(50), Err("bucket unreachable"));
    let gets = join_all((0..10).map(|_| get(&cache, "m", 1, failing())));
    let errors: Vec<_> = gets.await.into_iter().map(Result::unwrap_err).collect();
    assert_eq!(loads.calls(), 1);
    let CacheError::LoadFailed {
        error: first,
        retry_after,
    } = &errors[0]
    else {
        panic!()
    };
    assert_eq!(first.0, "bucket unreachable");
    assert_eq!(*retry_after, Duration::from_secs(1));
    for error in &errors {
        assert!(matches!(error, CacheError::LoadFailed { error, .. } if Arc::ptr_eq(error, first)));
    }

    advance(Duration::from_millis(400)).await;
    let during = get(&cache, "m", 1, loads.ok(1)).await.unwrap_err();
    let CacheError::LoadFailed { retry_after, .. } = during else {
        panic!("{during:?}")
    };
    assert_eq!(retry_after, Duration::from_millis(600));
    assert_eq!(loads.calls(), 1, "failed fast, without loading");

    advance(Duration::from_millis(600)).await;
    let lease = get(&cache, "m", 1, loads.ok(1)).await.unwrap();
    assert_eq!(lease.bytes, 1);
    assert_eq!(loads.calls(), 2, "loaded again after the backoff");
    assert_eq!(Recorder::count(&events.failed), 1);
    assert_eq!(Recorder::count(&events.loaded), 1);
}

#[tokio::test(start_paused = true)]
async fn dropped_leader_releases_its_reservation_and_a_waiting_call_loads_instead() {
    let (cache, _) = cache(100);
    let loads = Loads::default();
    let spawn_get = |loader| {
        let cache = cache.clone();
        tokio::spawn(async move { get(&cache, "m", 50, loader).await.map(drop) })
    };
    let leader = spawn_get(loads.never());
    sleep(Duration::from_millis(1)).await;
    assert_eq!(accounted(&cache), (0, 50));
    let follower = spawn_get(loads.ok(50));
    sleep(Duration::from_millis(1)).await;
    assert_eq!(loads.calls(), 1, "the follower waits for the leader");

    leader.abort();
    follower.await.unwrap().unwrap();
    assert_eq!(loads.calls(), 2);
    assert_eq!(accounted(&cache), (50, 0));

    let timed_out =
        tokio::time::timeout(Duration::from_secs(1), get(&cache, "n", 30, loads.never()));
    assert!(timed_out.await.is_err());
    assert_eq!(
        accounted(&cache),
        (50, 0),
        "a timed-out load gives its room back"
    );
}

#[tokio::test(start_paused = true)]
async fn model_larger_than_the_budget_is_too_large() {
    let (cache, _) = cache(100);
    let loads = Loads::default();
    let peak = LoadSize {
        transient: 150,
        resident: 80,
    };
    let error = cache
        .get_or_load("big", peak, in_secs(1), loads.ok(80))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            CacheError::TooLarge {
                needed: 150,
                budget: 100
            }
        ),
        "{error:?}"
    );
    assert_eq!(loads.calls(), 0, "refused before loading");
    assert_eq!(
        error.to_string(),
        "model needs 150 bytes, more than the cache budget of 100 bytes"
    );

    let lying = get(&cache, "liar", 10, loads.ok(101)).await.unwrap_err();
    assert!(
        matches!(
            lying,
            CacheError::TooLarge {
                needed: 101,
                budget: 100
            }
        ),
        "{lying:?}"
    );
    assert_eq!(accounted(&cache), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn model_larger_than_its_hint_evicts_for_the_difference_or_fails() {
    let (cache, events) = cache(100);
    let loads = Loads::default();
    drop(get(&cache, "a", 40, loads.ok(40)).await.unwrap());
    let _b = get(&cache, "b", 40, loads.ok(70)).await.unwrap();
    assert_eq!(events.evicted(EvictReason::Memory), ["a"]);
    assert_eq!(accounted(&cache), (70, 0));

    let error = get(&cache, "c", 20, loads.ok(60)).await.unwrap_err();
    assert!(matches!(
        error,
        CacheError::SizeHintExceeded {
            hinted: 20,
            actual: 60
        }
    ));
    let cached = get(&cache, "c", 20, loads.ok(60)).await.unwrap_err();
    assert!(
        matches!(cached, CacheError::SizeHintExceeded { .. }),
        "cached like a failure"
    );
    assert_eq!(loads.calls(), 3);
    assert_eq!(accounted(&cache), (70, 0));
}

#[tokio::test(start_paused = true)]
async fn failed_load_reaches_every_waiter_even_without_a_backoff() {
    let config = CacheConfig {
        failure_backoff: Duration::ZERO,
        ..CacheConfig::new(100)
    };
    let (cache, _) = cache_with(config);
    let loads = Loads::default();
    let failing = || loads.after(Duration::from_millis(50), Err("corrupt"));
    let gets = join_all((0..10).map(|_| get(&cache, "m", 1, failing())));
    assert!(
        gets.await
            .iter()
            .all(|r| matches!(r, Err(CacheError::LoadFailed { .. })))
    );
    assert_eq!(loads.calls(), 1);
    drop(get(&cache, "m", 1, loads.ok(1)).await.unwrap());
    assert_eq!(loads.calls(), 2, "no backoff: the next call loads again");
}
