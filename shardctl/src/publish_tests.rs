#![allow(clippy::unwrap_used)]

use shardline_testkit::models::MlpArtifact;

use super::*;

fn files() -> (String, Bytes) {
    let m = MlpArtifact::random(&[4, 3, 1], 7);
    (
        String::from_utf8(m.config_json).unwrap(),
        Bytes::from(m.weights),
    )
}

fn error(config: &str, weights: Bytes) -> String {
    validate(Bytes::from(config.to_owned()), weights)
        .unwrap_err()
        .to_string()
}

#[test]
fn a_good_model_passes_with_its_widths() {
    let (config, weights) = files();
    let v = validate(Bytes::from(config), weights.clone()).unwrap();
    assert_eq!(v.dims, [4, 3, 1]);
    assert_eq!(digest(&weights).size, weights.len() as u64);
    assert_eq!(digest(b"").sha256.len(), 64);
}

#[test]
fn malformed_models_fail_with_a_precise_message() {
    let (config, weights) = files();
    let e = error(
        &config.replace("shardline/v1", "shardline/v9"),
        weights.clone(),
    );
    assert!(e.starts_with("config.json: "), "{e}");
    assert!(e.contains("shardline/v9"), "{e}");
    let e = error(
        &config.replace("layers.1.weight", "layers.9.weight"),
        weights.clone(),
    );
    assert!(e.starts_with("model.safetensors: "), "{e}");
    assert!(e.contains("layers.9.weight"), "{e}");
    let e = error(&config.replace("\"dim\": 4", "\"dim\": 5"), weights.clone());
    assert!(e.contains("layers.0.weight"), "{e}");
    assert!(e.contains("shape"), "{e}");
    let e = error(&config, Bytes::from_static(b"not a safetensors file"));
    assert!(e.contains("not a valid safetensors file"), "{e}");
}
