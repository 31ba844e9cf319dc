//! Every HTTP request the S3, GCS and Azure clients of this process send, counted by outcome, and
//! the retries among them. object_store retries inside one call (5xx, 429 and broken connections)
//! and does not say so; this connector sits under it and sees each attempt. An attempt is a retry
//! when the same request (method, URL, range) failed in a retryable way just before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use object_store::ClientOptions;

/// HTTP requests of this process by outcome, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpStats {
    pub requests: u64,
    /// 2xx and 3xx (304 Not Modified and the like).
    pub succeeded: u64,
    /// 4xx but throttling: missing objects, failed conditions, refused credentials.
    pub client_errors: u64,
    /// 429 and 503 (S3's SlowDown): the store asks for less.
    pub throttled: u64,
    /// Other 5xx.
    pub server_errors: u64,
    /// No answer: connection refused or reset, timeouts.
    pub transport_errors: u64,
    /// Attempts that repeated a request which had just failed in a retryable way.
    pub retries: u64,
}

#[derive(Debug, Default)]
struct Tally {
    requests: AtomicU64,
    succeeded: AtomicU64,
    client_errors: AtomicU64,
    throttled: AtomicU64,
    server_errors: AtomicU64,
    transport_errors: AtomicU64,
    retries: AtomicU64,
}

static TALLY: Tally = Tally {
    requests: AtomicU64::new(0),
    succeeded: AtomicU64::new(0),
    client_errors: AtomicU64::new(0),
    throttled: AtomicU64::new(0),
    server_errors: AtomicU64::new(0),
    transport_errors: AtomicU64::new(0),
    retries: AtomicU64::new(0),
};

/// What every store client of this process has sent so far.
pub fn http_stats() -> HttpStats {
    HttpStats {
        requests: TALLY.requests.load(Relaxed),
        succeeded: TALLY.succeeded.load(Relaxed),
        client_errors: TALLY.client_errors.load(Relaxed),
        throttled: TALLY.throttled.load(Relaxed),
        server_errors: TALLY.server_errors.load(Relaxed),
        transport_errors: TALLY.transport_errors.load(Relaxed),
        retries: TALLY.retries.load(Relaxed),
    }
}

/// Requests that failed in a way object_store retries, remembered until repeated; a few hundred
/// at most are in the air at once, so this many is plenty.
const REMEMBERED_FAILURES: usize = 4096;

/// object_store's own connector, counted.
#[derive(Debug, Default)]
pub(super) struct MeteredConnector;

impl HttpConnector for MeteredConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = shared_client(options)?;
        Ok(HttpClient::new(Metered {
            inner,
            failed: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(REMEMBERED_FAILURES).expect("not zero"),
            )),
        }))
    }
}

/// One HTTP client per set of client options, built once per process: building one loads the
/// system's root certificates (about 4 ms here), which a daemon would otherwise pay on the first
/// mount of every store, and stores on one endpoint share its connections. Options are told apart
/// by how they print: options that print the same are the same.
fn shared_client(options: &ClientOptions) -> object_store::Result<HttpClient> {
    type Built = Arc<OnceLock<Result<HttpClient, String>>>;
    static CLIENTS: OnceLock<Mutex<HashMap<String, Built>>> = OnceLock::new();
    let slot = {
        let mut clients = CLIENTS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        clients.entry(format!("{options:?}")).or_default().clone()
    };
    // Outside the map's lock: a second caller of the same options waits for this build only.
    let built = slot.get_or_init(|| ReqwestConnector::default().connect(options).map_err(|e| e.to_string()));
    built.clone().map_err(|reason| object_store::Error::Generic {
        store: "HTTP client",
        source: reason.into(),
    })
}

/// Builds the HTTP clients that stores opened with `config` use, so that the first mount of a
/// daemon does not wait for it: over HTTPS and, for stores that allow it, plain HTTP.
pub fn prepare_http_clients(config: &super::StoreConfig) {
    for allow_http in [false, true] {
        let _ = shared_client(&config.client().with_allow_http(allow_http));
    }
}

#[derive(Debug)]
struct Metered {
    inner: HttpClient,
    failed: Mutex<lru::LruCache<String, ()>>,
}

impl Metered {
    fn failed(&self) -> std::sync::MutexGuard<'_, lru::LruCache<String, ()>> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl HttpService for Metered {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let range = request
            .headers()
            .get("range")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let key = format!("{} {} {range}", request.method(), request.uri());
        TALLY.requests.fetch_add(1, Relaxed);
        if self.failed().pop(&key).is_some() {
            TALLY.retries.fetch_add(1, Relaxed);
        }
        let result = self.inner.execute(request).await;
        let retryable = match &result {
            Ok(response) => {
                let status = response.status();
                let (counter, retryable) = match status.as_u16() {
                    429 | 503 => (&TALLY.throttled, true),
                    500..=599 => (&TALLY.server_errors, true),
                    400..=499 => (&TALLY.client_errors, false),
                    _ => (&TALLY.succeeded, false),
                };
                counter.fetch_add(1, Relaxed);
                retryable
            }
            Err(_) => {
                TALLY.transport_errors.fetch_add(1, Relaxed);
                true
            }
        };
        if retryable {
            self.failed().put(key, ());
        }
        result
    }
}
