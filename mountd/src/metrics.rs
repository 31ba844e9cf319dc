//! Prometheus metrics at `http://<--metrics-addr>/metrics`, in the OpenMetrics text format.
//!
//! Nothing is counted twice: a scrape takes a [`Snapshot`] of the figures the daemon keeps anyway
//! (each mount's counters, the cache's, the jobs' progress, what `lazysnap daemon status` shows)
//! and encodes it; only the FUSE latency histograms are recorded as requests are answered. Labels
//! stay bounded: per mount path, restore job, uploader or backup, never per file or block.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use lazysnap::backup::BackupStatus;
use lazysnap::cache::CacheStats;
use lazysnap::control::answers::{Limits, MountInfo};
use lazysnap::control::records::RestoreJobStatus;
use lazysnap::fuse::LatencyFamily;
use lazysnap::store::{BufferStats, HttpStats};
use lazysnap::uploader::UploaderStatus;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::daemon::Daemon;

/// What one scrape shows.
#[derive(Debug)]
pub struct Snapshot {
    pub mounts: Vec<MountInfo>,
    pub cache: CacheStats,
    pub buffers: BufferStats,
    pub limits: Limits,
    pub restores: Vec<RestoreJobStatus>,
    pub uploaders: Vec<UploaderStatus>,
    pub backups: Vec<BackupStatus>,
    pub http: HttpStats,
}

/// Listens on `addr` and answers scrapes until the daemon stops; answers the address bound (port
/// 0 picks a free one). The address is bound before this returns, so a bad or busy one fails the
/// daemon's start.
pub async fn serve(addr: SocketAddr, daemon: Arc<Daemon>, latencies: LatencyFamily) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr} (--metrics-addr): {e}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "serving Prometheus metrics at /metrics");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (daemon, latencies) = (daemon.clone(), latencies.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let (daemon, latencies) = (daemon.clone(), latencies.clone());
                    async move { Ok::<_, Infallible>(answer(&request, &daemon, latencies).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!(error = %e, "metrics connection failed");
                }
            });
        }
    });
    Ok(bound)
}

async fn answer(request: &Request<Incoming>, daemon: &Daemon, latencies: LatencyFamily) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header(
                hyper::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    if request.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "metrics are at /metrics\n".into());
    }
    let mut registry = Registry::default();
    registry.register(
        "lazysnap_fuse_request_duration_seconds",
        "Time to answer FUSE requests, by operation",
        latencies,
    );
    registry.register_collector(Box::new(daemon.metrics_snapshot().await));
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => reply(StatusCode::OK, body),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}\n"),
        ),
    }
}

/// One family: its name, help, type and a value per label set.
struct Family<'a, L> {
    name: &'a str,
    help: &'a str,
    kind: MetricType,
    values: Vec<(L, f64)>,
}

fn encode_family<L: prometheus_client::encoding::EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    family: Family<'_, L>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
    for (labels, value) in &family.values {
        let encoder = metric.encode_family(labels)?;
        match family.kind {
            MetricType::Counter => ConstCounter::new(*value as u64).encode(encoder)?,
            _ => ConstGauge::new(*value).encode(encoder)?,
        }
    }
    Ok(())
}

