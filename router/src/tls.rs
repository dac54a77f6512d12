//! TLS on the router's public listener (`--tls-cert`, `--tls-key`): rustls with the
//! aws-lc-rs provider (the one reqwest already builds), HTTP/1.1 only (ALPN `http/1.1`;
//! the gRPC listener's acceptor offers `h2`),
//! and a certificate that can be replaced without a restart. The pair is read again on
//! SIGHUP and whenever either file's modification time changes (checked every few
//! seconds): a new handshake gets the new certificate, connections already open keep
//! the one they started with, and a pair that does not load (unreadable, not PEM, key
//! not matching the certificate) is refused with an error log while the old one keeps
//! serving. Counted in `shardline_router_tls_reloads_total{result}`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use prometheus::{IntCounterVec, Opts, Registry};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tracing::{error, info};

/// How often the certificate files are checked for a change.
const POLL: Duration = Duration::from_secs(5);

/// The certificate and key files, and the pair in force.
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// Modification times of the pair in force (or of the last refused one).
    seen: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
    reloads: IntCounterVec,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Loads the pair (an error when it does not load: the router does not start).
    pub fn load(cert: &Path, key: &Path, registry: &Registry) -> anyhow::Result<Arc<Self>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let seen = (modified(cert), modified(key));
        let pair = read_pair(cert, key, &provider)?;
        let reloads = IntCounterVec::new(
            Opts::new(
                shardline_shared::metrics::ROUTER_TLS_RELOADS_TOTAL,
                "Certificate reloads (SIGHUP or a changed file), by result (ok, refused)",
            ),
            &["result"],
        )?;
        registry.register(Box::new(reloads.clone()))?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: RwLock::new(Arc::new(pair)),
            seen: RwLock::new(seen),
            reloads,
        }))
    }

    /// The acceptor new connections shake hands with (it asks `self` for the
    /// certificate at every handshake).
    pub fn acceptor(self: &Arc<Self>) -> anyhow::Result<TlsAcceptor> {
        self.acceptor_for(b"http/1.1")
    }

    /// [`Self::acceptor`] offering the application protocol `alpn` (`h2` for gRPC).
    pub fn acceptor_for(self: &Arc<Self>, alpn: &[u8]) -> anyhow::Result<TlsAcceptor> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Reads the pair again; on failure the one in force stays.
    pub fn reload(&self, why: &str) {
        let seen = (modified(&self.cert), modified(&self.key));
        *self.seen.write().unwrap_or_else(|e| e.into_inner()) = seen;
        match read_pair(&self.cert, &self.key, &self.provider) {
            Ok(pair) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(pair);
                self.reloads.with_label_values(&["ok"]).inc();
                info!(cert = %self.cert.display(), why, "TLS certificate reloaded");
            }
            Err(e) => {
                self.reloads.with_label_values(&["refused"]).inc();
                error!(cert = %self.cert.display(), why, error = %format!("{e:#}"),
                    "TLS certificate not reloaded; the previous one stays in force");
            }
        }
    }

    /// Whether either file changed since the pair in force (or the last refused one)
    /// was read.
    fn changed(&self) -> bool {
        let now = (modified(&self.cert), modified(&self.key));
        *self.seen.read().unwrap_or_else(|e| e.into_inner()) != now
    }

    /// Reloads on SIGHUP and when a file changes, until the task is aborted.
    pub async fn watch(self: Arc<Self>) {
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hup = async {
                match hangup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hup = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = hup => self.reload("SIGHUP"),
                _ = poll.tick() => if self.changed() { self.reload("file changed") },
            }
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The certificate chain and key in PEM files, checked to belong together.
fn read_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading --tls-cert {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--tls-cert {} is not PEM certificates", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "--tls-cert {} holds no certificate",
        cert.display()
    );
    let private = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("--tls-key {} holds no PEM private key", key.display()))?;
    CertifiedKey::from_der(chain, private, provider).with_context(|| {
        format!(
            "--tls-key {} does not load or does not match --tls-cert {}",
            key.display(),
            cert.display()
        )
    })
}
