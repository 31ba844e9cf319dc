//! Foreign objects: the big file as the Data.db of a ScyllaDB sstable, ingested and read through a
//! view. Its blocks have no published checksums: every GET is pinned to the ETag, and each block's
//! checksum is learned on its first fetch and kept in the index. Measured: the cold read, and the
//! read after a daemon restart, which must come from the disk cache with nothing fetched.

use std::path::Path;

use anyhow::Context;
use lazysnap::catalog::Selector;
use lazysnap::control::{MountRequest, Request};
use lazysnap::index::Index;
use lazysnap::scylla::{self, Filter, ManifestSource};
use object_store::ObjectStoreExt;
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
    /// Bytes fetched by the cold read / its size.
    pub amplification: f64,
    /// The same read through a daemon started again on the same node.
    pub restart_sequential_mbps: f64,
    pub restart_fetched_bytes: u64,
}

pub fn measure(
    target: &Target,
    work: &Path,
    daemon_args: &[String],
    big_file: &Path,
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
            let store = store.object_store().clone();
            let key = object_store::path::Path::from(format!("{dir}/{name}"));
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
    });
    let read = |node: &BenchNode| -> anyhow::Result<(f64, u64)> {
        let answer = daemon::call(&node.paths, &request)?;
        let path = answer["mountPaths"][0].as_str().context("mount answered no path")?;
        let (n, took) = reads::sequential(&Path::new(path).join(format!("{SSTABLE}Data.db")))?;
        anyhow::ensure!(n == size, "read {n} bytes of {size} through the view");
        Ok((super::stats::mbps(size, took), node.bytes_fetched()?))
    };
    let (cold, fetched) = read(&node)?;
    daemon::stop(&node.paths)?;
    daemon::ensure_running_with(&node.paths, &target.with_daemon_args(daemon_args))?;
    let (restart, refetched) = read(&node)?;
    Ok(ForeignFigures {
        cold_sequential_mbps: cold,
        amplification: fetched as f64 / size as f64,
        restart_sequential_mbps: restart,
        restart_fetched_bytes: refetched,
    })
}
