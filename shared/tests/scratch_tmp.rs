use shardline_shared::keys::Prefix;
use shardline_shared::snapshot::Snapshot;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;
fn kept(kvs: &[(String, String)]) -> i64 {
    let r = Region::new(GLOBAL);
    let (s, _) = Snapshot::from_kvs(
        Prefix::default(),
        1,
        kvs.iter().map(|(k, v)| (k.as_str(), v.as_bytes(), 1)),
    );
    let c = r.change();
    drop(s);
    (c.bytes_allocated as i64 - c.bytes_deallocated as i64) / 20000
}
#[test]
fn v() {
    let names: Vec<(String, String)> = (0..20000)
        .map(|i| {
            (
                format!("/shardline/models/t{i:06}/risk"),
                r#"{"version":"1"}"#.to_string(),
            )
        })
        .collect();
    let _warm = kept(&names);
    for r in [1, 2, 4, 8] {
        let mut kvs = names.clone();
        kvs.extend((0..20000).flat_map(|i| {
            (0..r).map(move |j| {
                (
                    format!("/shardline/resident/s-{:04}/t{i:06}/risk/1", (i + j) % 1000),
                    r#"{"bytes":4096}"#.to_string(),
                )
            })
        }));
        let base = kept(&names);
        eprintln!("{r} residents: {}", kept(&kvs) - base);
    }
}
