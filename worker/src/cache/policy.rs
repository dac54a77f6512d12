//! The model cache's memory bookkeeping, as pure data: which entries are resident, how
//! many bytes each holds, who is using them, which loads have memory reserved, and which
//! entries to evict (least recently used first) to make room. No I/O, no async, no clock:
//! every operation that needs the time takes `now`, so the policy is tested with
//! property tests over random operation sequences (see `tests/policy.rs`).
//!
//! Invariant: `resident_bytes() + reserved_bytes() <= budget()` after every operation.
//!
//! A load's lifecycle is `reserve` (evicts unpinned entries and reserves the load's peak
//! bytes) → `commit` (the reservation becomes a resident entry of the actual size) or
//! `cancel` (the reservation is released). A resident entry is `pin`ned by each in-flight
//! user; pinned entries are never evicted and a pinned entry that is `remove`d is only
//! dropped when its last user `unpin`s it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What [`Policy::reserve`] decided for a load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission<K> {
    /// The load may start. The listed entries (least recently used first) have been
    /// removed from the accounting; the caller drops their values.
    Admit { evict: Vec<K> },
    /// The load's peak is larger than the whole budget: it can never fit.
    TooLarge,
    /// It would fit only once pinned entries or other loads' reservations are released:
    /// wait and retry. Nothing changed.
    Busy,
    /// The key is already resident or reserved. Nothing changed.
    Present,
}

/// What [`Policy::commit`] did with a finished load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit<K> {
    /// The entry is resident. `evict` is empty unless the actual size exceeded the
    /// reservation, in which case it lists the entries evicted to make room.
    Resident { evict: Vec<K> },
    /// The actual size is larger than the whole budget; the reservation was released.
    TooLarge,
    /// The actual size exceeds the reservation and the missing room is pinned or reserved;
    /// the reservation was released and the entry is not resident.
    NoRoom,
    /// There was no reservation for this key. Nothing changed.
    NotReserved,
}

/// What [`Policy::unpin`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// Other users still pin the entry.
    StillPinned,
    /// That was the last user: the entry is now evictable.
    Idle,
    /// That was the last user of an entry removed while pinned: it is gone now.
    Removed { bytes: u64 },
    /// The entry is not resident or was not pinned. Nothing changed.
    NotPinned,
}

/// What [`Policy::remove`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The entry was unpinned and is gone.
    Removed { bytes: u64 },
    /// The entry is pinned: it refuses new pins and goes when its last user unpins it.
    Deferred,
    /// The key is not resident (a reservation for it is left alone).
    Absent,
}

/// One resident entry, as listed by [`Policy::entries`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryInfo<'a, K> {
    pub key: &'a K,
    pub bytes: u64,
    pub last_used: Instant,
    pub pins: u32,
    /// Removed while pinned: goes when the last pin is released.
    pub draining: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    bytes: u64,
    last_used: Instant,
    /// Position in the LRU index; breaks ties between entries used at the same instant.
    seq: u64,
    pins: u32,
    draining: bool,
}

/// Memory bookkeeping of resident entries and in-progress loads within a byte budget.
#[derive(Debug, Clone)]
pub struct Policy<K> {
    budget: u64,
    entries: BTreeMap<K, Entry>,
    /// Every resident entry (pinned or not) by `(last_used, seq)`: least recent first.
    lru: BTreeMap<(Instant, u64), K>,
    /// In-progress loads and the peak bytes reserved for each.
    reservations: BTreeMap<K, u64>,
    resident: u64,
    reserved: u64,
    next_seq: u64,
}

impl<K: Ord + Clone> Policy<K> {
    /// An empty policy with `budget` bytes.
    pub fn new(budget: u64) -> Self {
        Self {
            budget,
            entries: BTreeMap::new(),
            lru: BTreeMap::new(),
            reservations: BTreeMap::new(),
            resident: 0,
            reserved: 0,
            next_seq: 0,
        }
    }

    /// The byte budget.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes held by resident entries.
    pub fn resident_bytes(&self) -> u64 {
        self.resident
    }

    /// Bytes reserved by in-progress loads (each at its peak).
    pub fn reserved_bytes(&self) -> u64 {
        self.reserved
    }

