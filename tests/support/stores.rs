//! The stores behaviour tests run on: a local directory and the in-process S3 server. Tests are
//! written once against [`TestStore`] and run on both.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use tempfile::TempDir;

use super::s3::{S3Server, S3Stats};

pub enum TestStore {
    File(TempDir),
    S3(S3Server),
}

/// Everything lazysnap keeps in an S3 store goes below this prefix, so prefixes are exercised too.
const S3_PREFIX: &str = "cluster-a";

impl TestStore {
    pub fn file() -> TestStore {
        TestStore::File(
            tempfile::Builder::new()
                .prefix("lazysnap-store-")
                .tempdir()
                .expect("store dir"),
        )
    }

    pub fn s3() -> TestStore {
        TestStore::S3(S3Server::start())
    }

    /// Both kinds, for tests that run on each.
    pub fn all() -> Vec<TestStore> {
        vec![TestStore::file(), TestStore::s3()]
    }

    pub fn name(&self) -> &'static str {
        match self {
            TestStore::File(_) => "file",
            TestStore::S3(_) => "s3",
        }
    }

    pub fn url(&self) -> String {
        match self {
            TestStore::File(dir) => format!("file://{}", dir.path().display()),
            TestStore::S3(server) => format!(
                "s3://{}/{S3_PREFIX}?endpoint={}&region={}&allow_http=true",
                server.bucket(),
                server.endpoint(),
                server.region()
            ),
        }
    }

    /// Environment the CLI and daemon need to reach the store.
    pub fn env(&self) -> Vec<(String, String)> {
        match self {
            TestStore::File(_) => Vec::new(),
            TestStore::S3(server) => server.env(),
        }
    }

    pub fn server(&self) -> Option<&S3Server> {
        match self {
            TestStore::S3(server) => Some(server),
            TestStore::File(_) => None,
        }
    }

    /// Requests and bytes the server answered to GETs (S3 only: counted at the store itself).
    pub fn stats(&self) -> Option<S3Stats> {
        self.server().map(S3Server::stats)
    }

    fn local(&self, key: &str) -> PathBuf {
        match self {
            TestStore::File(dir) => dir.path().join(key),
            TestStore::S3(_) => unreachable!("local paths exist only for file stores"),
        }
    }

    /// Writes an object behind lazysnap's back (fixtures, hostile manifests).
    pub fn put(&self, key: &str, bytes: &[u8]) {
        match self {
            TestStore::File(_) => {
                let path = self.local(key);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
            TestStore::S3(server) => server.put_object(&format!("{S3_PREFIX}/{key}"), bytes.to_vec()),
        }
    }

    pub fn delete(&self, key: &str) {
        match self {
            TestStore::File(_) => std::fs::remove_file(self.local(key)).unwrap(),
            TestStore::S3(server) => server.delete_object(&format!("{S3_PREFIX}/{key}")),
        }
    }

    /// Every object key (relative to the store) with a token that changes when the object does.
    pub fn objects(&self) -> std::collections::BTreeMap<String, String> {
        match self {
            TestStore::File(dir) => walkdir::WalkDir::new(dir.path())
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_file())
                .map(|e| {
                    let key = e.path().strip_prefix(dir.path()).unwrap().display().to_string();
                    let meta = e.metadata().unwrap();
                    (
                        key,
                        format!("{} {:?} {:?}", meta.len(), meta.modified().ok(), meta.ino()),
                    )
                })
                .collect(),
            TestStore::S3(server) => server
                .list_keys(&format!("{S3_PREFIX}/"))
                .into_iter()
                .map(|(key, etag)| (key[S3_PREFIX.len() + 1..].to_string(), etag))
                .collect(),
        }
    }

    /// Changes bytes of an object without changing its length.
    pub fn corrupt(&self, key: &str) {
        match self {
            TestStore::File(_) => {
                let path = self.local(key);
                let mut bytes = std::fs::read(&path).unwrap();
                bytes.iter_mut().take(4096).for_each(|b| *b = !*b);
                std::fs::write(path, bytes).unwrap();
            }
            TestStore::S3(server) => server.corrupt_object(&format!("{S3_PREFIX}/{key}")),
        }
    }
}
