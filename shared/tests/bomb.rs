//! The parameters bomb, measured: decoding (and validating) a body whose `parameters`
//! holds a million tiny objects (`{"":0}` repeated) allocates a few bytes per body byte
//! at most — not the ~85 a `serde_json::Map` of them cost. Its own test binary: it
//! counts every allocation of the process.

use shardline_shared::decode::{DEFAULT_MAX_ROWS, InputSpec, decode_infer, validate_infer};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// A valid request for a 3-wide model whose `parameters` holds `n` members `"":{"":0}`
/// and one deep array.
fn bomb(n: usize) -> Vec<u8> {
    let mut body = String::from(r#"{"parameters":{"deep":"#);
    body.push_str(&"[".repeat(100));
    body.push_str(&"]".repeat(100));
    for _ in 0..n {
        body.push_str(r#","":{"":0}"#);
    }
    body.push_str(
        r#"},"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1,2,3],
            "parameters":{"content_type":"np","x":[{"":0},{"":0},{"":0}]}}]}"#,
    );
    body.into_bytes()
}

#[test]
fn a_parameters_bomb_costs_a_few_bytes_per_body_byte_at_most() {
    let body = bomb(1 << 20);
    let spec = InputSpec {
        name: "features",
        dim: 3,
        output_name: "score",
        max_rows: DEFAULT_MAX_ROWS,
    };
    for validate in [false, true] {
        let region = Region::new(GLOBAL);
        if validate {
            validate_infer(&body, &spec).unwrap();
        } else {
            let batch = decode_infer(&body, &spec).unwrap();
            assert_eq!(batch.data, [1.0, 2.0, 3.0]);
            assert!(batch.has_parameters);
        }
        let stats = region.change();
        let allocated = stats.bytes_allocated + stats.bytes_reallocated.max(0) as usize;
        eprintln!("{allocated} bytes allocated for a {} byte body", body.len());
        // Every byte allocated, freed or not, bounds the peak from above.
        assert!(
            allocated < 64 << 10,
            "{} {allocated} bytes for a {} byte body",
            if validate { "validating" } else { "decoding" },
            body.len()
        );
    }
}
