//! `lazysnap bench --profile rebalance`: a Fusion rebalance's download stage, lazily. `--vbuckets`
//! volumes of 4 MiB on the S3-like store, snapshotted as ns_server's plan pins them, one node's
//! plan mounted as 4 guests (`guests mount`): the time until every guest path is readable and
//! until the first read of every vbucket's first file has answered, against an
//! `accelerator-cli download-files`-style download of the same parts (16 GETs in flight, written
//! to local files). Medians of `--peer-runs` runs, each on a fresh node.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use lazysnap::control::guests::{GuestsMountRequest, UploadMountedVolumes};
use lazysnap::control::Request;
use lazysnap::index::Index;
use lazysnap::names::VolumeId;
use lazysnap::store::{layout, Store};
use object_store::ObjectStoreExt;
use serde::Serialize;

use super::node::BenchNode;
use super::report::{check, Check};
use super::stats::median;
use super::targets::Target;
use crate::{block_on, daemon};

const VBUCKET_BYTES: u64 = 4 << 20;
/// The small second file of each vbucket (Magma keeps a state file beside its logs).
const STATE_BYTES: u64 = 4 << 10;
const GUESTS: usize = 4;
/// GETs the accelerator-style download keeps in flight, as lazysnap's own default.
const DOWNLOAD_GETS: usize = 16;
/// Threads reading every vbucket's first file, as a rebalance opens many vbuckets at once.
const FIRST_READERS: usize = 16;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceFigures {
    pub vbuckets: usize,
    pub bytes: u64,
    pub runs: usize,
    /// `guests mount` until it answers: every guest path is readable then.
    pub readable_ms: Vec<f64>,
    /// `guests mount` until the first 4 KiB of every vbucket's first file has been read.
    pub first_reads_ms: Vec<f64>,
    /// The same parts downloaded whole first.
    pub download_ms: Vec<f64>,
    /// `guests mount` until hydration made every guest local.
    pub all_local_ms: Vec<f64>,
}

pub fn measure(
    target: &Target,
    work: &Path,
    daemon_args: &[String],
    namespace: &str,
    vbuckets: usize,
    runs: usize,
) -> anyhow::Result<RebalanceFigures> {
    anyhow::ensure!(vbuckets > 0 && vbuckets <= 1024, "--vbuckets must be 1 to 1024");
    let bucket = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
    let store = target.open()?;
    super::say(&format!(
        "rebalance: publishing {vbuckets} vbuckets of {} MiB",
        VBUCKET_BYTES >> 20
    ));
    let data = work.join("rebalance-data");
    let index = Index::open_in_memory()?;
    let plan_uuid = format!("plan-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut planned = Vec::with_capacity(vbuckets);
    for vb in 0..vbuckets {
        let dir = data.join(vb.to_string());
        super::write_seeded_file(
            &dir.join(format!("{vb}.couch.1")),
            VBUCKET_BYTES - STATE_BYTES,
            vb as u64 * 31 + 5,
        )?;
        super::write_seeded_file(&dir.join("state"), STATE_BYTES, vb as u64 * 31 + 6)?;
        let volume = format!("{namespace}/{bucket}/kvstore-{vb}");
        super::publish_dir(target, &dir, &volume)?;
        let id = VolumeId::parse(&volume)?;
        let snapshot = format!("{plan_uuid}:{bucket}");
        let created = block_on(lazysnap::snapshot::create(
            &store,
            &index,
            &id,
            &snapshot,
            3600,
            lazysnap::time::now_ms(),
        ))?;
        planned.push(serde_json::json!({
            "volumeID": created.volume_id, "logManifestName": created.log_manifest_name,
            "snapshotUUID": created.snapshot_uuid, "createdAt": created.created_at, "validTill": created.valid_till,
            "version": 1, "logicalSize": VBUCKET_BYTES, "storageSize": VBUCKET_BYTES,
        }));
    }
    std::fs::remove_dir_all(&data)?;
    let plan = serde_json::json!({"planUUID": plan_uuid, "nodes": {"ns_1@bench": planned}});
    let mut figures = RebalanceFigures {
        vbuckets,
        bytes: vbuckets as u64 * VBUCKET_BYTES,
        runs,
        readable_ms: Vec::new(),
        first_reads_ms: Vec::new(),
        download_ms: Vec::new(),
        all_local_ms: Vec::new(),
    };
    for run in 0..runs.max(1) {
        super::say(&format!("rebalance: run {} of {runs}: guests", run + 1));
        let (readable, first_reads, all_local) =
            lazy_guests(target, work, daemon_args, &plan, namespace, &bucket, vbuckets)?;
        figures.readable_ms.push(ms(readable));
        figures.first_reads_ms.push(ms(first_reads));
        figures.all_local_ms.push(ms(all_local));
        super::say(&format!("rebalance: run {} of {runs}: full download", run + 1));
        let volumes: Vec<VolumeId> = (0..vbuckets)
            .map(|vb| VolumeId::parse(&format!("{namespace}/{bucket}/kvstore-{vb}")))
            .collect::<Result<_, _>>()?;
        figures.download_ms.push(ms(download(&store, &volumes, work)?));
    }
    Ok(figures)
}

/// Mounts the plan on a fresh node: until readable, until every first read, until all local.
fn lazy_guests(
    target: &Target,
    work: &Path,
    daemon_args: &[String],
    plan: &serde_json::Value,
    namespace: &str,
    bucket: &str,
    vbuckets: usize,
) -> anyhow::Result<(Duration, Duration, Duration)> {
    let node = BenchNode::start(target, work, daemon_args)?;
    let root = tempfile::Builder::new().prefix("guests-").tempdir_in(work)?;
    let request = Request::GuestsMount(GuestsMountRequest {
        store: target.url.clone(),
        plan: plan.clone(),
        node: "ns_1@bench".into(),
        root: root.path().display().to_string(),
        parts: Some(GUESTS),
        min_part_size: None,
        restore: false,
        bandwidth: None,
        access: Default::default(),
    });
    let started = Instant::now();
    let answer: UploadMountedVolumes = daemon::call_as(&node.paths, &request)?;
    let readable = started.elapsed();
    let guests: Vec<PathBuf> = answer.nodes[0].guest_volume_paths.iter().map(PathBuf::from).collect();
    // Each vbucket's first file, in whichever guest shows it.
    let firsts: Vec<PathBuf> = (0..vbuckets)
        .map(|vb| {
            let folder = format!("{namespace}/{bucket}/kvstore-{vb}");
            guests
                .iter()
                .map(|g| g.join(&folder).join(format!("{vb}.couch.1")))
                .find(|p| p.exists())
                .with_context(|| format!("vbucket {vb} is in no guest"))
        })
        .collect::<anyhow::Result<_>>()?;
    read_first_blocks(&firsts)?;
    let first_reads = started.elapsed();
    let plan_uuid = plan["planUUID"].as_str().unwrap_or_default().to_string();
    loop {
        let status = daemon::call(
            &node.paths,
            &Request::GuestsStatus(lazysnap::control::guests::GuestsRequest {
                plan_uuid: plan_uuid.clone(),
                lazy: false,
            }),
        )?;
        if status["bytesLocal"] == status["bytesTotal"] {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "guests never became local: {status}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let all_local = started.elapsed();
    daemon::call(
        &node.paths,
        &Request::GuestsRelease(lazysnap::control::guests::GuestsRequest { plan_uuid, lazy: true }),
    )?;
    Ok((readable, first_reads, all_local))
}

/// The first 4 KiB of each file, read by several threads at once.
fn read_first_blocks(files: &[PathBuf]) -> anyhow::Result<()> {
    use std::os::unix::fs::FileExt;
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..FIRST_READERS)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(path) = files.get(i) else { return Ok(()) };
                        let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
                        file.read_exact_at(&mut buf, 0)
                            .with_context(|| format!("read {}", path.display()))?;
                    }
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().expect("reader thread"))
    })
}

