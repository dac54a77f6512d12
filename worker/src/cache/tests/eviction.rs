//! Eviction: LRU within the budget, transient bytes, leases pin their model (loads that
//! need its room wait, up to their deadline), idle sweeps, and explicit removal.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{advance, sleep};

use super::{
    Key, Loads, Model, Recorder, accounted, assert_within_budget, cache, get, in_secs, size,
};
use crate::cache::{CacheError, EvictReason, LoadSize, Removal};

#[tokio::test(start_paused = true)]
async fn cycling_five_models_through_room_for_three_evicts_lru_within_budget() {
    let (cache, events) = cache(30);
    let keys = ["a", "b", "c", "d", "e"];
    for (step, key) in keys.iter().cycle().take(15).enumerate() {
        let checked = cache.clone();
        let loader = move || async move {
            assert_within_budget(&checked);
            assert_eq!(accounted(&checked).1, 10, "the load's room is reserved");
            Ok(Model { bytes: 10 })
        };
        drop(
            get(&cache, key, 10, Box::new(move || Box::pin(loader())))
                .await
                .unwrap(),
        );
        assert_within_budget(&cache);
        let evicted = events.evicted(EvictReason::Memory);
        let want: Vec<Key> = keys
            .iter()
            .cycle()
            .take(step.saturating_sub(2))
            .copied()
            .collect();
        assert_eq!(evicted, want, "after loading {key} (step {step})");
        advance(Duration::from_millis(10)).await;
    }
    let resident: Vec<Key> = cache.resident().into_iter().map(|r| r.key).collect();
    assert_eq!(resident, ["c", "d", "e"], "least recently used first");
    assert_eq!(Recorder::count(&events.loaded), 15);
}

#[tokio::test(start_paused = true)]
async fn transient_bytes_are_reserved_during_the_load_and_released_at_commit() {
    let (cache, events) = cache(40);
    let loads = Loads::default();
    let twice = LoadSize {
        transient: 20,
        resident: 10,
    };
    for key in ["a", "b", "c"] {
        drop(
            cache
                .get_or_load(key, twice, in_secs(1), loads.ok(10))
                .await
                .unwrap(),
        );
    }
    assert_eq!(accounted(&cache), (30, 0));
    let checked = cache.clone();
    let loader = move || async move {
        assert_eq!(
            accounted(&checked),
            (20, 20),
            "one model evicted for the transient peak"
        );
        Ok(Model { bytes: 10 })
    };
    drop(
        cache
            .get_or_load("d", twice, in_secs(1), loader)
            .await
            .unwrap(),
    );
    assert_eq!(events.evicted(EvictReason::Memory), ["a"]);
    assert_eq!(accounted(&cache), (30, 0));
}

#[tokio::test(start_paused = true)]
async fn load_needing_a_leased_models_room_waits_for_the_lease_to_drop() {
    let (cache, events) = cache(10);
    let loads = Loads::default();
    let lease_a = get(&cache, "a", 10, loads.ok(10)).await.unwrap();
    let get_b = tokio::spawn({
        let (cache, loader) = (cache.clone(), loads.ok(10));
        async move { cache.get_or_load("b", size(10), in_secs(10), loader).await }
    });
    sleep(Duration::from_secs(5)).await;
    assert!(!get_b.is_finished());
    assert_eq!(loads.calls(), 1, "b waits for room before loading");
    assert_eq!(
        cache.resident()[0].key,
        "a",
        "a leased model is never evicted"
    );

    drop(lease_a);
    let lease_b = get_b.await.unwrap().unwrap();
    assert_eq!(lease_b.bytes, 10);
    assert_eq!(loads.calls(), 2);
    assert_eq!(events.evicted(EvictReason::Memory), ["a"]);
}

#[tokio::test(start_paused = true)]
async fn load_needing_a_leased_models_room_fails_with_no_room_at_its_deadline() {
    let (cache, _) = cache(10);
    let loads = Loads::default();
    let _lease_a = get(&cache, "a", 10, loads.ok(10)).await.unwrap();
    let error = cache
        .get_or_load("b", size(10), in_secs(2), loads.ok(10))
        .await;
    let error = error.unwrap_err();
    assert!(matches!(error, CacheError::NoRoom { waited } if waited == Duration::from_secs(2)));
    assert_eq!(loads.calls(), 1);
    assert_eq!(cache.resident()[0].leases, 1);
    assert_eq!(accounted(&cache), (10, 0));
}

