//! Checking bytes against a manifest's [`FileDigest`] while they arrive: sha256 as each
//! chunk lands, and a hard stop as soon as more bytes come than the manifest recorded, so a
//! lying or swapped object never makes us buffer more than `expected.size`.

use std::io::{Read, Seek, SeekFrom};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use shardline_shared::digest::Sha256Sum;
use shardline_shared::manifest::FileDigest;

use super::FetchError;

/// How much of a digest an error message shows.
const DIGEST_PREFIX: usize = 12;

/// Chunk size for reading a local file (one blocking task reads the whole file).
const FILE_CHUNK: usize = 1 << 20;

/// Accumulates and hashes one object's bytes.
#[derive(Debug)]
pub(crate) struct Verifier {
    path: String,
    expected: FileDigest,
    hasher: Sha256,
    /// Allocated once with the expected size: the common case never reallocates.
    buf: BytesMut,
}

impl Verifier {
    /// `expected.size` must already have passed the caller's `max_bytes`.
    pub(crate) fn new(path: &str, expected: &FileDigest) -> Result<Self, FetchError> {
        let capacity = usize::try_from(expected.size).map_err(|_| FetchError::TooLarge {
            path: path.to_owned(),
            size: expected.size,
            limit: usize::MAX as u64,
        })?;
        Ok(Self {
            path: path.to_owned(),
            expected: expected.clone(),
            hasher: Sha256::new(),
            buf: BytesMut::with_capacity(capacity),
        })
    }

    fn corrupt(&self, reason: String) -> FetchError {
        FetchError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }

    /// Refuses before reading a byte when the store announces another size.
    pub(crate) fn check_announced(&self, announced: u64) -> Result<(), FetchError> {
        if announced == self.expected.size {
            return Ok(());
        }
        Err(self.corrupt(format!(
            "the store holds {announced} bytes, the manifest recorded {}",
            self.expected.size
        )))
    }

    /// Adds a chunk; refuses as soon as the total passes the expected size.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<(), FetchError> {
        let total = self.buf.len() as u64 + chunk.len() as u64;
        if total > self.expected.size {
            return Err(self.corrupt(format!(
                "received more than the {} bytes the manifest recorded",
                self.expected.size
            )));
        }
        self.hasher.update(chunk);
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    /// Checks the size and the sha256 of everything pushed.
    pub(crate) fn finish(self) -> Result<Bytes, FetchError> {
        let received = self.buf.len() as u64;
        if received != self.expected.size {
            return Err(self.corrupt(format!(
                "received {received} bytes, the manifest recorded {}",
                self.expected.size
            )));
        }
        let actual = Sha256Sum::from_bytes(self.hasher.clone().finalize().into());
        if actual != self.expected.sha256 {
            return Err(self.corrupt(format!(
                "sha256 is {}…, the manifest recorded {}…",
                prefix(&actual.to_hex()),
                prefix(&self.expected.sha256.to_hex())
            )));
        }
        Ok(self.buf.freeze())
    }
}

fn prefix(digest: &str) -> &str {
    digest.get(..DIGEST_PREFIX).unwrap_or(digest)
}

/// Drains a byte stream into `verifier`, stopping (and dropping the stream, which closes
/// the connection) at the first error or excess byte.
pub(crate) async fn read_stream<S>(stream: S, mut verifier: Verifier) -> Result<Bytes, FetchError>
where
    S: Stream<Item = Result<Bytes, FetchError>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(chunk) = stream.next().await {
        verifier.push(&chunk?)?;
    }
    verifier.finish()
}

/// Reads a local file from `start` in large chunks (blocking: run it off the runtime).
/// Reads at most one byte more than expected, which is enough to see that it grew.
pub(crate) fn read_file(
    mut file: std::fs::File,
    start: u64,
    mut verifier: Verifier,
) -> Result<Bytes, FetchError> {
    let io_error = |e: std::io::Error| FetchError::Other {
        reason: format!("reading {}: {e}", verifier.path),
    };
    file.seek(SeekFrom::Start(start)).map_err(io_error)?;
    let mut limited = file.take(verifier.expected.size.saturating_add(1));
    let mut chunk = vec![0; FILE_CHUNK];
    loop {
        let n = match limited.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(FetchError::Other {
                    reason: format!("reading {}: {e}", verifier.path),
                });
            }
        };
        verifier.push(&chunk[..n])?;
    }
    verifier.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(bytes: &[u8]) -> FileDigest {
        FileDigest {
            sha256: Sha256Sum::of(bytes),
            size: bytes.len() as u64,
        }
    }

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, FetchError>> {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn accepts_the_recorded_bytes_in_any_chunking() {
        let expected = digest_of(b"hello world");
        let v = Verifier::new("p", &expected).unwrap();
        let bytes = read_stream(chunks(&[b"hel", b"", b"lo wor", b"ld"]), v)
            .await
            .unwrap();
        assert_eq!(&bytes[..], b"hello world");
    }

    #[tokio::test]
    async fn stops_reading_an_endless_stream_at_the_expected_size() {
        let expected = digest_of(&[0; 4096]);
        let v = Verifier::new("p", &expected).unwrap();
        let endless = futures::stream::repeat_with(|| Ok(Bytes::from_static(&[0; 1000])));
        let err = read_stream(endless, v).await.unwrap_err();
        assert!(
            matches!(&err, FetchError::Corrupt { reason, .. } if reason.contains("more than the 4096")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn short_and_altered_bodies_are_corrupt() {
        let expected = digest_of(b"hello world");
        let short = read_stream(chunks(&[b"hello"]), Verifier::new("p", &expected).unwrap())
            .await
            .unwrap_err();
        assert!(short.to_string().contains("received 5 bytes"), "{short}");

        let altered = read_stream(
            chunks(&[b"hello World"]),
            Verifier::new("a/model.safetensors", &expected).unwrap(),
        )
        .await
        .unwrap_err()
        .to_string();
        let want = &expected.sha256.to_hex()[..DIGEST_PREFIX];
        assert!(
            altered.contains("a/model.safetensors is corrupt"),
            "{altered}"
        );
        assert!(altered.contains(&format!("recorded {want}…")), "{altered}");
    }

    #[test]
    fn announced_size_is_checked_before_reading() {
        let v = Verifier::new("p", &digest_of(b"abc")).unwrap();
        assert!(v.check_announced(3).is_ok());
        let err = v.check_announced(10_000_000_000).unwrap_err().to_string();
        assert!(err.contains("holds 10000000000 bytes"), "{err}");
    }

    #[test]
    fn a_grown_file_is_refused() {
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, b"abcdef").unwrap();
        let v = Verifier::new("p", &digest_of(b"abc")).unwrap();
        let err = read_file(file, 0, v).unwrap_err().to_string();
        assert!(err.contains("more than the 3 bytes"), "{err}");
    }
}
