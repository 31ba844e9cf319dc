//! ls, cat and stat straight from the store, through the node's block cache and checksums; no
//! daemon needed. Addresses are STORE_URL[#VOLUME_ID[:PATH]].

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use lazysnap::cache::{BlockCache, CacheConfig};
use lazysnap::catalog::{self, CatalogError};
use lazysnap::fetch::{FetchConfig, Fetcher, FileReader, ObjectHandle};
use lazysnap::index::{FileRow, Index, ManifestRow};
use lazysnap::names::VolumeId;
use lazysnap::paths::Paths;
use lazysnap::store::{layout, Store, StoreConfig};
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

struct Resolved {
    store: Store,
    index: Index,
    volume: VolumeId,
    manifest: ManifestRow,
}

fn resolve(address: &Address, selector: &SelectorArgs, paths: &Paths) -> anyhow::Result<Resolved> {
    let store = Store::open(&address.store, &StoreConfig::default())?;
    let index = open_index(paths)?;
    let manifest = match &address.volume {
        Some(volume) => {
            let named = selector.names_backup();
            match block_on(catalog::resolve(&store, &index, volume, &selector.selector(named))) {
                Ok((manifest, _)) => manifest,
                // A volume address with no flag may name a backup location's volume: look for
                // generations only when the volume is not there, so plain stores pay nothing.
                Err(CatalogError::UnknownVolume { .. }) if !named && is_backup_location(&store)? => {
                    block_on(catalog::resolve(&store, &index, volume, &selector.selector(true)))?.0
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Only `ls` of a bare location gets here, having found it is one.
        None => block_on(catalog::resolve_backup(&store, &index, &selector.selector(true)))?,
    };
    Ok(Resolved {
        volume: manifest.volume.clone(),
        store,
        index,
        manifest,
    })
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
    Ok(!block_on(lazysnap::backup::generations(store))?.is_empty())
}

pub fn ls(args: LsArgs, paths: &Paths) -> anyhow::Result<()> {
    let address = Address::parse(&args.address)?;
    if address.volume.is_none() && !args.selector.names_backup() {
        let store = Store::open(&address.store, &StoreConfig::default())?;
        let volumes = block_on(catalog::list_volumes(&store))?;
        // A store without volumes may be a backup location: then list its newest generation.
        if !volumes.is_empty() || !is_backup_location(&store)? {
            print_namespaces(&store, &volumes, args.json);
            return Ok(());
        }
    }
    let r = resolve(&address, &args.selector, paths)?;
    let files = r.index.manifest_files(r.manifest.id)?;
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
            r.volume,
            r.manifest.name
        );
    }
    if args.json {
        let rows: Vec<_> = chosen
            .iter()
            .map(|f| json!({"path": f.path.as_str(), "size": f.size, "low_seqno": f.low_seqno, "high_seqno": f.high_seqno}))
            .collect();
        print_json(&json!({"volumeID": r.volume.as_str(), "logManifestName": r.manifest.name, "files": rows}));
    } else {
        let mut out = std::io::stdout().lock();
        for f in chosen {
            writeln!(out, "{:>14}  {}", f.size, f.path)?;
        }
    }
    Ok(())
}

/// The file an address names, with everything needed to read it.
fn file(
    address: &Address,
    selector: &SelectorArgs,
    paths: &Paths,
) -> anyhow::Result<(Resolved, FileRow, Arc<ObjectHandle>)> {
    let path = address
        .path
        .clone()
        .context("the address names no file (add :PATH after the volume)")?;
    let r = resolve(address, selector, paths)?;
    let row = r.index.file_by_path(r.manifest.id, &path)?.with_context(|| {
        format!(
            "no file {path} in volume {} at manifest {} of {}",
            r.volume,
            r.manifest.name,
            r.store.url()
        )
    })?;
    let checksums = r.index.file_integrity(row.id)?;
    let object = Arc::new(ObjectHandle::new(
        &r.store,
        layout::object_of(&r.volume, &path, row.object_key.as_deref()),
        row.size,
        r.manifest.block_size,
        checksums,
    ));
    Ok((r, row, object))
}

fn cache(paths: &Paths) -> anyhow::Result<Arc<BlockCache>> {
    let config = CacheConfig {
        memory_bytes: 64 << 20,
        disk_dir: Some(paths.cache()),
        ..CacheConfig::default()
    };
    Ok(Arc::new(BlockCache::new(&config)?))
}

pub fn cat(args: AddressArgs, paths: &Paths) -> anyhow::Result<()> {
    let address = Address::parse(&args.address)?;
    let (r, row, object) = file(&address, &args.selector, paths)?;
    let fetcher = Arc::new(Fetcher::new(r.store.clone(), cache(paths)?, FetchConfig::default()));
    let reader = FileReader::new(fetcher, object);
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
    let (r, row, object) = file(&address, &args.selector, paths)?;
    let status = cache(paths)?.object_status(&object.id, object.shape);
    print_json(&json!({
        "store": r.store.url().to_string(),
        "volumeID": r.volume.as_str(),
        "logManifestName": r.manifest.name,
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
