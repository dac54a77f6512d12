//! The artifact store: where a worker reads model files (`--store`), checked byte for byte
//! against the manifest.
//!
//! [`ArtifactStore`] wraps an `object_store` backend chosen by URL — `file:///abs/dir`
//! ([`LocalFileSystem`]) or `s3://bucket[/prefix]` (S3 or any S3-compatible server,
//! configured from `AWS_*` variables as the AWS tools read them). [`ArtifactStore::fetch`]
//! streams an object, hashes it as it arrives and stops as soon as its size is not the one
//! the manifest recorded (announced or received); [`ArtifactStore::fetch_model`] fetches a version's two files at once;
//! [`ArtifactStore::put`] writes (multipart above [`StoreOptions::multipart_threshold`]).
//! Errors are sorted once, in `error.rs`, into [`FetchError`] kinds the worker maps to
//! HTTP statuses. Submodules: `location` (URL parsing), `verify` (size and sha256 checks),
//! `error`.

mod error;
mod location;
mod verify;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    BackoffConfig, ClientOptions, GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload,
    RetryConfig, WriteMultipart,
};
use shardline_shared::manifest::{CONFIG_FILE, FileDigest, Manifest, WEIGHTS_FILE};

pub use error::{FetchError, StoreConfigError};
use location::StoreLocation;
use verify::Verifier;

/// How many parts of one multipart upload are in flight at once.
const UPLOAD_CONCURRENCY: usize = 4;

/// Timeouts, retries and limits of an [`ArtifactStore`]. `Default` is the production
/// setting; tests shorten the timeouts.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `AWS_*` variables for an `s3://` store, as `(name, value)` pairs. Only
    /// [`ArtifactStore::from_url`] reads the process environment; tests pass their own.
    pub aws_env: Vec<(String, String)>,
    /// Time to establish a TCP (+TLS) connection.
    pub connect_timeout: Duration,
    /// Longest silence while waiting for response headers or the next body chunk: a
    /// stalled or black-holed store is noticed quickly, while a large body that keeps
    /// moving is bounded only by `request_timeout`.
    pub read_timeout: Duration,
    /// Upper bound on one whole request including its body: a last resort, sized for
    /// multi-GB weights.
    pub request_timeout: Duration,
    /// Retries of one request (connect errors, timeouts, 5xx) before giving up.
    pub max_retries: usize,
    /// No retry starts later than this after the first attempt.
    pub retry_timeout: Duration,
    /// Bodies larger than this are uploaded with a multipart upload.
    pub multipart_threshold: usize,
    /// Part size of a multipart upload (S3 needs at least 5 MiB except for the last).
    pub multipart_part_size: usize,
    /// [`ArtifactStore::fetch_model`]'s limit for `config.json`.
    pub max_config_bytes: u64,
    /// [`ArtifactStore::fetch_model`]'s limit for `model.safetensors`.
    pub max_weights_bytes: u64,
}

/// Production values. A black-holed store fails a fetch after about
/// `(1 + max_retries) × read_timeout` plus backoff (≈ 30 s, capped by `retry_timeout`);
/// refused connections and 5xx fail within a second. A healthy transfer of multi-GB
/// weights at a few MB/s fits in `request_timeout`.
impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            aws_env: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(15 * 60),
            max_retries: 2,
            retry_timeout: Duration::from_secs(30),
            multipart_threshold: 16 << 20,
            multipart_part_size: 8 << 20,
            max_config_bytes: 1 << 20,
            max_weights_bytes: u64::MAX,
        }
    }
}

impl StoreOptions {
    /// Uses the process's `AWS_*` variables.
    pub fn with_process_env(self) -> Self {
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with("AWS_"));
        self.with_env(env)
    }

    /// Uses these `AWS_*` variables (other names are ignored).
    pub fn with_env<K, V>(mut self, env: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.aws_env = env.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        self
    }
}

/// A model artifact store: verified reads, and writes for tests and `shardctl publish`.
///
/// Cheap to clone; share one per process.
///
/// ```no_run
/// use shardline_artifacts::ArtifactStore;
/// # async fn load(
/// #     manifest: &shardline_shared::manifest::Manifest,
/// # ) -> Result<(), Box<dyn std::error::Error>> {
/// let store = ArtifactStore::from_url("s3://models/prod")?;
/// let (config, weights) = store.fetch_model(manifest).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    store: Arc<dyn ObjectStore>,
    options: Arc<StoreOptions>,
    /// The URL it was made from, for logs and errors.
    url: String,
}