type Labels = Vec<(&'static str, String)>;

impl Snapshot {
    /// Every family, node-wide first.
    fn families(&self) -> Vec<Family<'static, Labels>> {
        use MetricType::{Counter, Gauge};
        let node = |value: u64| vec![(Vec::new(), value as f64)];
        let tier = |memory: u64, disk: u64| {
            vec![
                (vec![("tier", "memory".to_string())], memory as f64),
                (vec![("tier", "disk".to_string())], disk as f64),
            ]
        };
        let per_mount = |value: &dyn Fn(&MountInfo) -> u64| -> Vec<(Labels, f64)> {
            self.mounts
                .iter()
                .map(|m| (vec![("mount", m.mount_path.clone())], value(m) as f64))
                .collect()
        };
        let hydrating: Vec<&MountInfo> = self.mounts.iter().filter(|m| m.hydration.is_some()).collect();
        let hydration = |value: &dyn Fn(&lazysnap::hydrate::HydrationStatus) -> u64| -> Vec<(Labels, f64)> {
            hydrating
                .iter()
                .filter_map(|m| {
                    Some((
                        vec![("mount", m.mount_path.clone())],
                        value(m.hydration.as_ref()?) as f64,
                    ))
                })
                .collect()
        };
        let restore = |value: &dyn Fn(&RestoreJobStatus) -> u64| -> Vec<(Labels, f64)> {
            self.restores
                .iter()
                .map(|r| (vec![("job", r.job.id.clone())], value(r) as f64))
                .collect()
        };
        let family = |name, help, kind, values| Family {
            name,
            help,
            kind,
            values,
        };
        vec![
            family(
                "lazysnap_mounts",
                "Mounts served",
                Gauge,
                node(self.limits.mounts as u64),
            ),
            family(
                "lazysnap_files",
                "Files shown by each mount",
                Gauge,
                per_mount(&|m| m.files),
            ),
            family(
                "lazysnap_open_files",
                "Files open on each mount",
                Gauge,
                per_mount(&|m| m.open_files as u64),
            ),
            family("lazysnap_opens", "Files opened", Counter, per_mount(&|m| m.stats.opens)),
            family(
                "lazysnap_passthrough_opens",
                "Opens the kernel serves from a verified local copy (FUSE passthrough)",
                Counter,
                per_mount(&|m| m.stats.passthrough_opens),
            ),
            family(
                "lazysnap_reads",
                "Reads answered through the daemon",
                Counter,
                per_mount(&|m| m.stats.reads),
            ),
            family(
                "lazysnap_read_bytes",
                "Bytes read through the daemon",
                Counter,
                per_mount(&|m| m.stats.bytes_read),
            ),
            family(
                "lazysnap_read_errors",
                "Reads that failed (EIO)",
                Counter,
                per_mount(&|m| m.stats.read_errors),
            ),
            family(
                "lazysnap_store_get_requests",
                "Ranged GETs sent to the store",
                Counter,
                per_mount(&|m| m.stats.store.requests),
            ),
            family(
                "lazysnap_store_fetched_bytes",
                "Bytes fetched from the store (verified or not)",
                Counter,
                per_mount(&|m| m.stats.store.bytes_fetched),
            ),
            family(
                "lazysnap_store_failed_requests",
                "GETs that failed after the store client's own retries",
                Counter,
                per_mount(&|m| m.stats.store.failed_requests),
            ),
            family(
                "lazysnap_checksum_failures",
                "Blocks fetched whose checksum did not match (never served)",
                Counter,
                per_mount(&|m| m.stats.store.checksum_failures),
            ),
            family(
                "lazysnap_store_http_requests",
                "HTTP requests to S3, GCS and Azure, every attempt, by outcome",
                Counter,
                [
                    ("succeeded", self.http.succeeded),
                    ("client_error", self.http.client_errors),
                    ("throttled", self.http.throttled),
                    ("server_error", self.http.server_errors),
                    ("transport_error", self.http.transport_errors),
                ]
                .into_iter()
                .map(|(outcome, n)| (vec![("outcome", outcome.to_string())], n as f64))
                .collect(),
            ),
            family(
                "lazysnap_store_retries",
                "HTTP requests repeating one that had just failed (5xx, 429, no answer)",
                Counter,
                node(self.http.retries),
            ),
            family(
                "lazysnap_store_gets_in_flight",
                "Ranged GETs open now, all mounts and jobs",
                Gauge,
                node(self.limits.gets_in_flight as u64),
            ),
            family(
                "lazysnap_fuse_requests_in_flight",
                "FUSE requests being answered now",
                Gauge,
                node(self.limits.fuse_requests_in_flight as u64),
            ),
            family(
                "lazysnap_fuse_oldest_request_milliseconds",
                "How long the oldest FUSE request being answered has waited",
                Gauge,
                node(self.limits.oldest_fuse_request_ms),
            ),
            family(
                "lazysnap_fuse_stuck_requests",
                "FUSE requests that waited past 30 s (each logged as an error)",
                Counter,
                node(self.limits.stuck_fuse_requests),
            ),
            family(
                "lazysnap_block_buffer_bytes",
                "Block data held in memory: being fetched, cached or read (bytes in flight included)",
                Gauge,
                node(self.buffers.live_bytes),
            ),
            family(
                "lazysnap_cache_bytes",
                "Verified blocks kept, by tier",
                Gauge,
                tier(self.cache.memory_bytes, self.cache.disk_bytes),
            ),
            family(
                "lazysnap_cache_disk_quota_bytes",
                "Most bytes the disk tier keeps",
                Gauge,
                node(self.cache.disk_quota),
            ),
            family(
                "lazysnap_cache_hits",
                "Block lookups answered by a tier",
                Counter,
                tier(self.cache.memory_hits, self.cache.disk_hits),
            ),
            family(
                "lazysnap_cache_misses",
                "Block lookups no tier answered (then fetched)",
                Counter,
                node(self.cache.misses),
            ),
            family(
                "lazysnap_cache_evictions",
                "Blocks dropped to stay within a tier's size",
                Counter,
                tier(self.cache.memory_evictions, self.cache.disk_evictions),
            ),
            family(
                "lazysnap_hydration_bytes",
                "Bytes of each hydrating mount",
                Gauge,
                hydration(&|h| h.bytes_total),
            ),
            family(
                "lazysnap_hydration_done_bytes",
                "Bytes of each hydrating mount now local",
                Gauge,
                hydration(&|h| h.bytes_done),
            ),
            family(
                "lazysnap_restore_bytes",
                "Bytes each running or pending restore job copies",
                Gauge,
                restore(&|r| r.job.bytes_total),
            ),
            family(
                "lazysnap_restore_done_bytes",
                "Bytes each running or pending restore job has copied",
                Gauge,
                restore(&|r| r.job.bytes_done),
            ),
            family(
                "lazysnap_uploader_uploaded_bytes",
                "Bytes each uploader has uploaded",
                Counter,
                self.uploaders
                    .iter()
                    .map(|u| (vec![("volume", u.volume_id.clone())], u.bytes_uploaded as f64))
                    .collect(),
            ),
            family(
                "lazysnap_backup_generations",
                "Generations each backup has written",
                Counter,
                self.backups
                    .iter()
                    .map(|b| (vec![("location", b.location.clone())], b.generations_written as f64))
                    .collect(),
            ),
            family(
                "lazysnap_state",
                "Each job's state (1 for the current one)",
                Gauge,
                self.states(),
            ),
        ]
    }

    /// Hydrations, restore jobs, uploaders and backups, one series per job in its current state.
    fn states(&self) -> Vec<(Labels, f64)> {
        let name = |state: &dyn erased_state::State| state.name();
        let mut out: Vec<(Labels, f64)> = Vec::new();
        for m in &self.mounts {
            if let Some(h) = &m.hydration {
                out.push((
                    vec![
                        ("kind", "hydration".into()),
                        ("id", m.mount_path.clone()),
                        ("state", name(&h.state)),
                    ],
                    1.0,
                ));
            }
        }
        for r in &self.restores {
            out.push((
                vec![
                    ("kind", "restore".into()),
                    ("id", r.job.id.clone()),
                    ("state", name(&r.job.state)),
                ],
                1.0,
            ));
        }
        for u in &self.uploaders {
            out.push((
                vec![
                    ("kind", "uploader".into()),
                    ("id", u.volume_id.clone()),
                    ("state", name(&u.state)),
                ],
                1.0,
            ));
        }
        for b in &self.backups {
            out.push((
                vec![
                    ("kind", "backup".into()),
                    ("id", b.location.clone()),
                    ("state", name(&b.state)),
                ],
                1.0,
            ));
        }
        out
    }
}

/// A state's name as the control API spells it (its serde name).
mod erased_state {
    pub trait State {
        fn name(&self) -> String;
    }

    impl<T: serde::Serialize> State for T {
        fn name(&self) -> String {
            match serde_json::to_value(self) {
                Ok(serde_json::Value::String(name)) => name,
                other => format!("{other:?}"),
            }
        }
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in self.families() {
            encode_family(&mut encoder, family)?;
        }
        Ok(())
    }
}
