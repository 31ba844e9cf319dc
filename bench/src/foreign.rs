//! Foreign objects: the big file as the Data.db of a ScyllaDB sstable, ingested and read through a
//! view. Its blocks have no published checksums: every GET is pinned to the ETag, and each block's
//! checksum is learned on its first fetch and kept in the index. Measured against the published
//! file on the same node: the cold read, and the read after a daemon restart, which must come from
//! the disk cache with nothing fetched.

use std::path::Path;

use anyhow::Context;
use lazysnap::catalog::Selector;
use lazysnap::control::answers::Mounted;
use lazysnap::control::{MountRequest, Request};
use lazysnap::index::Index;
use lazysnap::scylla::{self, Filter, ManifestSource};
use serde::Serialize;

use super::node::BenchNode;
use super::reads;
use super::targets::Target;
use crate::{block_on, daemon};

const SSTABLE: &str = "me-3gw7_0ndy_1bench-big-";

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ForeignFigures {
    pub cold_sequential_mbps: f64,
    /// The published file, read cold on the same node just before: the baseline.
    pub published_cold_mbps: f64,
    /// Bytes fetched by the foreign cold read / its size.
    pub amplification: f64,
    /// Both read again through a daemon started again on the same node (from its disk cache).
    pub restart_sequential_mbps: f64,
    pub published_restart_mbps: f64,
    /// Bytes either read fetched after the restart.
    pub restart_fetched_bytes: u64,
}

/// `published` is the volume and manifest holding the same file, published.
pub fn measure(
    target: &Target,
    work: &Path,
    daemon_args: &[String],
    big_file: &Path,
    published: (&str, &str),
    namespace: &str,
) -> anyhow::Result<ForeignFigures> {
    let store = target.open()?;
    // Under volumes/<namespace>/, which the run removes from an operator's store afterwards.
    let dir = format!("volumes/{namespace}/scylla");
    let data = std::fs::read(big_file).with_context(|| format!("cannot read {}", big_file.display()))?;
    let size = data.len() as u64;
    let manifest = serde_json::json!({
        "manifest": {"version": "1.0", "scope": "node"},
        "node": {"host_id": "bench-host", "datacenter": "dc1", "rack": "rack1"},
        "snapshot": {"name": namespace},
        "table": {"keyspace_name": "bench", "table_name": "foreign", "tablets_type": "powof2", "tablet_count": 1},
        "sstables": [{"id": "5c1b0000-0000-4000-8000-00000000bec4", "toc_name": format!("{SSTABLE}TOC.txt"),
                      "first_token": -100, "last_token": 100, "data_size": size}],
    });
    block_on(async {
        let put = |name: String, bytes: Vec<u8>| {
            let (store, key) = (&store, object_store::path::Path::from(format!("{dir}/{name}")));
            async move { store.put(&key, bytes.into()).await }
        };
        put(format!("{SSTABLE}Data.db"), data).await?;
        put(format!("{SSTABLE}TOC.txt"), b"Data.db\nTOC.txt\n".to_vec()).await?;
        put("manifest.json".into(), manifest.to_string().into_bytes()).await?;
        anyhow::Ok(())
    })?;

    let node = BenchNode::start(target, work, daemon_args)?;
    let index = Index::open(&node.paths.index())?;
    let source = ManifestSource {
        store,
        key: format!("{dir}/manifest.json"),
    };
    block_on(scylla::ingest(&index, &[source]))?;
    let request = Request::Mount(MountRequest {
        store: String::new(),
        volumes: Vec::new(),
        selector: Selector::Latest,
        mount_path: None,
        hydrate: None,
        scylla: Some(Filter {
            snapshot: namespace.into(),
            keyspace: "bench".into(),
            table: "foreign".into(),
            ..Filter::default()
        }),
        access: Default::default(),
        planned: Vec::new(),
        guest: None,
    });
    // Answers the rate and the mount path (its own counters, not another mount's fetches that
    // are still being counted).
    let read_foreign = |node: &BenchNode| -> anyhow::Result<(f64, String)> {
        let answer: Mounted = daemon::call_as(&node.paths, &request)?;
        let path = answer
            .mount_paths
            .into_iter()
            .next()
            .context("mount answered no path")?;
        let (n, took) = reads::sequential(&Path::new(&path).join(format!("{SSTABLE}Data.db")))?;
        anyhow::ensure!(n == size, "read {n} bytes of {size} through the view");
        Ok((super::stats::mbps(size, took), path))
    };
    let read_published = |node: &BenchNode| -> anyhow::Result<f64> {
        let (mounted, _) = node.mount(published.0, Some(published.1))?;
        let (n, took) = reads::sequential(&mounted.volume_dir.join(super::BIG_FILE))?;
        anyhow::ensure!(n == size, "read {n} bytes of {size} through the mount");
        Ok(super::stats::mbps(size, took))
    };
    // Each read leaves its GiB of disk cache to write back: not the next read's to pay. (Without
    // the sync the foreign read ran at 0.27-0.78 of the published one in one run; with it, 0.93-
    // 1.14, but 0.41-0.66 again in a run where the disk itself was slow.)
    super::stats::settle_disk();
    let published_cold = read_published(&node)?;
    super::stats::settle_disk();
    let (cold, foreign_path) = read_foreign(&node)?;
    let fetched = node.bytes_fetched_by(&foreign_path)?;
    daemon::stop(&node.paths)?;
    daemon::ensure_running_with(&node.paths, &target.with_daemon_args(daemon_args))?;
    super::stats::settle_disk();
    let published_restart = read_published(&node)?;
    let (restart, _) = read_foreign(&node)?;
    Ok(ForeignFigures {
        cold_sequential_mbps: cold,
        published_cold_mbps: published_cold,
        amplification: fetched as f64 / size as f64,
        restart_sequential_mbps: restart,
        published_restart_mbps: published_restart,
        restart_fetched_bytes: node.bytes_fetched()?,
    })
}
