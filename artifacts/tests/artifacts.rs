//! The artifact store against a local directory, moto's S3 (`S3Process`), and fake servers
//! that refuse connections or answer with errors.

#![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

use std::time::{Duration, Instant};

use bytes::Bytes;
use shardline_artifacts::{ArtifactStore, FetchError, StoreConfigError, StoreOptions};
use shardline_shared::ids::{ModelName, TenantId, VersionId};
use shardline_shared::manifest::{CONFIG_FILE, FileDigest, Manifest, ModelConfig, WEIGHTS_FILE};
use shardline_testkit::S3Process;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG_JSON: &[u8] = br#"{"format": "shardline/v1", "architecture": "mlp",
 "input": {"name": "features", "dim": 4},
 "layers": [{"weight": "layers.0.weight", "bias": "layers.0.bias", "activation": "sigmoid"}],
 "output": {"name": "risk", "dim": 1}}"#;

fn digest(bytes: &[u8]) -> FileDigest {
    FileDigest {
        sha256: shardline_shared::digest::Sha256Sum::of(bytes),
        size: bytes.len() as u64,
    }
}

/// `len` bytes that do not compress and differ from run to run of `seed`.
fn noise(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn manifest(config: &[u8], weights: &[u8]) -> Manifest {
    Manifest {
        tenant: TenantId::new("acme").unwrap(),
        model: ModelName::new("risk").unwrap(),
        version: VersionId::new("1").unwrap(),
        location: "acme/risk/1".into(),
        config_file: digest(config),
        weights_file: digest(weights),
        config: ModelConfig::from_json(config).unwrap().into(),
        dims: vec![4, 1].into(),
        published_at: 0,
    }
}

fn file_store() -> (tempfile::TempDir, ArtifactStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let store = ArtifactStore::from_url_with(&url, StoreOptions::default()).unwrap();
    (dir, store)
}

/// Short timeouts and one retry: failures show within a couple of seconds.
fn impatient(env: Vec<(String, String)>) -> StoreOptions {
    StoreOptions {
        connect_timeout: Duration::from_millis(500),
        read_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(5),
        max_retries: 1,
        retry_timeout: Duration::from_secs(2),
        ..StoreOptions::default()
    }
    .with_env(env)
}

/// The variables of an S3-compatible server on a loopback port.
fn loopback_env(port: u16) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ALLOW_HTTP", "true".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

#[tokio::test]
async fn file_store_round_trip_checks_the_digest() {
    let (_dir, store) = file_store();
    let weights = noise(300_000, 1);
    let m = manifest(CONFIG_JSON, &weights);
    store
        .put(&m.object_path(CONFIG_FILE), Bytes::from_static(CONFIG_JSON))
        .await
        .unwrap();
    store
        .put(&m.object_path(WEIGHTS_FILE), weights.clone())
        .await
        .unwrap();

    let (config, got) = store.fetch_model(&m).await.unwrap();
    assert_eq!(&config[..], CONFIG_JSON);
    assert_eq!(got, weights);
}

#[tokio::test]
async fn a_file_changed_after_publishing_is_corrupt() {
    let (dir, store) = file_store();
    let original = noise(10_000, 2);
    store
        .put("t/m/1/model.safetensors", original.clone())
        .await
        .unwrap();
    let recorded = digest(&original);

    let mut changed = original.to_vec();
    changed[5_000] ^= 0xff;
    std::fs::write(dir.path().join("t/m/1/model.safetensors"), &changed).unwrap();

    let err = store
        .fetch("t/m/1/model.safetensors", &recorded, u64::MAX)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, FetchError::Corrupt { .. }), "{msg}");
    assert!(msg.contains("sha256"), "{msg}");
    assert!(msg.contains(&recorded.sha256.to_hex()[..12]), "{msg}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_size_other_than_the_recorded_one_is_corrupt() {
    let (_dir, store) = file_store();
    let bytes = noise(1_000, 3);
    store.put("a/b", bytes.clone()).await.unwrap();
    for size in [999, 1_001, 50_000_000] {
        let recorded = FileDigest {
            size,
            ..digest(&bytes)
        };
        let err = store.fetch("a/b", &recorded, u64::MAX).await.unwrap_err();
        assert!(
            matches!(&err, FetchError::Corrupt { reason, .. } if reason.contains("1000 bytes")),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_missing_object_is_not_found_and_an_over_limit_one_too_large() {
    let (_dir, store) = file_store();
    let err = store
        .fetch("nope/model.safetensors", &digest(b"x"), u64::MAX)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FetchError::NotFound { path } if path == "nope/model.safetensors"),
        "{err}"
    );
    assert!(!err.is_retryable());

    let err = store
        .fetch("a/b", &digest(&[0; 100]), 99)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::TooLarge {
                size: 100,
                limit: 99,
                ..
            }
        ),
        "{err}"
    );
    let err = store
        .fetch("../etc/passwd", &digest(b"x"), 10)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Other { .. }), "{err}");
}

