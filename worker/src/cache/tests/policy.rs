//! Property tests of [`Policy`]: random operation sequences run against the policy and a
//! naive reference model (a map plus a use counter). After every operation the budget
//! invariant must hold and the policy's entries must match the model's; every
//! operation's result must be the one the model predicts, which pins down LRU eviction
//! among unpinned entries only, minimal evictions, `Busy`, `TooLarge` and `idle`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::cache::policy::{Admission, Commit, Policy, Released, Removal};

const BUDGET: u64 = 100;

#[derive(Debug, Clone)]
enum Op {
    Reserve { key: u8, needed: u64, resident: u64 },
    Commit { key: u8, actual: u64 },
    Cancel { key: u8 },
    Pin { key: u8 },
    Unpin { key: u8 },
    Touch { key: u8 },
    Remove { key: u8 },
    Idle { ttl_ms: u64 },
    Advance { ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..6;
    prop_oneof![
        4 => (key.clone(), 1u64..=60, 0u64..=70).prop_map(|(key, resident, extra)| {
            Op::Reserve { key, needed: resident + extra, resident }
        }),
        4 => (key.clone(), 1u64..=110).prop_map(|(key, actual)| Op::Commit { key, actual }),
        1 => key.clone().prop_map(|key| Op::Cancel { key }),
        3 => key.clone().prop_map(|key| Op::Pin { key }),
        3 => key.clone().prop_map(|key| Op::Unpin { key }),
        2 => key.clone().prop_map(|key| Op::Touch { key }),
        1 => key.prop_map(|key| Op::Remove { key }),
        1 => (0u64..30).prop_map(|t| Op::Idle { ttl_ms: t * 100 }),
        // Whole tenths of a second, so ages often equal the TTL exactly.
        3 => (0u64..20).prop_map(|t| Op::Advance { ms: t * 100 }),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    bytes: u64,
    last_used_ms: u64,
    /// Value of the model's use counter at the last use: orders entries used at the
    /// same millisecond.
    used: u64,
    pins: u32,
    draining: bool,
}

/// The naive reference: what the policy should hold, computed the obvious way.
#[derive(Debug, Default)]
struct Model {
    entries: BTreeMap<u8, Entry>,
    reserved: BTreeMap<u8, u64>,
    now_ms: u64,
    uses: u64,
}

impl Model {
    fn lru(&self) -> Vec<(u8, &Entry)> {
        let mut all: Vec<_> = self.entries.iter().map(|(k, e)| (*k, e)).collect();
        all.sort_by_key(|(_, e)| (e.last_used_ms, e.used));
        all
    }

    fn free(&self) -> u64 {
        let resident: u64 = self.entries.values().map(|e| e.bytes).sum();
        BUDGET - resident - self.reserved.values().sum::<u64>()
    }

    /// The shortest LRU-first run of unpinned entries freeing `needed` bytes.
    fn victims(&self, needed: u64) -> Option<Vec<u8>> {
        let (mut free, mut victims) = (self.free(), Vec::new());
        for (key, entry) in self.lru().into_iter().filter(|(_, e)| e.pins == 0) {
            if free >= needed {
                break;
            }
            free += entry.bytes;
            victims.push(key);
        }
        (free >= needed).then_some(victims)
    }

    fn use_entry(&mut self, key: u8) {
        self.uses += 1;
        let (now, uses) = (self.now_ms, self.uses);
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.last_used_ms = now;
            entry.used = uses;
        }
    }
}

fn check_op(policy: &mut Policy<u8>, model: &mut Model, base: Instant, op: Op) {
    let now = base + Duration::from_millis(model.now_ms);
    match op {
        Op::Reserve {
            key,
            needed,
            resident,
        } => {
            let got = policy.reserve(key, needed, resident);
            let peak = needed.max(resident);
            let present = model.entries.contains_key(&key) || model.reserved.contains_key(&key);
            assert_eq!(
                got == Admission::TooLarge,
                !present && peak > BUDGET,
                "TooLarge iff peak > budget"
            );
            let want = if present {
                Admission::Present
            } else if peak > BUDGET {
                Admission::TooLarge
            } else {
                match model.victims(peak) {
                    Some(evict) => Admission::Admit { evict },
                    None => Admission::Busy,
                }
            };
            assert_eq!(
                got, want,
                "reserve({key}, {needed}, {resident}) in {model:?}"
            );
            if let Admission::Admit { evict } = got {
                for victim in &evict {
                    assert_eq!(model.entries[victim].pins, 0, "evicted a pinned entry");
                    model.entries.remove(victim);
                }
                model.reserved.insert(key, peak);
            }
        }
        Op::Commit { key, actual } => {
            let got = policy.commit(key, actual, now);
            let want = match model.reserved.remove(&key) {
                None => Commit::NotReserved,
                Some(_) if actual > BUDGET => Commit::TooLarge,
                Some(_) => match model.victims(actual) {
                    None => Commit::NoRoom,
                    Some(evict) => Commit::Resident { evict },
                },
            };
            assert_eq!(got, want, "commit({key}, {actual}) in {model:?}");
            if let Commit::Resident { evict } = got {
                for victim in &evict {
                    assert_eq!(model.entries[victim].pins, 0, "evicted a pinned entry");
                    model.entries.remove(victim);
                }
                let entry = Entry {
                    bytes: actual,
                    last_used_ms: 0,
                    used: 0,
                    pins: 0,
                    draining: false,
                };
                model.entries.insert(key, entry);
                model.use_entry(key);
            }
        }
        Op::Cancel { key } => {
            assert_eq!(policy.cancel(&key), model.reserved.remove(&key).is_some());
        }
        Op::Pin { key } => {
            let want = model.entries.get(&key).is_some_and(|e| !e.draining);
            assert_eq!(policy.pin(&key, now), want);
            if want {
                model.entries.entry(key).and_modify(|e| e.pins += 1);
                model.use_entry(key);
            }
        }
        Op::Unpin { key } => {
            let got = policy.unpin(&key, now);
            let want = match model.entries.get_mut(&key) {
                Some(entry) if entry.pins > 0 => {
                    entry.pins -= 1;
                    match (entry.pins, entry.draining) {
                        (0, true) => Released::Removed { bytes: entry.bytes },
                        (0, false) => Released::Idle,
                        _ => Released::StillPinned,
                    }
                }
                _ => Released::NotPinned,
            };
            assert_eq!(got, want);
            match got {
                Released::Removed { .. } => drop(model.entries.remove(&key)),
                Released::Idle | Released::StillPinned => model.use_entry(key),
                Released::NotPinned => {}
            }
        }
        Op::Touch { key } => {
            assert_eq!(policy.touch(&key, now), model.entries.contains_key(&key));
            model.use_entry(key);
        }
        Op::Remove { key } => {
            let want = match model.entries.get_mut(&key) {
                None => Removal::Absent,
                Some(entry) if entry.pins > 0 => {
                    entry.draining = true;
                    Removal::Deferred
                }
                Some(entry) => Removal::Removed { bytes: entry.bytes },
            };
            if let Removal::Removed { .. } = want {
                model.entries.remove(&key);
            }
            assert_eq!(policy.remove(&key), want);
        }
        Op::Idle { ttl_ms } => {
            let want: Vec<u8> = model
                .lru()
                .into_iter()
                .filter(|(_, e)| e.pins == 0 && model.now_ms - e.last_used_ms > ttl_ms)
                .map(|(k, _)| k)
                .collect();
            assert_eq!(
                policy.idle(now, Duration::from_millis(ttl_ms)),
                want,
                "idle({ttl_ms})"
            );
        }
        Op::Advance { ms } => model.now_ms += ms,
    }
}

fn check_state(policy: &Policy<u8>, model: &Model, base: Instant) {
    assert!(
        policy.resident_bytes() + policy.reserved_bytes() <= policy.budget(),
        "resident {} + reserved {} exceed the budget",
        policy.resident_bytes(),
        policy.reserved_bytes()
    );
    let listed: Vec<_> = policy
        .entries()
        .map(|e| (*e.key, e.bytes, e.last_used, e.pins, e.draining))
        .collect();
    let want: Vec<_> = model
        .lru()
        .into_iter()
        .map(|(k, e)| {
            let last_used = base + Duration::from_millis(e.last_used_ms);
            (k, e.bytes, last_used, e.pins, e.draining)
        })
        .collect();
    assert_eq!(listed, want, "entries, least recently used first");
    assert_eq!(
        policy.resident_bytes(),
        model.entries.values().map(|e| e.bytes).sum::<u64>()
    );
    assert_eq!(
        policy.reserved_bytes(),
        model.reserved.values().sum::<u64>()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn test_proptest_policy_matches_model_and_stays_within_budget(
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let base = Instant::now();
        let mut policy = Policy::new(BUDGET);
        let mut model = Model::default();
        for op in ops {
            check_op(&mut policy, &mut model, base, op);
            check_state(&policy, &model, base);
        }
    }

    #[test]
    fn test_proptest_too_large_iff_peak_exceeds_budget(
        budget in 0u64..1_000, needed in 0u64..2_000, resident in 0u64..2_000,
    ) {
        let mut policy = Policy::new(budget);
        let admitted = policy.reserve("m", needed, resident);
        prop_assert_eq!(admitted == Admission::TooLarge, needed.max(resident) > budget);
    }
}

#[test]
fn commit_releases_the_transient_part_of_the_reservation() {
    let mut policy = Policy::new(100);
    assert_eq!(
        policy.reserve('a', 80, 40),
        Admission::Admit { evict: vec![] }
    );
    assert_eq!(policy.reserved_bytes(), 80);
    assert_eq!(
        policy.commit('a', 40, Instant::now()),
        Commit::Resident { evict: vec![] }
    );
    assert_eq!((policy.resident_bytes(), policy.reserved_bytes()), (40, 0));
}

#[test]
fn load_waits_for_room_held_by_another_load_not_by_evicting_pinned() {
    let now = Instant::now();
    let mut policy = Policy::new(100);
    assert_eq!(
        policy.reserve('a', 60, 30),
        Admission::Admit { evict: vec![] }
    );
    assert_eq!(policy.reserve('b', 60, 30), Admission::Busy);
    assert_eq!(
        policy.commit('a', 30, now),
        Commit::Resident { evict: vec![] }
    );
    assert!(policy.pin(&'a', now));
    assert_eq!(
        policy.reserve('b', 60, 30),
        Admission::Admit { evict: vec![] }
    );
    assert_eq!(
        policy.reserve('c', 20, 20),
        Admission::Busy,
        "'a' is pinned, 'b' loading"
    );
}

#[test]
fn removed_pinned_entry_refuses_pins_and_goes_with_its_last_unpin() {
    let now = Instant::now();
    let mut policy = Policy::new(100);
    policy.reserve('a', 10, 10);
    policy.commit('a', 10, now);
    assert!(policy.pin(&'a', now));
    assert_eq!(policy.remove(&'a'), Removal::Deferred);
    assert!(!policy.pin(&'a', now), "draining entries take no new users");
    assert_eq!(
        policy.idle(now + Duration::from_secs(60), Duration::ZERO),
        Vec::<char>::new()
    );
    assert_eq!(policy.unpin(&'a', now), Released::Removed { bytes: 10 });
    assert_eq!(policy.resident_bytes(), 0);
}
