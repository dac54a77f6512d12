//! The harness against real processes: etcd from `$SHARDLINE_ETCD_BIN`/`PATH`, moto from the
//! workspace's `.venv` (`just venv`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use shardline_testkit::{DEFAULT_BUCKET, EtcdProcess, ManagedProcess, S3Process};

fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("http client")
}

// --- etcd, through its v3 JSON gateway ------------------------------------------------------

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn etcd_put(etcd: &EtcdProcess, key: &str, value: &str) -> anyhow::Result<()> {
    let body =
        serde_json::json!({ "key": base64(key.as_bytes()), "value": base64(value.as_bytes()) });
    client(Duration::from_secs(5))
        .post(format!("{}/v3/kv/put", etcd.endpoint()))
        .json(&body)
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// The value of `key`, base64 as the gateway returns it, or `None`.
async fn etcd_get(etcd: &EtcdProcess, key: &str) -> anyhow::Result<Option<String>> {
    let body = serde_json::json!({ "key": base64(key.as_bytes()) });
    let resp: serde_json::Value = client(Duration::from_secs(5))
        .post(format!("{}/v3/kv/range", etcd.endpoint()))
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(resp["kvs"][0]["value"].as_str().map(str::to_owned))
}

async fn etcd_health(etcd: &EtcdProcess) -> anyhow::Result<serde_json::Value> {
    Ok(client(Duration::from_secs(5))
        .get(format!("{}/health", etcd.endpoint()))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

// --- processes ------------------------------------------------------------------------------

/// Whether `pid` is gone (or a zombie nobody reaped, which we also count as a failure).
fn process_gone(pid: u32) -> bool {
    !PathBuf::from(format!("/proc/{pid}")).exists()
}

async fn eventually_gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if process_gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[test]
fn base64_matches_rfc_4648_vectors() {
    let vectors = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];
    for (plain, encoded) in vectors {
        assert_eq!(base64(plain.as_bytes()), encoded);
    }
}

#[tokio::test]
async fn etcd_starts_on_loopback_and_reports_healthy() -> anyhow::Result<()> {
    let etcd = EtcdProcess::start().await?;
    assert!(etcd.endpoint().starts_with("http://127.0.0.1:"));
    assert_eq!(etcd_health(&etcd).await?["health"], "true");
    etcd_put(&etcd, "greeting", "hello").await?;
    assert_eq!(etcd_get(&etcd, "greeting").await?, Some(base64(b"hello")));
    Ok(())
}

#[tokio::test]
async fn etcd_restarts_on_the_same_port_with_its_data() -> anyhow::Result<()> {
    let mut etcd = EtcdProcess::start().await?;
    let endpoint = etcd.endpoint();
    let first_pid = etcd.pid().context("pid")?;

    etcd_put(&etcd, "before-stop", "1").await?;
    etcd.restart().await?;
    assert_eq!(etcd.endpoint(), endpoint);
    assert_ne!(etcd.pid(), Some(first_pid));
    assert_eq!(etcd_get(&etcd, "before-stop").await?, Some(base64(b"1")));

    // A crash (SIGKILL) then a start: committed writes are still there.
    etcd_put(&etcd, "before-crash", "2").await?;
    etcd.kill().await?;
    assert!(etcd.pid().is_none());
    assert!(
        etcd_health(&etcd).await.is_err(),
        "etcd answered while killed"
    );
    etcd.restart().await?;
    assert_eq!(etcd_get(&etcd, "before-stop").await?, Some(base64(b"1")));
    assert_eq!(etcd_get(&etcd, "before-crash").await?, Some(base64(b"2")));
    Ok(())
}

#[tokio::test]
async fn two_etcds_are_independent() -> anyhow::Result<()> {
    let (a, b) = tokio::try_join!(EtcdProcess::start(), EtcdProcess::start())?;
    assert_ne!(a.endpoint(), b.endpoint());
    assert_ne!(a.data_dir(), b.data_dir());
    etcd_put(&a, "only-in-a", "x").await?;
    assert!(etcd_get(&a, "only-in-a").await?.is_some());
    assert_eq!(etcd_get(&b, "only-in-a").await?, None);
    Ok(())
}

#[tokio::test]
async fn dropping_etcd_kills_it_and_deletes_its_files() -> anyhow::Result<()> {
    let etcd = EtcdProcess::start().await?;
    let pid = etcd.pid().context("pid")?;
    let dir = etcd.data_dir();
    assert!(!process_gone(pid));
    drop(etcd);
    // Drop reaps the process itself, so it must be gone at once, not eventually.
    assert!(process_gone(pid), "etcd {pid} still exists after drop");
    assert!(!dir.exists(), "{} survived drop", dir.display());
    Ok(())
}

// --- S3 -------------------------------------------------------------------------------------

/// moto checks no signatures, but treats a request without `Authorization` as anonymous and
/// refuses anonymous reads of private objects; any SigV4-shaped header will do.
const FAKE_AUTH: &str = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, \
                         SignedHeaders=host, Signature=0";

async fn s3_put(s3: &S3Process, key: &str, body: &'static [u8]) -> anyhow::Result<()> {
    client(Duration::from_secs(5))
        .put(format!("{}/{}/{key}", s3.endpoint(), s3.bucket()))
        .header("authorization", FAKE_AUTH)
        // Without it moto's web framework reads the body as a form and stores nothing.
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

async fn s3_get(s3: &S3Process, key: &str, timeout: Duration) -> anyhow::Result<Vec<u8>> {
    let resp = client(timeout)
        .get(format!("{}/{}/{key}", s3.endpoint(), s3.bucket()))
        .header("authorization", FAKE_AUTH)
        .send()
        .await?
        .error_for_status()?;
    Ok(resp.bytes().await?.to_vec())
}

async fn bucket_status(s3: &S3Process) -> anyhow::Result<reqwest::StatusCode> {
    let url = format!("{}/{}", s3.endpoint(), s3.bucket());
    Ok(client(Duration::from_secs(5))
        .get(url)
        .send()
        .await?
        .status())
}

#[tokio::test]
async fn s3_starts_with_its_bucket_and_client_env() -> anyhow::Result<()> {
    let s3 = S3Process::start().await?;
    assert_eq!(s3.bucket(), DEFAULT_BUCKET);
    assert_eq!(s3.store_url(), "s3://shardline-test");
    assert_eq!(bucket_status(&s3).await?, reqwest::StatusCode::OK);
    let env = s3.env();
    let get = |k: &str| {
        env.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("AWS_ENDPOINT_URL"), Some(s3.endpoint().as_str()));
    assert_eq!(get("AWS_ALLOW_HTTP"), Some("true"));
    assert_eq!(get("AWS_REGION"), Some("us-east-1"));
    assert!(get("AWS_ACCESS_KEY_ID").is_some() && get("AWS_SECRET_ACCESS_KEY").is_some());
    Ok(())
}

#[tokio::test]
async fn s3_round_trips_an_object_in_a_named_bucket() -> anyhow::Result<()> {
    let s3 = S3Process::start_with_bucket("models-under-test").await?;
    assert_eq!(s3.store_url(), "s3://models-under-test");
    assert_eq!(bucket_status(&s3).await?, reqwest::StatusCode::OK);
    s3_put(&s3, "tenant/a/model.safetensors", b"weights").await?;
    let got = s3_get(&s3, "tenant/a/model.safetensors", Duration::from_secs(5)).await?;
    assert_eq!(got, b"weights");
    Ok(())
}

#[tokio::test]
async fn paused_s3_times_out_and_resumes_with_its_objects() -> anyhow::Result<()> {
    let mut s3 = S3Process::start().await?;
    s3_put(&s3, "kept", b"still here").await?;

    s3.pause()?;
    let err = s3_get(&s3, "kept", Duration::from_millis(500))
        .await
        .expect_err("a paused server answered");
    let timed_out = err
        .downcast_ref::<reqwest::Error>()
        .is_some_and(reqwest::Error::is_timeout);
    ensure!(timed_out, "expected a timeout, got {err:#}");

    s3.resume()?;
    let got = s3_get(&s3, "kept", Duration::from_secs(5)).await?;
    assert_eq!(got, b"still here");
    Ok(())
}

#[tokio::test]
async fn s3_restart_keeps_the_port_and_recreates_an_empty_bucket() -> anyhow::Result<()> {
    let mut s3 = S3Process::start().await?;
    let endpoint = s3.endpoint();
    s3_put(&s3, "lost-on-restart", b"x").await?;
    s3.restart().await?;
    assert_eq!(s3.endpoint(), endpoint);
    assert_eq!(bucket_status(&s3).await?, reqwest::StatusCode::OK);
    assert!(
        s3_get(&s3, "lost-on-restart", Duration::from_secs(5))
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test]
async fn a_killed_s3_keeps_its_port_unreachable_until_restart() -> anyhow::Result<()> {
    let mut s3 = S3Process::start().await?;
    s3_put(&s3, "gone", b"x").await?;
    s3.kill().await?;
    // No other server can take the port (as another test process's would have) ...
    let taken = std::net::TcpListener::bind(("127.0.0.1", s3.port()));
    ensure!(taken.is_err(), "the killed server's port was free");
    // ... and nothing answers on it.
    let err = s3_get(&s3, "gone", Duration::from_secs(5))
        .await
        .expect_err("a killed server answered");
    ensure!(
        err.downcast_ref::<reqwest::Error>()
            .is_some_and(|e| !e.is_timeout()),
        "expected a failed connection, got {err:#}"
    );
    s3.restart().await?;
    assert_eq!(bucket_status(&s3).await?, reqwest::StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn dropping_a_paused_s3_kills_it() -> anyhow::Result<()> {
    let mut s3 = S3Process::start().await?;
    let pid = s3.pid().context("pid")?;
    s3.pause()?;
    drop(s3);
    assert!(
        eventually_gone(pid).await,
        "moto {pid} still exists after drop"
    );
    Ok(())
}

// --- ManagedProcess failure paths ------------------------------------------------------------

#[tokio::test]
async fn a_process_that_dies_early_fails_fast_with_its_log() -> anyhow::Result<()> {
    let mut p = ManagedProcess::new("doomed", "/bin/sh")?
        .arg("-c")
        .arg("echo 'fatal: config is wrong' >&2; exit 3");
    p.spawn().await?;
    let started = Instant::now();
    let err = p
        .wait_http_ready("http://127.0.0.1:9/", Duration::from_secs(20), |_, _| true)
        .await
        .expect_err("a dead process was reported ready");
    let msg = format!("{err:#}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(msg.contains("exited"), "{msg}");
    assert!(msg.contains("fatal: config is wrong"), "{msg}");
    Ok(())
}

#[tokio::test]
async fn stop_ends_a_paused_process() -> anyhow::Result<()> {
    let mut p = ManagedProcess::new("sleeper", "/bin/sleep")?.arg("60");
    p.spawn().await?;
    let pid = p.pid().context("pid")?;
    assert!(p.is_running());
    p.pause()?;
    let started = Instant::now();
    p.stop().await?;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop hung on a paused process"
    );
    assert!(!p.is_running());
    assert!(eventually_gone(pid).await);
    Ok(())
}

type Kept = (PathBuf, PathBuf, Option<u32>);

async fn start_then_fail(tell: std::sync::mpsc::Sender<Kept>) -> anyhow::Result<()> {
    let mut p = ManagedProcess::new("kept", "/bin/sh")?
        .arg("-c")
        .arg("echo evidence; exec sleep 60");
    p.spawn().await?;
    tell.send((p.dir().to_owned(), p.log_path().to_owned(), p.pid()))?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    panic!("deliberate failure to exercise log keeping")
}

#[test]
fn a_failing_test_keeps_the_process_logs() -> anyhow::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(start_then_fail(tx))
    })
    .join();
    assert!(outcome.is_err(), "the thread was meant to panic");
    let (dir, log, pid) = rx.recv()?;
    let kept = std::fs::read_to_string(&log);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(kept?.contains("evidence"));
    assert!(process_gone(pid.context("pid")?));
    Ok(())
}
