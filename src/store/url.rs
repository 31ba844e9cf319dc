use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use object_store::path::Path;

use super::StoreError;

/// Which kind of store a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `file:///abs/dir`, or a bare absolute path: the embedded default.
    File,
    /// `s3://bucket[/prefix][?endpoint=..&region=..&allow_http=true]`
    S3,
    /// `gs://bucket[/prefix]`
    Gcs,
    /// `az://container[/prefix]` (account from the environment)
    Azure,
    /// `test://name`: one in-process store per name, for tests (builds with the `testing` feature).
    Test,
}

/// A parsed, canonical store URL. Its string form identifies the store in the index and cache keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StoreUrl {
    scheme: Scheme,
    /// Directory for `file`, bucket or container for clouds, name for `memory`.
    root: String,
    prefix: Path,
    options: BTreeMap<String, String>,
}

/// Query options an S3 URL accepts; anything else is a typo we should not silently ignore.
const S3_OPTIONS: &[&str] = &["endpoint", "region", "allow_http", "virtual_hosted"];

impl StoreUrl {
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    /// The key prefix below the bucket under which lazysnap keeps everything.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    pub fn option(&self, name: &str) -> Option<&str> {
        self.options.get(name).map(String::as_str)
    }

    fn invalid(raw: &str, reason: impl Into<String>) -> StoreError {
        StoreError::InvalidUrl {
            url: raw.to_string(),
            reason: reason.into(),
        }
    }
}

impl FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        if raw.starts_with('/') {
            return format!("file://{raw}").parse();
        }
        // The URL parser would silently resolve `..`; a store path should say where it is.
        if let Some(path) = raw.strip_prefix("file://") {
            if path.split('/').any(|part| part == ".." || part == ".") {
                return Err(StoreUrl::invalid(raw, "the directory must not contain . or .."));
            }
        }
        let parsed = url::Url::parse(raw).map_err(|e| {
            StoreUrl::invalid(
                raw,
                format!("{e} (expected file:///dir, s3://bucket/prefix, gs://, az://, test://)"),
            )
        })?;
        let scheme = match parsed.scheme() {
            "file" => Scheme::File,
            "s3" => Scheme::S3,
            "gs" => Scheme::Gcs,
            "az" | "azure" => Scheme::Azure,
            "test" => Scheme::Test,
            other => return Err(StoreUrl::invalid(raw, format!("unknown scheme {other:?}"))),
        };
        let options: BTreeMap<String, String> = parsed.query_pairs().into_owned().collect();
        let allowed: &[&str] = if scheme == Scheme::S3 { S3_OPTIONS } else { &[] };
        if let Some(bad) = options.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(StoreUrl::invalid(raw, format!("unknown option {bad:?}")));
        }
        let host = parsed.host_str().unwrap_or("").to_string();
        let path = parsed.path().trim_matches('/');
        let (root, prefix) = match scheme {
            Scheme::File => {
                if !host.is_empty() {
                    return Err(StoreUrl::invalid(raw, "file URLs need an absolute path: file:///dir"));
                }
                if path.is_empty() {
                    return Err(StoreUrl::invalid(raw, "the root directory cannot be a store"));
                }
                (format!("/{path}"), Path::default())
            }
            _ => {
                if host.is_empty() {
                    return Err(StoreUrl::invalid(raw, "missing bucket or name"));
                }
                let prefix = Path::parse(path).map_err(|e| StoreUrl::invalid(raw, e.to_string()))?;
                (host, prefix)
            }
        };
        Ok(StoreUrl {
            scheme,
            root,
            prefix,
            options,
        })
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::File => return write!(f, "file://{}", self.root),
            Scheme::S3 => "s3",
            Scheme::Gcs => "gs",
            Scheme::Azure => "az",
            Scheme::Test => "test",
        };
        write!(f, "{scheme}://{}", self.root)?;
        if !self.prefix.as_ref().is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        let mut sep = '?';
        for (key, value) in &self.options {
            write!(f, "{sep}{key}={value}")?;
            sep = '&';
        }
        Ok(())
    }
}
