//! `lazysnap scylla`: ScyllaDB backups in the node's index.

use anyhow::bail;
use clap::Subcommand;
use lazysnap::paths::Paths;
use lazysnap::scylla::{self, ManifestSource};

use crate::commands::{open_index, open_store};
use crate::{block_on, print_json};

#[derive(Subcommand, Debug)]
pub enum ScyllaCommand {
    /// Read ScyllaDB backup manifests (node or dc scope, flat or cluster layout) into the index:
    /// one row per sstable with its node, tokens and component objects. All or nothing: a bad
    /// manifest anywhere leaves nothing ingested. Prints what was ingested as JSON.
    Ingest {
        /// Store URL of the manifests that follow it (repeat with --manifest for several stores).
        #[arg(long, value_name = "URL", required = true)]
        store: Vec<String>,
        /// Key of a manifest.json in the store given before it (repeatable).
        #[arg(long, value_name = "PATH_IN_STORE", required = true)]
        manifest: Vec<String>,
    },
    /// List the ingested tables, their tablet layouts and sstable counts as JSON.
    Ls,
}

pub fn run(command: ScyllaCommand, paths: &Paths) -> anyhow::Result<()> {
    match command {
        ScyllaCommand::Ingest { store, manifest } => ingest(pairs(&store, &manifest)?, paths),
        ScyllaCommand::Ls => {
            let index = open_index(paths)?;
            let mut tables = Vec::new();
            for table in index.scylla_tables()? {
                let sstables = index.scylla_sstables(table.id)?;
                tables.push(serde_json::json!({
                    "snapshot": table.snapshot,
                    "keyspace": table.keyspace,
                    "table": table.table,
                    "tabletsType": table.tablets_type,
                    "tabletCount": table.tablet_count,
                    "sstables": sstables.len(),
                    "datacenters": sstables.iter().filter_map(|s| s.datacenter.clone()).collect::<std::collections::BTreeSet<_>>(),
                }));
            }
            print_json(&serde_json::Value::Array(tables));
            Ok(())
        }
    }
}

/// Pairs each manifest with its store: the manifests follow their stores in the order given on
/// the command line, which clap does not keep, so the pairing is by count: one store for all, or
/// one store per manifest.
fn pairs(stores: &[String], manifests: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    match (stores.len(), manifests.len()) {
        (1, _) => Ok(manifests.iter().map(|m| (stores[0].clone(), m.clone())).collect()),
        (s, m) if s == m => Ok(stores.iter().cloned().zip(manifests.iter().cloned()).collect()),
        (s, m) => {
            bail!("{s} --store for {m} --manifest: give one --store for all manifests, or one --store per --manifest")
        }
    }
}

fn ingest(pairs: Vec<(String, String)>, paths: &Paths) -> anyhow::Result<()> {
    let index = open_index(paths)?;
    let sources = pairs
        .into_iter()
        .map(|(store, key)| {
            Ok(ManifestSource {
                store: open_store(&store, false)?,
                key: key.trim_start_matches('/').to_string(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = block_on(scylla::ingest(&index, &sources))?;
    print_json(&serde_json::to_value(report)?);
    Ok(())
}
