//! The schema evolution rule on the snapshot (`docs/etcd-layout.md`): values a newer
//! release wrote — extra fields, extra nested fields, enum values it added — are used,
//! not dropped, and each note says what was ignored; a model's own `config.json` is
//! still read strictly.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use shardline_shared::ModelKey;
use shardline_shared::auth::ApiKey;
use shardline_shared::compat::Ignored;
use shardline_shared::keys::Prefix;
use shardline_shared::manifest::{ManifestError, ModelConfig};
use shardline_shared::records::AdminState;
use shardline_shared::snapshot::{Change, Snapshot};

const CONFIG: &str = r#"{"format":"shardline/v1","architecture":"mlp",
    "input":{"name":"features","dim":4},
    "layers":[{"weight":"w","bias":"b","activation":"sigmoid"}],
    "output":{"name":"risk","dim":1}}"#;

fn manifest(version: &str) -> Value {
    let digest = json!({"sha256": "ab".repeat(32), "size": 10});
    json!({
        "tenant": "acme", "model": "risk", "version": version,
        "location": format!("acme/risk/{version}"),
        "config_file": digest, "weights_file": digest,
        "config": serde_json::from_str::<Value>(CONFIG).unwrap(),
        "dims": [4, 1], "published_at": 1
    })
}

fn apply(snap: &mut Snapshot, key: &str, value: &Value) -> Option<Ignored> {
    let bytes = value.to_string();
    snap.apply_noting(Change::Put {
        key,
        value: bytes.as_bytes(),
        mod_revision: 1,
    })
    .unwrap_or_else(|e| panic!("{key} refused: {}", e.reason))
}

#[test]
fn every_kind_of_value_from_a_newer_release_is_used_and_noted() {
    let mut snap = Snapshot::empty(Prefix::new("/s").unwrap());
    let api_key = ApiKey::generate().unwrap();
    let mut stored_key = serde_json::to_value(api_key.digest(1)).unwrap();
    stored_key["scope"] = json!("ro");
    let cases = [
        (
            "/s/workers/w-1",
            json!({"address":"127.0.0.1:1","capacity_bytes":10,"build_version":"9",
                   "zone":{"name":"eu"}}),
            vec!["zone"],
        ),
        (
            "/s/resident/w-1/acme/risk/1",
            json!({"bytes": 7, "pinned": true}),
            vec!["pinned"],
        ),
        (
            "/s/tenants/acme",
            json!({"limits":{"max_in_flight":3,"rate_per_sec":0,"burst":1},
                   "keys":[stored_key],
                   "tier":"gold"}),
            // (json! writes keys in order)
            vec!["keys.0.scope", "limits.burst", "tier"],
        ),
        (
            "/s/models/acme/risk",
            json!({"version":"1","updated_at":1,"rollout":{"percent":5}}),
            vec!["rollout"],
        ),
        (
            "/s/assignments/acme/risk",
            json!({"workers":["w-1"],"epoch":1,"why":"balance"}),
            vec!["why"],
        ),
        (
            "/s/placement",
            json!({"algorithm":"rendezvous-sticky/v1","seed":"73686172646c696e652d706c6163652d",
                   "default_k":4,"max_overlap":2,"epsilon_permille":100,"epoch":1,
                   "spread":{"by":"zone"}}),
            vec!["spread"],
        ),
    ];
    for (key, value, paths) in &cases {
        let note = apply(&mut snap, key, value).unwrap_or_else(|| panic!("{key}: no note"));
        assert_eq!(&note.fields, paths, "{key}");
    }
    let mut m = manifest("1");
    m["weights_file"]["compression"] = json!("zstd");
    m["config"]["description"] = json!("risk model");
    m["config"]["layers"][0]["dropout"] = json!(0.1);
    m["signature"] = json!({"by": "ci"});
    let note = apply(&mut snap, "/s/models/acme/risk/1", &m).unwrap();
    assert_eq!(
        note.fields,
        [
            "config.description",
            "config.layers.0.dropout",
            "signature",
            "weights_file.compression",
        ]
    );

    let key = ModelKey::parse_shard_key("acme/risk").unwrap();
    let tenant = key.tenant.clone();
    assert!(snap.invalid().is_empty(), "{:?}", snap.invalid());
    assert_eq!(snap.tenants()[&tenant].value.limits.max_in_flight, 3);
    assert_eq!(snap.tenant_for_key(api_key.expose()), Some(&tenant));
    assert!(snap.model(&key).unwrap().live_manifest().is_some());
    assert_eq!(snap.assignments()[&key].value.workers.len(), 1);
    assert_eq!(snap.workers().len(), 1);
    assert_eq!(snap.placement().default_k, 4);

    // A value this release fully knows carries no note.
    assert!(apply(&mut snap, "/s/models/acme/risk/2", &manifest("2")).is_none());
}