impl ArtifactStore {
    /// Opens the store at a `--store` URL with default options and the process's `AWS_*`
    /// variables.
    pub fn from_url(url: &str) -> Result<Self, StoreConfigError> {
        Self::from_url_with(url, StoreOptions::default().with_process_env())
    }

    /// Opens the store at `url` with these options; reads no environment variable.
    pub fn from_url_with(url: &str, options: StoreOptions) -> Result<Self, StoreConfigError> {
        let store: Arc<dyn ObjectStore> = match StoreLocation::parse(url)? {
            StoreLocation::File(dir) => Arc::new(local_store(dir)?),
            StoreLocation::S3 { bucket, prefix } => {
                let s3 = s3_store(&bucket, &options)?;
                match prefix {
                    Some(prefix) => Arc::new(PrefixStore::new(s3, prefix)),
                    None => Arc::new(s3),
                }
            }
        };
        Ok(Self {
            store,
            options: Arc::new(options),
            url: url.to_owned(),
        })
    }

    /// The URL this store was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Reads the object at `path` (relative to the store root) and checks it against
    /// `expected`. Refuses without a request when `expected.size > max_bytes`, and stops
    /// reading as soon as the store announces or sends a size other than `expected.size`.
    pub async fn fetch(
        &self,
        path: &str,
        expected: &FileDigest,
        max_bytes: u64,
    ) -> Result<Bytes, FetchError> {
        if expected.size > max_bytes {
            return Err(FetchError::TooLarge {
                path: path.to_owned(),
                size: expected.size,
                limit: max_bytes,
            });
        }
        let location = object_path(path)?;
        let verifier = Verifier::new(path, expected)?;
        let started = Instant::now();
        let result = self
            .store
            .get(&location)
            .await
            .map_err(|e| error::from_store(path, e))?;
        verifier.check_announced(result.meta.size)?;
        let start = result.range.start;
        let bytes = match result.payload {
            GetResultPayload::File(file, _) => {
                tokio::task::spawn_blocking(move || verify::read_file(file, start, verifier))
                    .await
                    .map_err(|e| FetchError::Other {
                        reason: format!("reading {path}: {e}"),
                    })??
            }
            GetResultPayload::Stream(stream) => {
                let stream = futures::TryStreamExt::map_err(stream, |e| error::from_store(path, e));
                verify::read_stream(stream, verifier).await?
            }
        };
        tracing::debug!(
            store = %self.url,
            path,
            bytes = bytes.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "artifact fetched"
        );
        Ok(bytes)
    }

    /// Fetches `config.json` and `model.safetensors` of a version concurrently, each
    /// checked against the manifest. Returns `(config, weights)`.
    pub async fn fetch_model(&self, manifest: &Manifest) -> Result<(Bytes, Bytes), FetchError> {
        let config_path = manifest.object_path(CONFIG_FILE);
        let weights_path = manifest.object_path(WEIGHTS_FILE);
        tokio::try_join!(
            self.fetch(
                &config_path,
                &manifest.config_file,
                self.options.max_config_bytes
            ),
            self.fetch(
                &weights_path,
                &manifest.weights_file,
                self.options.max_weights_bytes
            ),
        )
    }

    /// Writes `bytes` at `path`, replacing any object there. Bodies above
    /// [`StoreOptions::multipart_threshold`] go up as a multipart upload, a few parts at a
    /// time; a failed multipart upload is aborted.
    pub async fn put(&self, path: &str, bytes: Bytes) -> Result<(), FetchError> {
        self.put_with_progress(path, bytes, &|_| {}).await
    }

