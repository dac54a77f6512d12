//! Applying one watch event to a snapshot copies only what changed: the bytes allocated
//! by one `apply` on a clone (the previous snapshot still held, as a request would) do
//! not grow with the number of tenants, models, assignments or resident entries.

use shardline_shared::keys::Prefix;
use shardline_shared::snapshot::{Change, Snapshot};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated while `f` runs. The counter is process-wide, so this binary holds
/// a single test: nothing else allocates meanwhile.
fn allocated_by(f: impl FnOnce()) -> usize {
    let region = Region::new(GLOBAL);
    f();
    region.change().bytes_allocated
}

const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A snapshot of `n` tenants, each with a key, a live model and an assignment, and a
/// resident entry on one of 100 workers.
fn fleet(n: usize) -> Snapshot {
    let tenant = |i: usize| {
        let digest = format!("{:08x}{}", i, &DIGEST[8..]);
        format!(r#"{{"keys":[{{"id":"k1","sha256":"{digest}","created_at":1}}]}}"#)
    };
    let mut kvs: Vec<(String, String)> = Vec::with_capacity(n * 4);
    for i in 0..n {
        kvs.push((format!("/shardline/tenants/t{i}"), tenant(i)));
        kvs.push((
            format!("/shardline/models/t{i}/m"),
            r#"{"version":"1"}"#.into(),
        ));
        kvs.push((
            format!("/shardline/assignments/t{i}/m"),
            format!(
                r#"{{"workers":["w{}","w{}"],"epoch":1}}"#,
                i % 100,
                (i + 1) % 100
            ),
        ));
        kvs.push((
            format!("/shardline/resident/w{}/t{i}/m/1", i % 100),
            r#"{"bytes":1000}"#.into(),
        ));
    }
    let (snap, invalid) = Snapshot::from_kvs(
        Prefix::default(),
        1,
        kvs.iter().map(|(k, v)| (k.as_str(), v.as_bytes(), 1)),
    );
    assert!(
        invalid.is_empty(),
        "{} refused, first: {:?}",
        invalid.len(),
        invalid.first()
    );
    snap
}

/// Bytes allocated by the worst of several single-event applies on a clone of `snap`.
fn worst_event_cost(snap: &Snapshot, n: usize) -> usize {
    let middle = n / 2;
    let tenant = format!(
        r#"{{"keys":[{{"id":"k2","sha256":"{}","created_at":2}}]}}"#,
        DIGEST.replace('0', "f")
    );
    let assignment = r#"{"workers":["w7","w8"],"epoch":2}"#.to_owned();
    let events: Vec<(String, Option<String>)> = vec![
        (
            format!("/shardline/assignments/t{middle}/m"),
            Some(assignment),
        ),
        (format!("/shardline/tenants/t{middle}"), Some(tenant)),
        (
            format!("/shardline/models/t{middle}/m"),
            Some(r#"{"version":"2"}"#.into()),
        ),
        (
            format!("/shardline/resident/w3/t{middle}/m/1"),
            Some(r#"{"bytes":5}"#.into()),
        ),
        (
            format!("/shardline/resident/w{}/t{middle}/m/1", middle % 100),
            None,
        ),
        (format!("/shardline/tenants/t{}", middle + 1), None),
    ];
    let mut worst = 0;
    for (key, value) in &events {
        let mut next = snap.clone();
        let bytes = allocated_by(|| {
            let change = match value {
                Some(v) => Change::Put {
                    key,
                    value: v.as_bytes(),
                    mod_revision: 2,
                },
                None => Change::Delete { key },
            };
            next.apply(change).expect("every event is valid");
        });
        worst = worst.max(bytes);
        assert!(
            next.revision() == snap.revision(),
            "the clone is a new view, the original is unchanged"
        );
    }
    worst
}

#[test]
fn one_event_costs_the_same_at_2_000_and_40_000_tenants() {
    let (small_n, large_n) = (2_000, 40_000);
    let small = worst_event_cost(&fleet(small_n), small_n);
    let large = worst_event_cost(&fleet(large_n), large_n);
    eprintln!("one event: {small} bytes at {small_n} tenants, {large} at {large_n}");
    // A path copy is a few B+tree nodes of at most 64 entries each: it may grow by a
    // node level between the two sizes, never in proportion to them (20×). A copy of a
    // whole section of 40,000 entries would be megabytes.
    assert!(
        large <= small * 2 + 16 * 1024,
        "one event allocated {large} bytes at {large_n} tenants vs {small} at {small_n}"
    );
    assert!(large < 256 * 1024, "one event allocated {large} bytes");
}