    /// Whether `key` is resident (draining or not).
    pub fn is_resident(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Whether a load of `key` holds a reservation.
    pub fn is_reserved(&self, key: &K) -> bool {
        self.reservations.contains_key(key)
    }

    /// Resident entries, least recently used first.
    pub fn entries(&self) -> impl Iterator<Item = EntryInfo<'_, K>> + '_ {
        self.lru.values().filter_map(|key| {
            self.entries.get(key).map(|e| EntryInfo {
                key,
                bytes: e.bytes,
                last_used: e.last_used,
                pins: e.pins,
                draining: e.draining,
            })
        })
    }

    /// Admits a load of `key` whose peak memory is `max(needed_for_load, resident_after)`
    /// (`needed_for_load` is what the load holds while running, transient copies
    /// included). On [`Admission::Admit`] the peak is reserved until `commit` or `cancel`.
    pub fn reserve(&mut self, key: K, needed_for_load: u64, resident_after: u64) -> Admission<K> {
        if self.entries.contains_key(&key) || self.reservations.contains_key(&key) {
            return Admission::Present;
        }
        let peak = needed_for_load.max(resident_after);
        if peak > self.budget {
            return Admission::TooLarge;
        }
        let Some(evict) = self.victims(peak.saturating_sub(self.free())) else {
            return Admission::Busy;
        };
        for victim in &evict {
            self.drop_entry(victim);
        }
        self.reservations.insert(key, peak);
        self.reserved += peak;
        Admission::Admit { evict }
    }

    /// Turns `key`'s reservation into a resident entry of `resident_bytes`, releasing the
    /// rest of the reservation. An entry larger than its reservation evicts more unpinned
    /// entries if it can (see [`Commit`]).
    pub fn commit(&mut self, key: K, resident_bytes: u64, now: Instant) -> Commit<K> {
        if !self.cancel(&key) {
            return Commit::NotReserved;
        }
        if resident_bytes > self.budget {
            return Commit::TooLarge;
        }
        let Some(evict) = self.victims(resident_bytes.saturating_sub(self.free())) else {
            return Commit::NoRoom;
        };
        for victim in &evict {
            self.drop_entry(victim);
        }
        let seq = self.bump_seq();
        self.lru.insert((now, seq), key.clone());
        let entry = Entry {
            bytes: resident_bytes,
            last_used: now,
            seq,
            pins: 0,
            draining: false,
        };
        self.entries.insert(key, entry);
        self.resident += resident_bytes;
        Commit::Resident { evict }
    }

    /// Releases a failed or abandoned load's reservation. False if there was none.
    pub fn cancel(&mut self, key: &K) -> bool {
        match self.reservations.remove(key) {
            Some(bytes) => {
                self.reserved -= bytes;
                true
            }
            None => false,
        }
    }

    /// Adds a user of `key` and marks it used at `now`. False (nothing changed) if the
    /// key is not resident or is draining.
    pub fn pin(&mut self, key: &K, now: Instant) -> bool {
        match self.entries.get_mut(key) {
            Some(entry) if !entry.draining => entry.pins += 1,
            _ => return false,
        }
        self.touch(key, now)
    }

    /// Releases a user of `key` and marks it used at `now` (idle time counts from the
    /// end of the last use).
    pub fn unpin(&mut self, key: &K, now: Instant) -> Released {
        let (pins, draining) = match self.entries.get_mut(key) {
            Some(entry) if entry.pins > 0 => {
                entry.pins -= 1;
                (entry.pins, entry.draining)
            }
            _ => return Released::NotPinned,
        };
        self.touch(key, now);
        match (pins, draining) {
            (0, true) => Released::Removed {
                bytes: self.drop_entry(key),
            },
            (0, false) => Released::Idle,
            _ => Released::StillPinned,
        }
    }

    /// Marks `key` used at `now` (never earlier than its last use). False if not resident.
    pub fn touch(&mut self, key: &K, now: Instant) -> bool {
        let seq = self.bump_seq();
        let Some(entry) = self.entries.get_mut(key) else {
            return false;
        };
        self.lru.remove(&(entry.last_used, entry.seq));
        entry.last_used = entry.last_used.max(now);
        entry.seq = seq;
        self.lru.insert((entry.last_used, seq), key.clone());
        true
    }

    /// Removes `key` now if unpinned, else once its last user unpins it.
    pub fn remove(&mut self, key: &K) -> Removal {
        match self.entries.get_mut(key) {
            None => Removal::Absent,
            Some(entry) if entry.pins > 0 => {
                entry.draining = true;
                Removal::Deferred
            }
            Some(_) => Removal::Removed {
                bytes: self.drop_entry(key),
            },
        }
    }

    /// Unpinned entries unused for longer than `ttl` at `now`, least recently used first.
    /// Nothing is removed.
    pub fn idle(&self, now: Instant, ttl: Duration) -> Vec<K> {
        self.entries()
            .take_while(|e| now.saturating_duration_since(e.last_used) > ttl)
            .filter(|e| e.pins == 0)
            .map(|e| e.key.clone())
            .collect()
    }

    fn free(&self) -> u64 {
        self.budget
            .saturating_sub(self.resident.saturating_add(self.reserved))
    }

    /// The least recently used unpinned entries that free at least `shortfall` bytes,
    /// or `None` if all of them together do not.
    fn victims(&self, shortfall: u64) -> Option<Vec<K>> {
        let mut victims = Vec::new();
        let mut freed = 0;
        for entry in self.entries().filter(|e| e.pins == 0) {
            if freed >= shortfall {
                break;
            }
            victims.push(entry.key.clone());
            freed += entry.bytes;
        }
        (freed >= shortfall).then_some(victims)
    }

    /// Forgets a resident entry; returns its bytes (0 if absent).
    fn drop_entry(&mut self, key: &K) -> u64 {
        let Some(entry) = self.entries.remove(key) else {
            return 0;
        };
        self.lru.remove(&(entry.last_used, entry.seq));
        self.resident -= entry.bytes;
        entry.bytes
    }

    fn bump_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }
}
