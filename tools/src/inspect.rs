//! ls, cat and stat straight from the store, through the node's block cache and checksums; no
//! daemon needed. Addresses are STORE_URL[#VOLUME_ID[:PATH]].

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use lazysnap::catalog::CatalogError;
use lazysnap::chain::{self, ChainError};
use lazysnap::fetch::{FileReader, ObjectHandle};
use lazysnap::index::{FileRow, ManifestRow};
use lazysnap::names::VolumeId;
use lazysnap::paths::Paths;
use lazysnap::store::Store;
use lazysnap::view::{Reading, ReadingConfig, Resolved, View, ViewError, ViewSpec};
use serde_json::json;

use crate::address::Address;
use crate::commands::open_index;
use crate::{block_on, print_json, SelectorArgs};

#[derive(Args, Debug)]
pub struct LsArgs {
    /// STORE_URL (namespaces and volumes), STORE_URL#VOLUME (its files) or STORE_URL#VOLUME:DIR.
    address: String,
    #[command(flatten)]
    selector: SelectorArgs,
    /// Print JSON instead of lines.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct AddressArgs {
    /// STORE_URL#VOLUME:PATH of one file.
    address: String,
    #[command(flatten)]
    selector: SelectorArgs,
}

/// What every command here reads through: the node's index and disk cache, with the memory plan
/// the daemon uses by default.
fn reading(paths: &Paths) -> anyhow::Result<Reading> {
    let index = Arc::new(open_index(paths)?);
    let config = ReadingConfig {
        cache_dir: Some(paths.cache()),
        ..ReadingConfig::default()
    };
    Ok(Reading::open(index, &config)?)
}

/// The one-volume view an address names.
fn resolve(address: &Address, selector: &SelectorArgs, reading: &Reading) -> anyhow::Result<Resolved> {
    let spec = |backup: bool| ViewSpec::Volumes {
        store: address.store.clone(),
        volumes: address.volume.iter().cloned().collect(),
        selector: selector.selector(backup),
    };
    // Only `ls` of a bare location gets here without a volume, having found it is one.
    let named = selector.names_backup() || address.volume.is_none();
    match block_on(reading.resolve(&spec(named), None)) {
        Ok(resolved) => Ok(resolved),
        // A volume address with no flag may name a backup location's volume: look for
        // generations only when the volume is not there, so plain stores pay nothing.
        Err(ViewError::Catalog(e))
            if matches!(*e, CatalogError::Chain(ChainError::UnknownVolume { .. }))
                && !named
                && is_backup_location(&reading.store(&address.store)?)? =>
        {
            Ok(block_on(reading.resolve(&spec(true), None))?)
        }
        Err(e) => Err(e.into()),
    }
}

/// The manifest a resolved one-volume view shows.
fn manifest(resolved: &Resolved) -> &ManifestRow {
    &resolved.parts[0].manifest
}

/// Namespaces and volumes of a store: `namespace<TAB>volume` lines, or JSON.
fn print_namespaces(store: &Store, volumes: &[VolumeId], json: bool) {
    let mut namespaces: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for volume in volumes {
        namespaces.entry(volume.namespace()).or_default().push(volume.as_str());
    }
    if json {
        print_json(&json!({ "store": store.url().to_string(), "namespaces": namespaces }));
    } else {
        for (namespace, volumes) in namespaces {
            for volume in volumes {
                println!("{namespace}\t{volume}");
            }
        }
    }
}

/// True when the store holds backup generations (and so is a backup location).
fn is_backup_location(store: &Store) -> anyhow::Result<bool> {
    Ok(!block_on(lazysnap::chain::generations(store))?.is_empty())
}