    /// [`ArtifactStore::put`], calling `progress` with the number of bytes of each part
    /// as it is handed to the upload (a small body: once, when stored). The calls add up
    /// to the body's length when the upload succeeds (`shardctl publish`'s progress bar).
    pub async fn put_with_progress(
        &self,
        path: &str,
        bytes: Bytes,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), FetchError> {
        let location = object_path(path)?;
        let to_err = |e| error::from_store(path, e);
        if bytes.len() <= self.options.multipart_threshold {
            let len = bytes.len() as u64;
            self.store
                .put(&location, PutPayload::from_bytes(bytes))
                .await
                .map_err(to_err)?;
            progress(len);
            return Ok(());
        }
        let part_size = self.options.multipart_part_size.max(5 << 20);
        let upload = self.store.put_multipart(&location).await.map_err(to_err)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size);
        let mut rest = bytes;
        while !rest.is_empty() {
            if let Err(e) = writer.wait_for_capacity(UPLOAD_CONCURRENCY).await {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(path, error = %abort, "aborting a multipart upload failed");
                }
                return Err(to_err(e));
            }
            let part = rest.split_to(part_size.min(rest.len()));
            let len = part.len() as u64;
            writer.put(part);
            progress(len);
        }
        writer.finish().await.map_err(to_err)?;
        Ok(())
    }
}

fn object_path(path: &str) -> Result<Path, FetchError> {
    Path::parse(path).map_err(|e| FetchError::Other {
        reason: format!("invalid object path {path:?}: {e}"),
    })
}

fn local_store(dir: std::path::PathBuf) -> Result<LocalFileSystem, StoreConfigError> {
    let dir_err = |reason: String| StoreConfigError::Directory {
        path: dir.clone(),
        reason,
    };
    match std::fs::metadata(&dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(dir_err("is not a directory".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(dir_err("does not exist".into()));
        }
        Err(e) => return Err(dir_err(e.to_string())),
    }
    LocalFileSystem::new_with_prefix(&dir).map_err(|e| dir_err(e.to_string()))
}

fn s3_store(
    bucket: &str,
    options: &StoreOptions,
) -> Result<object_store::aws::AmazonS3, StoreConfigError> {
    let client = ClientOptions::new()
        .with_connect_timeout(options.connect_timeout)
        .with_read_timeout(options.read_timeout)
        .with_timeout(options.request_timeout);
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: options.max_retries,
        retry_timeout: options.retry_timeout,
    };
    // Client options first: `with_config` below may refine them (AWS_ALLOW_HTTP).
    let mut builder = AmazonS3Builder::new()
        .with_client_options(client)
        .with_retry(retry);
    let (mut custom_endpoint, mut style_chosen) = (false, false);
    for (name, value) in &options.aws_env {
        if !name.starts_with("AWS_") || value.is_empty() {
            continue;
        }
        let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() else {
            continue;
        };
        match key {
            // The bucket comes from the URL only.
            AmazonS3ConfigKey::Bucket => continue,
            AmazonS3ConfigKey::Endpoint | AmazonS3ConfigKey::S3Endpoint => custom_endpoint = true,
            AmazonS3ConfigKey::VirtualHostedStyleRequest => style_chosen = true,
            _ => {}
        }
        builder = builder.with_config(key, value);
    }
    // AWS itself: virtual-hosted style. A custom endpoint (MinIO, moto, Ceph...): path
    // style, which every S3-compatible server speaks. AWS_VIRTUAL_HOSTED_STYLE_REQUEST wins.
    if !style_chosen {
        builder = builder.with_virtual_hosted_style_request(!custom_endpoint);
    }
    builder
        .with_bucket_name(bucket)
        .build()
        .map_err(|e| StoreConfigError::S3 {
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint_of(env: &[(&str, &str)]) -> String {
        let options = StoreOptions::default().with_env(env.iter().copied());
        let store = ArtifactStore::from_url_with("s3://models/p", options).unwrap();
        format!("{:?}", store.store)
    }

    #[test]
    fn addressing_style() {
        let aws = endpoint_of(&[("AWS_REGION", "eu-west-1")]);
        assert!(
            aws.contains("https://models.s3.eu-west-1.amazonaws.com"),
            "{aws}"
        );
        let minio = endpoint_of(&[("AWS_ENDPOINT_URL", "http://minio:9000")]);
        assert!(minio.contains("http://minio:9000/models"), "{minio}");
        let forced = endpoint_of(&[
            ("AWS_ENDPOINT_URL", "http://models.minio:9000"),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "true"),
        ]);
        assert!(!forced.contains("9000/models"), "{forced}");
    }
}
