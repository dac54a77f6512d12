//! What one tenant-model costs in a snapshot, part by part: the heap bytes a listing of
//! 100,000 of them leaves allocated, per tenant-model, each part measured as what it
//! adds to the parts before it. Each part has a ceiling a little above what it costs
//! today, so a regression (such as a `BTreeMap` node reserving 11 versions for a
//! one-version model, a `Vec` keeping room for four key digests, or a config copied per
//! model instead of shared, or a listing left in half-empty B-tree leaves) fails here. `bench-scale` measures the whole router's RSS;
//! this says where it goes.

use shardline_shared::keys::Prefix;
use shardline_shared::snapshot::Snapshot;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// As many as the design target: some structures cost more per entry as they grow (a
/// hash trie's nodes did: 378 bytes per tenant at 20,000, 542 at 100,000).
const N: usize = 100_000;
const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The manifest of a small MLP, as `shardctl publish` writes it, for tenant `t`.
fn manifest(t: &str) -> String {
    let (a, b) = ("ab".repeat(32), "cd".repeat(32));
    format!(
        r#"{{"tenant":"{t}","model":"risk","version":"1","location":"{t}/risk/1",
        "config_file":{{"sha256":"{a}","size":300}},"weights_file":{{"sha256":"{b}","size":1000}},
        "config":{{"format":"shardline/v1","architecture":"mlp","input":{{"name":"features","dim":4}},
        "layers":[{{"weight":"layers.0.weight","bias":"layers.0.bias","activation":"relu"}},
                  {{"weight":"layers.1.weight","bias":"layers.1.bias","activation":"sigmoid"}}],
        "output":{{"name":"risk","dim":1}}}},"dims":[4,16,1],"published_at":1795310000}}"#
    )
}

/// The keys and values of one part of tenant-model `i`.
fn part(name: &str, i: usize) -> Vec<(String, String)> {
    let t = format!("t{i:06}");
    match name {
        "tenant" => vec![(
            format!("/shardline/tenants/{t}"),
            format!(
                r#"{{"keys":[{{"id":"{i:08x}","sha256":"{i:08x}{}","created_at":1}}],"created_at":1}}"#,
                &DIGEST[8..]
            ),
        )],
        "manifest" => vec![(format!("/shardline/models/{t}/risk/1"), manifest(&t))],
        "live version" => vec![(
            format!("/shardline/models/{t}/risk"),
            r#"{"version":"1","updated_at":1}"#.into(),
        )],
        "assignment (k=4)" => vec![(
            format!("/shardline/assignments/{t}/risk"),
            format!(
                r#"{{"workers":["s-{:04}","s-{:04}","s-{:04}","s-{:04}"],"epoch":1}}"#,
                i % 1000,
                (i + 1) % 1000,
                (i + 2) % 1000,
                (i + 3) % 1000
            ),
        )],
        _ => (0..4)
            .map(|j| {
                (
                    format!("/shardline/resident/s-{:04}/{t}/risk/1", (i + j) % 1000),
                    r#"{"bytes":4096}"#.into(),
                )
            })
            .collect(),
    }
}

/// Heap bytes a snapshot of `N` tenant-models holding `parts` keeps, per tenant-model.
fn retained(parts: &[&str]) -> i64 {
    let kvs: Vec<(String, String)> = (0..N)
        .flat_map(|i| parts.iter().flat_map(move |p| part(p, i)))
        .collect();
    let region = Region::new(GLOBAL);
    let (snap, invalid) = Snapshot::from_kvs(
        Prefix::default(),
        1,
        kvs.iter().map(|(k, v)| (k.as_str(), v.as_bytes(), 1)),
    );
    let change = region.change();
    assert!(invalid.is_empty(), "{parts:?}: {:?}", invalid.first());
    drop(snap);
    // A realloc's growth or shrink is already in bytes_(de)allocated
    // (bytes_reallocated repeats it).
    let kept = change.bytes_allocated as i64 - change.bytes_deallocated as i64;
    kept / N as i64
}

/// Each part is measured as what it adds to a snapshot that already holds the parts
/// before it (names are shared between parts, so a part alone would count its names
/// again), and the whole must stay within [`TOTAL_CEILING`].
#[test]
fn each_part_of_a_tenant_model_stays_within_its_ceiling() {
    let parts = [
        ("tenant", 240),
        ("live version", 50),
        ("manifest", 220),
        ("assignment (k=4)", 135),
        ("resident keys (4 workers)", 150),
    ];
    let (mut before, mut held) = (0, Vec::new());
    for (name, ceiling) in parts {
        held.push(name);
        let total = retained(&held);
        let bytes = total - before;
        before = total;
        eprintln!("{name}: {bytes} bytes per tenant-model");
        assert!(
            bytes > 0,
            "{name}: nothing retained, so nothing was measured"
        );
        assert!(
            bytes <= ceiling,
            "{name}: {bytes} bytes per tenant-model (ceiling {ceiling})"
        );
    }
    eprintln!("snapshot total: {before} bytes per tenant-model");
    assert!(
        before <= TOTAL_CEILING,
        "{before} bytes per tenant-model in all"
    );
}

/// What a whole tenant-model may cost in a snapshot.
const TOTAL_CEILING: i64 = 740;