#[test]
fn unknown_enum_values_keep_their_worker_and_model() {
    let mut snap = Snapshot::empty(Prefix::new("/s").unwrap());
    let note = apply(
        &mut snap,
        "/s/worker-admin/w-1",
        &json!({"state": "hibernating"}),
    )
    .unwrap();
    assert_eq!(note.values, ["state"]);
    let w1 = "w-1".parse().unwrap();
    assert_eq!(snap.admin_state(&w1), AdminState::Unknown);

    let mut m = manifest("3");
    m["config"]["layers"][0]["activation"] = json!("swish");
    let note = apply(&mut snap, "/s/models/acme/risk/3", &m).unwrap();
    assert_eq!(note.values, ["config.layers.activation"]);
    let key = ModelKey::parse_shard_key("acme/risk").unwrap();
    let stored = snap.manifest(&key, &"3".parse().unwrap()).unwrap();
    // Known (the router resolves and validates requests for it) but not buildable here.
    assert_eq!(stored.config.input.dim, 4);
    let err = stored.config.check_supported().unwrap_err();
    assert!(matches!(err, ManifestError::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("activation in layer 0"), "{err}");

    let mut v4 = manifest("4");
    v4["config"]["format"] = json!("shardline/v2");
    let note = apply(&mut snap, "/s/models/acme/risk/4", &v4).unwrap();
    assert_eq!(note.values, ["config.format"]);
    assert!(snap.manifest(&key, &"4".parse().unwrap()).is_some());
}

#[test]
fn what_stays_invalid_is_still_dropped() {
    let mut snap = Snapshot::empty(Prefix::new("/s").unwrap());
    for (key, value) in [
        ("/s/tenants/acme", json!({"limits": "none"})),
        ("/s/models/acme/risk", json!({"updated_at": 1})),
        (
            "/s/assignments/acme/risk",
            json!({"workers": ["Not A Name"], "epoch": 1}),
        ),
    ] {
        let bytes = value.to_string();
        let change = Change::Put {
            key,
            value: bytes.as_bytes(),
            mod_revision: 1,
        };
        assert!(snap.apply_noting(change).is_err(), "{key}");
    }
    assert_eq!(snap.invalid().len(), 3);
}

#[test]
fn a_config_json_file_is_read_strictly() {
    let mut with_typo: Value = serde_json::from_str(CONFIG).unwrap();
    with_typo["layers"][0]["activaton"] = json!("relu");
    let err = ModelConfig::from_json(with_typo.to_string().as_bytes()).unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown field `layers.0.activaton`"),
        "{err}"
    );
    let mut unknown: Value = serde_json::from_str(CONFIG).unwrap();
    unknown["layers"][0]["activation"] = json!("swish");
    let err = ModelConfig::from_json(unknown.to_string().as_bytes()).unwrap_err();
    assert!(
        err.to_string().contains("unknown activation in layer 0"),
        "{err}"
    );
    assert!(ModelConfig::from_json(CONFIG.as_bytes()).is_ok());
}
