//! TLS on the router's public listener, against real router and worker processes:
//! curl scores over https on the fast path and reaches a route hyper serves; a
//! certificate replaced on disk (SIGHUP) is served to new connections while one opened
//! before keeps scoring; a broken new pair is refused and the old one stays; a client
//! that never says hello is closed after the header timeout. Certificates are made with
//! `openssl` in a scratch directory.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use shardline_testkit::fleet::{Node, TestFleet, infer_body, rows};
use shardline_testkit::hostile::hold;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const PATH: &str = "/v2/models/risk/infer";

fn certificate(dir: &Path, name: &str, cn: &str) -> (PathBuf, PathBuf) {
    shardline_testkit::certs::self_signed(dir, name, cn).unwrap()
}

/// Replaces `to` with `from` in one rename (the router never reads a half-written file).
fn replace(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

async fn fleet_and_router(dir: &Path) -> (TestFleet, Node, String) {
    let mut fleet = TestFleet::builder().workers(1).routers(0).start().await;
    fleet.add_router().await;
    let key = fleet.placed_model("acme", "risk", 1, 5).await;
    fleet.routers.clear();
    let (crt, k) = (dir.join("server.crt"), dir.join("server.key"));
    let spec = fleet
        .router_spec("r-tls")
        .set("--tls-cert", crt.to_str().unwrap())
        .set("--tls-key", k.to_str().unwrap())
        .set("--header-timeout", "1s");
    let node = fleet.start_node(spec).await;
    (fleet, node, key)
}

/// A TLS connection to `node` trusting only `ca`.
async fn connect(node: &Node, ca: &Path) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(node.addr).await?;
    let name = ServerName::IpAddress(node.addr.ip().into());
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// One keep-alive inference on `conn`; its status line and body.
async fn score(conn: &mut TlsStream<TcpStream>, key: &str) -> (String, String) {
    let body = infer_body(&rows(2, 3)).to_string();
    let request = format!(
        "POST {PATH} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    conn.flush().await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            if got.len() >= end + 4 + length {
                let status = text.lines().next().unwrap().to_owned();
                return (status, text[end + 4..end + 4 + length].to_owned());
            }
        }
    }
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_scores_over_https_and_a_replaced_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (first, first_key) = certificate(dir.path(), "first", "shardline-first");
    let (second, second_key) = certificate(dir.path(), "second", "shardline-second");
    replace(&first, &dir.path().join("server.crt"));
    replace(&first_key, &dir.path().join("server.key"));
    let (_fleet, node, key) = fleet_and_router(dir.path()).await;
    let base = format!("https://{}", node.addr);

    // curl, trusting only the first certificate: an inference on the fast path and a
    // route hyper serves.
    let body = infer_body(&rows(2, 3)).to_string();
    let (code, answer) = curl(&[
        "--cacert",
        first.to_str().unwrap(),
        "-H",
        &format!("authorization: Bearer {key}"),
        "-H",
        "content-type: application/json",
        "--data-binary",
        &body,
        &format!("{base}{PATH}"),
    ]);
    assert_eq!(code, "200", "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["outputs"][0]["shape"][0], 2, "{answer}");
    let (code, _) = curl(&[
        "--cacert",
        first.to_str().unwrap(),
        &format!("{base}/v2/health/ready"),
    ]);
    assert_eq!(code, "200");
    // Plain HTTP on the TLS port is not served.
    let plain = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            &format!("http://{}/v2/health/ready", node.addr),
        ])
        .output()
        .unwrap();
    assert!(!plain.status.success());

    // A connection opened with the first certificate, scoring.
    let mut before = connect(&node, &first).await.unwrap();
    assert_eq!(score(&mut before, &key).await.0, "HTTP/1.1 200 OK");

    // The second pair replaces the first on disk; SIGHUP.
    replace(&second, &dir.path().join("server.crt"));
    replace(&second_key, &dir.path().join("server.key"));
    let pid = node.pid().unwrap();
    shardline_testkit::send_signal(pid, "HUP").unwrap();
    shardline_testkit::eventually!(
        Duration::from_secs(10),
        "the second certificate is served",
        { connect(&node, &second).await.is_ok() }
    );
    // New connections get the second certificate only; the old connection keeps going.
    assert!(connect(&node, &first).await.is_err());
    let mut after = connect(&node, &second).await.unwrap();
    assert_eq!(score(&mut after, &key).await.0, "HTTP/1.1 200 OK");
    assert_eq!(score(&mut before, &key).await.0, "HTTP/1.1 200 OK");
    assert!(
        node.metric("shardline_router_tls_reloads_total{result=\"ok\"}")
            .await
            >= 1.0
    );

    // A broken pair (a key that does not match) is refused: the second stays.
    replace(&first_key, &dir.path().join("server.key"));
    shardline_testkit::send_signal(pid, "HUP").unwrap();
    shardline_testkit::eventually!(Duration::from_secs(10), "the broken pair is refused", {
        node.metric("shardline_router_tls_reloads_total{result=\"refused\"}")
            .await
            >= 1.0
    });
    let mut still = connect(&node, &second).await.unwrap();
    assert_eq!(score(&mut still, &key).await.0, "HTTP/1.1 200 OK");
    assert_eq!(score(&mut before, &key).await.0, "HTTP/1.1 200 OK");

    // Clients that open TCP and never say hello are closed after the header timeout.
    let silent = hold(&node.addr.to_string(), 50, b"").await;
    assert_eq!(silent.wait_closed(Duration::from_secs(5)).await, 50);
    assert!(
        node.metric("shardline_connections_closed_total{reason=\"header_timeout\"}")
            .await
            >= 50.0
    );
}
