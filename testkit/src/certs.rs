//! Self-signed TLS certificates for tests and benchmarks, made with `openssl`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, ensure};

/// A self-signed end-entity certificate for 127.0.0.1 (P-256, `serverAuth`; rustls
/// refuses a CA certificate as a server's) with subject `CN=<cn>`, written as
/// `<name>.crt` and `<name>.key` in `dir`: the two paths.
pub fn self_signed(dir: &Path, name: &str, cn: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={cn}")])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "keyUsage=digitalSignature"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("running openssl (install it: apt-get install openssl)")?;
    ensure!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((cert, key))
}
