use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use super::url::Scheme;
use super::{StoreError, StoreUrl};

/// Limits on how long one request may take and how often it is retried.
///
/// object_store's defaults (10 retries, up to 15 s backoff, a 180 s budget) can hold a single FUSE
/// read for minutes; a reader waiting on a mount needs an answer well inside the kernel's patience.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub max_retries: usize,
    pub retry_budget: Duration,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Create the directory of a `file://` store if it is missing (writers only).
    pub create_local_dir: bool,
    /// object_store configuration keys (`aws_access_key_id`, `google_service_account`, ...) that
    /// override what the environment says: for callers that hold credentials themselves.
    pub settings: Vec<(String, String)>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_retries: 3,
            retry_budget: Duration::from_secs(20),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            create_local_dir: false,
            settings: Vec::new(),
        }
    }
}

impl StoreConfig {
    fn retry(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: self.max_retries,
            retry_timeout: self.retry_budget,
        }
    }

    pub(super) fn client(&self) -> ClientOptions {
        ClientOptions::new()
            .with_timeout(self.request_timeout)
            .with_connect_timeout(self.connect_timeout)
    }
}

pub(super) fn build(url: &StoreUrl, config: &StoreConfig) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let open_err = |reason: String| StoreError::Open {
        store: url.to_string(),
        reason,
    };
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        Scheme::File => {
            let dir = std::path::Path::new(url.root());
            if config.create_local_dir {
                std::fs::create_dir_all(dir).map_err(|e| open_err(format!("cannot create {}: {e}", dir.display())))?;
            }
            if !dir.is_dir() {
                return Err(open_err(format!("directory {} does not exist", dir.display())));
            }
            Arc::new(LocalFileSystem::new_with_prefix(dir).map_err(|e| open_err(e.to_string()))?)
        }
        #[cfg(any(test, feature = "testing"))]
        Scheme::Test => super::testing::in_process_store(url.root()),
        #[cfg(not(any(test, feature = "testing")))]
        Scheme::Test => return Err(open_err("test:// stores exist only in builds for tests".to_string())),
        Scheme::S3 => {
            // from_env: operators configure credentials the AWS way (env, profile, instance role).
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(url.root())
                .with_retry(config.retry())
                .with_client_options(config.client())
                .with_http_connector(super::metered::MeteredConnector);
            if let Some(endpoint) = url.option("endpoint") {
                builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
            }
            if let Some(region) = url.option("region") {
                builder = builder.with_region(region);
            }
            if let Some(allow) = url.option("allow_http") {
                builder = builder.with_allow_http(allow == "true");
            }
            if let Some(vhost) = url.option("virtual_hosted") {
                builder = builder.with_virtual_hosted_style_request(vhost == "true");
            }
            for (key, value) in &config.settings {
                builder = builder.with_config(setting(key).map_err(&open_err)?, value);
            }
            Arc::new(builder.build().map_err(|e| open_err(e.to_string()))?)
        }
        Scheme::Gcs => {
            let mut builder = GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(url.root())
                .with_retry(config.retry())
                .with_client_options(config.client())
                .with_http_connector(super::metered::MeteredConnector);
            for (key, value) in &config.settings {
                builder = builder.with_config(setting(key).map_err(&open_err)?, value);
            }
            Arc::new(builder.build().map_err(|e| open_err(e.to_string()))?)
        }
        Scheme::Azure => {
            let mut builder = MicrosoftAzureBuilder::from_env()
                .with_container_name(url.root())
                .with_retry(config.retry())
                .with_client_options(config.client())
                .with_http_connector(super::metered::MeteredConnector);
            for (key, value) in &config.settings {
                builder = builder.with_config(setting(key).map_err(&open_err)?, value);
            }
            Arc::new(builder.build().map_err(|e| open_err(e.to_string()))?)
        }
    };
    if url.prefix().as_ref().is_empty() {
        Ok(store)
    } else {
        Ok(Arc::new(PrefixStore::new(store, url.prefix().clone())))
    }
}

/// A configuration key of one of object_store's builders, by its name.
fn setting<K: std::str::FromStr>(key: &str) -> Result<K, String> {
    key.parse().map_err(|_| format!("unknown store setting {key:?}"))
}