pub fn ls(args: LsArgs, paths: &Paths) -> anyhow::Result<()> {
    let address = Address::parse(&args.address)?;
    if address.volume.is_none() && !args.selector.names_backup() {
        let store = Store::open(&address.store, &lazysnap::store::StoreConfig::default())?;
        let volumes = block_on(chain::list_volumes(&store))?;
        // A store without volumes may be a backup location: then list its newest generation.
        if !volumes.is_empty() || !is_backup_location(&store)? {
            print_namespaces(&store, &volumes, args.json);
            return Ok(());
        }
    }
    let reading = reading(paths)?;
    let resolved = resolve(&address, &args.selector, &reading)?;
    let manifest = manifest(&resolved);
    let files = reading.index().manifest_files(manifest.id)?;
    let prefix = address.path.as_ref().map(|p| format!("{}/", p.as_str()));
    let chosen: Vec<&FileRow> = files
        .iter()
        .filter(|f| match (&prefix, &address.path) {
            (Some(prefix), Some(path)) => f.path.as_str().starts_with(prefix.as_str()) || f.path == *path,
            _ => true,
        })
        .collect();
    if let (true, Some(path)) = (chosen.is_empty(), &address.path) {
        bail!(
            "nothing at {path} in volume {} (manifest {})",
            manifest.volume,
            manifest.name
        );
    }
    if args.json {
        let rows: Vec<_> = chosen
            .iter()
            .map(|f| json!({"path": f.path.as_str(), "size": f.size, "low_seqno": f.low_seqno, "high_seqno": f.high_seqno}))
            .collect();
        print_json(&json!({"volumeID": manifest.volume.as_str(), "logManifestName": manifest.name, "files": rows}));
    } else {
        let mut out = std::io::stdout().lock();
        for f in chosen {
            writeln!(out, "{:>14}  {}", f.size, f.path)?;
        }
    }
    Ok(())
}

/// The file an address names: its view (for its fetcher), its row and its object.
fn file(
    address: &Address,
    selector: &SelectorArgs,
    paths: &Paths,
) -> anyhow::Result<(View, FileRow, Arc<ObjectHandle>)> {
    let path = address
        .path
        .clone()
        .context("the address names no file (add :PATH after the volume)")?;
    let reading = reading(paths)?;
    let resolved = resolve(address, selector, &reading)?;
    let manifest = manifest(&resolved).clone();
    let missing = || {
        format!(
            "no file {path} in volume {} at manifest {} of {}",
            manifest.volume, manifest.name, address.store
        )
    };
    let row = reading
        .index()
        .file_by_path(manifest.id, &path)?
        .with_context(missing)?;
    let view = reading.assemble(resolved)?;
    let ino = view.find(0, &path).with_context(missing)?;
    let object = view.object(ino)?;
    Ok((view, row, object))
}

pub fn cat(args: AddressArgs, paths: &Paths) -> anyhow::Result<()> {
    let address = Address::parse(&args.address)?;
    let (view, row, object) = file(&address, &args.selector, paths)?;
    let reader = FileReader::new(view.fetcher().clone(), object);
    // 4 MiB reads: sequential, so readahead keeps the next ones in flight.
    const CHUNK: u64 = 4 << 20;
    block_on(async {
        let mut out = std::io::stdout().lock();
        let mut offset = 0;
        while offset < row.size {
            let pieces = reader
                .read(offset, CHUNK)
                .await
                .with_context(|| format!("reading {} at offset {offset}", row.path))?;
            for piece in pieces.as_slices() {
                if let Err(e) = out.write_all(piece) {
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok(());
                    }
                    return Err(e.into());
                }
            }
            offset += pieces.len() as u64;
        }
        out.flush()?;
        anyhow::Ok(())
    })
}

pub fn stat(args: AddressArgs, paths: &Paths) -> anyhow::Result<()> {
    let address = Address::parse(&args.address)?;
    let (view, row, object) = file(&address, &args.selector, paths)?;
    let status = view.fetcher().cache().object_status(&object.id, object.shape);
    let part = &view.parts()[0];
    print_json(&json!({
        "store": address.store.to_string(),
        "volumeID": part.volume.as_str(),
        "logManifestName": part.manifest.name,
        "path": row.path.as_str(),
        "size": row.size,
        "blockSize": object.shape.block_size,
        "blocksTotal": status.blocks_total,
        "blocksCached": status.blocks_cached,
        "bytesCached": status.bytes_cached,
        "bytesFetched": status.bytes_fetched,
        "lowSeqno": row.low_seqno,
        "highSeqno": row.high_seqno,
    }));
    Ok(())
}