#[tokio::test(start_paused = true)]
async fn idle_sweep_unloads_only_models_unused_past_the_ttl_and_never_a_leased_one() {
    let (cache, events) = cache(100);
    let loads = Loads::default();
    let ttl = Duration::from_secs(60);
    drop(get(&cache, "a", 10, loads.ok(10)).await.unwrap());
    drop(get(&cache, "b", 10, loads.ok(10)).await.unwrap());
    let lease_c = get(&cache, "c", 10, loads.ok(10)).await.unwrap();
    advance(Duration::from_secs(30)).await;
    drop(get(&cache, "b", 10, loads.never()).await.unwrap());
    advance(Duration::from_secs(30)).await;
    assert_eq!(
        cache.sweep_idle(ttl),
        Vec::<Key>::new(),
        "a is idle exactly the TTL"
    );
    advance(Duration::from_secs(10)).await;
    assert_eq!(cache.sweep_idle(ttl), ["a"]);
    advance(Duration::from_secs(30)).await;
    assert_eq!(cache.sweep_idle(ttl), ["b"], "c is leased");
    assert_eq!(cache.resident()[0].idle_for, Duration::from_secs(100));

    drop(lease_c);
    let sweeper = cache.spawn_idle_sweeper(ttl, Duration::from_secs(10));
    sleep(Duration::from_secs(65)).await;
    assert_eq!(
        cache.resident().len(),
        1,
        "c idles 65 s; the sweeper last ran at 60 s"
    );
    sleep(Duration::from_secs(10)).await;
    assert!(cache.resident().is_empty());
    assert_eq!(events.evicted(EvictReason::Idle), ["a", "b", "c"]);
    sweeper.abort();
}

#[tokio::test(start_paused = true)]
async fn removing_a_leased_model_unloads_it_when_its_last_lease_drops() {
    let (cache, events) = cache(100);
    let loads = Loads::default();
    drop(get(&cache, "a", 10, loads.ok(10)).await.unwrap());
    assert_eq!(cache.remove(&"a"), Removal::Removed { bytes: 10 });
    assert_eq!(cache.remove(&"a"), Removal::Absent);

    let old = get(&cache, "b", 10, loads.ok(10)).await.unwrap();
    assert_eq!(cache.remove(&"b"), Removal::Deferred);
    assert!(cache.resident()[0].draining);
    let reload = tokio::spawn({
        let (cache, loader) = (cache.clone(), loads.ok(10));
        async move { cache.get_or_load("b", size(10), in_secs(10), loader).await }
    });
    sleep(Duration::from_secs(1)).await;
    assert!(
        !reload.is_finished(),
        "new calls wait for the draining model to go"
    );
    assert_eq!(loads.calls(), 2);

    let old_model = Arc::clone(&old);
    drop(old);
    let new = reload.await.unwrap().unwrap();
    assert!(!Arc::ptr_eq(&new, &old_model), "loaded afresh");
    assert_eq!(loads.calls(), 3);
    assert_eq!(events.evicted(EvictReason::Explicit), ["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn events_count_loads_and_evictions_by_reason() {
    let (cache, events) = cache(20);
    let loads = Loads::default();
    for key in ["a", "b", "c"] {
        drop(get(&cache, key, 10, loads.ok(10)).await.unwrap());
    }
    assert_eq!(cache.remove(&"b"), Removal::Removed { bytes: 10 });
    let corrupt = loads.after(Duration::ZERO, Err("corrupt"));
    get(&cache, "d", 10, corrupt).await.unwrap_err();
    drop(get(&cache, "c", 10, loads.never()).await.unwrap());
    advance(Duration::from_secs(61)).await;
    assert_eq!(cache.sweep_idle(Duration::from_secs(60)), ["c"]);

    assert_eq!(Recorder::count(&events.loaded), 3);
    assert_eq!(Recorder::count(&events.failed), 1);
    assert_eq!(
        Recorder::count(&events.waits),
        4,
        "cold calls only, not the hit on c"
    );
    let evictions = events.evictions.lock().unwrap().clone();
    let want = [
        ("a", EvictReason::Memory, 10),
        ("b", EvictReason::Explicit, 10),
        ("c", EvictReason::Idle, 10),
    ];
    assert_eq!(evictions, want);
}
