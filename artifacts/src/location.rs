//! Parsing a `--store` URL into where the artifacts are, without touching the disk or the
//! network: `file:///abs/dir` or `s3://bucket[/prefix]`.

use std::path::PathBuf;

use object_store::path::Path;
use url::Url;

use super::StoreConfigError;

/// Where a store's objects live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreLocation {
    /// A local directory (absolute, not checked to exist yet).
    File(PathBuf),
    /// An S3 bucket, with an optional key prefix prepended to every object path.
    S3 {
        bucket: String,
        prefix: Option<Path>,
    },
}

impl StoreLocation {
    pub(crate) fn parse(raw: &str) -> Result<Self, StoreConfigError> {
        let invalid = |reason: &str| StoreConfigError::InvalidUrl {
            url: raw.to_owned(),
            reason: reason.to_owned(),
        };
        let url = Url::parse(raw).map_err(|e| invalid(&e.to_string()))?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("a store url has no query or fragment"));
        }
        if !url.username().is_empty() || url.password().is_some() || url.port().is_some() {
            return Err(invalid(
                "a store url has no user, password or port (credentials come from AWS_* variables)",
            ));
        }
        match url.scheme() {
            "file" => {
                // `Url` reads `file:dir` and `file://dir/x` leniently; insist on the
                // `file:///abs/dir` form so a relative path is never taken for an absolute one.
                let has_root = raw
                    .get(..8)
                    .is_some_and(|p| p.eq_ignore_ascii_case("file:///"));
                if !has_root || url.host_str().is_some_and(|h| !h.is_empty()) {
                    return Err(invalid(
                        "a file store needs an absolute path: file:///abs/dir (three slashes)",
                    ));
                }
                let dir = url
                    .to_file_path()
                    .map_err(|()| invalid("not a local absolute path"))?;
                Ok(Self::File(dir))
            }
            "s3" => {
                let bucket = url.host_str().unwrap_or_default();
                if !valid_bucket(bucket) {
                    return Err(invalid(
                        "an s3 store url is s3://bucket[/prefix] with a bucket name of 3-63 \
                         letters, digits, '.', '-' or '_'",
                    ));
                }
                // `Url` resolves `a/../b` to `b`; a prefix that says `..` is a mistake.
                let dot_segment = raw.split('/').skip(3).any(|seg| {
                    let seg = seg.to_ascii_lowercase().replace("%2e", ".");
                    seg == "." || seg == ".."
                });
                if dot_segment {
                    return Err(invalid("bad prefix: '.' and '..' segments are not allowed"));
                }
                let trimmed = url.path().trim_matches('/');
                let prefix = if trimmed.is_empty() {
                    None
                } else {
                    let path = Path::from_url_path(trimmed)
                        .map_err(|e| invalid(&format!("bad prefix: {e}")))?;
                    Some(path)
                };
                Ok(Self::S3 {
                    bucket: bucket.to_owned(),
                    prefix,
                })
            }
            other => Err(StoreConfigError::UnsupportedScheme {
                scheme: other.to_owned(),
            }),
        }
    }
}

/// S3's rules, loosely: legacy buckets may hold upper case and underscores.
fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        assert_eq!(
            StoreLocation::parse("file:///srv/models").unwrap(),
            StoreLocation::File("/srv/models".into())
        );
        assert_eq!(
            StoreLocation::parse("file:///srv/my%20models/").unwrap(),
            StoreLocation::File("/srv/my models/".into())
        );
        assert_eq!(
            StoreLocation::parse("s3://bucket").unwrap(),
            StoreLocation::S3 {
                bucket: "bucket".into(),
                prefix: None
            }
        );
        assert_eq!(
            StoreLocation::parse("s3://my-bucket/a/b/").unwrap(),
            StoreLocation::S3 {
                bucket: "my-bucket".into(),
                prefix: Some(Path::from("a/b"))
            }
        );
    }

    #[test]
    fn refused_forms() {
        let cases = [
            ("file://relative/dir", "absolute path"),
            ("file:relative", "absolute path"),
            ("file:/abs", "absolute path"),
            ("/abs/dir", "not valid"),
            ("ftp://host/dir", "scheme \"ftp\""),
            ("http://host/dir", "scheme \"http\""),
            ("s3://", "bucket"),
            ("s3:///prefix", "bucket"),
            ("s3://b", "bucket"),
            ("s3://bucket/a/../b", "prefix"),
            ("s3://bucket/a/%2E%2e", "prefix"),
            ("s3://bucket/a//b", "prefix"),
            ("s3://bucket?x=1", "query"),
            ("s3://key:secret@bucket", "password"),
            ("s3://bucket:9000", "port"),
        ];
        for (url, needle) in cases {
            let err = StoreLocation::parse(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url} => {err}");
        }
    }
}