/// What the accelerator does first: every object of the volumes, whole, into local files.
fn download(store: &Store, volumes: &[VolumeId], work: &Path) -> anyhow::Result<Duration> {
    let dir = tempfile::Builder::new().prefix("download-").tempdir_in(work)?;
    let started = Instant::now();
    block_on(async {
        let mut keys = Vec::new();
        for volume in volumes {
            keys.extend(store.list(&layout::files_dir(volume)).await?.into_iter().map(|o| o.key));
        }
        let inner = store.object_store().clone();
        futures::stream::iter(keys.into_iter().enumerate())
            .map(|(i, key)| {
                let (inner, target) = (inner.clone(), dir.path().join(i.to_string()));
                async move {
                    let bytes = inner.get(&key).await?.bytes().await?;
                    tokio::fs::write(&target, &bytes).await?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(DOWNLOAD_GETS)
            .try_collect::<Vec<()>>()
            .await
    })?;
    Ok(started.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn spread(values: &[f64]) -> String {
    let (lo, hi) = super::stats::range(values);
    format!("{lo:.0}-{hi:.0} ms")
}

pub fn checks(f: &RebalanceFigures) -> Vec<Check> {
    let download = median(&f.download_ms);
    let what = format!("{} vbuckets x {} MiB", f.vbuckets, VBUCKET_BYTES >> 20);
    let ratio = |values: &[f64]| median(values) / download;
    vec![
        check(
            "rebalance",
            "guests readable / full download",
            ratio(&f.readable_ms),
            format!(
                "{:.0} ms ({}) vs {download:.0} ms ({}), {what}",
                median(&f.readable_ms),
                spread(&f.readable_ms),
                spread(&f.download_ms)
            ),
            "< 1",
            ratio(&f.readable_ms) < 1.0,
        ),
        check(
            "rebalance",
            "every vbucket's first read / full download",
            ratio(&f.first_reads_ms),
            format!("{:.0} ms ({})", median(&f.first_reads_ms), spread(&f.first_reads_ms)),
            "< 1",
            ratio(&f.first_reads_ms) < 1.0,
        ),
        check(
            "rebalance",
            "guests all local (hydrated) / full download",
            ratio(&f.all_local_ms),
            format!("{:.0} ms ({})", median(&f.all_local_ms), spread(&f.all_local_ms)),
            "(figure)",
            true,
        ),
    ]
}