#[test]
fn bad_store_urls_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let cases = [
        ("file://models/dir".to_owned(), "absolute path"),
        ("file:models".to_owned(), "absolute path"),
        (
            format!("file://{}/missing", dir.path().display()),
            "does not exist",
        ),
        (format!("file://{}", file.display()), "not a directory"),
        ("ftp://host/models".to_owned(), "not supported"),
        ("s3://".to_owned(), "bucket"),
        ("not a url".to_owned(), "not valid"),
    ];
    for (url, needle) in cases {
        let err: StoreConfigError =
            ArtifactStore::from_url_with(&url, StoreOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(needle), "{url} => {msg}");
        assert!(msg.starts_with(|c: char| c.is_lowercase()), "{msg}");
    }
}

#[tokio::test]
async fn s3_round_trip_of_a_multipart_object_under_a_prefix() {
    let s3 = S3Process::start().await.unwrap();
    let url = format!("{}/models/", s3.store_url());
    // Production timeouts: moto assembles 20 MB slowly on a loaded machine, and a
    // CompleteMultipartUpload retried after a read timeout finds its upload gone.
    let patient = || StoreOptions::default().with_env(s3.env());
    let store = ArtifactStore::from_url_with(&url, patient()).unwrap();

    // Above the 16 MiB threshold: three 8 MiB parts.
    let weights = noise(20_000_000, 4);
    let m = manifest(CONFIG_JSON, &weights);
    let started = Instant::now();
    store
        .put(&m.object_path(CONFIG_FILE), Bytes::from_static(CONFIG_JSON))
        .await
        .unwrap();
    store
        .put(&m.object_path(WEIGHTS_FILE), weights.clone())
        .await
        .unwrap();
    let (config, got) = store.fetch_model(&m).await.unwrap();
    assert_eq!(&config[..], CONFIG_JSON);
    assert!(got == weights, "weights differ after the round trip");
    eprintln!("20 MB up and down in {:?}", started.elapsed());
    let log = std::fs::read_to_string(s3.log_path()).unwrap();
    assert!(
        log.contains("model.safetensors?uploads"),
        "no multipart upload:\n{log}"
    );

    // The prefix is part of the key: the bucket root sees it.
    let root = ArtifactStore::from_url_with(&s3.store_url(), patient()).unwrap();
    let at_root = root
        .fetch(
            "models/acme/risk/1/config.json",
            &digest(CONFIG_JSON),
            1 << 20,
        )
        .await
        .unwrap();
    assert_eq!(&at_root[..], CONFIG_JSON);

    // A different digest for the same bytes is refused; a missing key is not found.
    let wrong = FileDigest {
        sha256: shardline_shared::digest::Sha256Sum::from_bytes([0; 32]),
        size: weights.len() as u64,
    };
    let err = store
        .fetch(&m.object_path(WEIGHTS_FILE), &wrong, u64::MAX)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Corrupt { .. }), "{err}");
    let err = store
        .fetch("acme/risk/2/config.json", &digest(b"x"), 10)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn s3_paused_is_unavailable_and_recovers_on_resume() {
    let mut s3 = S3Process::start().await.unwrap();
    let store = ArtifactStore::from_url_with(&s3.store_url(), impatient(s3.env())).unwrap();
    let bytes = noise(100_000, 5);
    store
        .put("k/model.safetensors", bytes.clone())
        .await
        .unwrap();

    s3.pause().unwrap();
    let started = Instant::now();
    let err = store
        .fetch("k/model.safetensors", &digest(&bytes), u64::MAX)
        .await
        .unwrap_err();
    let waited = started.elapsed();
    s3.resume().unwrap();
    eprintln!("paused: {err} after {waited:?}");
    assert!(matches!(err, FetchError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(err.is_retryable());
    assert!(waited < Duration::from_secs(5), "gave up after {waited:?}");

    let got = store
        .fetch("k/model.safetensors", &digest(&bytes), u64::MAX)
        .await
        .unwrap();
    assert_eq!(got, bytes);
}

/// Answers every request on a loopback port with `status`, then closes the connection.
async fn fake_s3(status: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                let _ = conn.read(&mut buf).await;
                let body = "<Error><Code>Fake</Code><Message>fake</Message></Error>";
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn s3_failures_are_sorted_into_retryable_or_not() {
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let cases = [
        (closed_port, true, "cannot connect"),
        (fake_s3("503 Service Unavailable").await, true, "503"),
        (fake_s3("500 Internal Server Error").await, true, "500"),
        (fake_s3("429 Too Many Requests").await, true, "429"),
        (fake_s3("400 Bad Request").await, false, "400"),
    ];
    for (port, retryable, needle) in cases {
        let store =
            ArtifactStore::from_url_with("s3://bucket/p", impatient(loopback_env(port))).unwrap();
        let started = Instant::now();
        let err = store.fetch("a/b", &digest(b"x"), 10).await.unwrap_err();
        eprintln!("{:?}: {err}", started.elapsed());
        assert_eq!(err.is_retryable(), retryable, "port {port}: {err}");
        assert!(err.to_string().contains(needle), "{err}");
        assert!(
            matches!(
                err,
                FetchError::Unavailable { .. } | FetchError::Other { .. }
            ),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{err}");
    }
}
