//! Views: the sstables of one snapshot's table that match a filter, as manifests of pinned objects
//! (one per store they live in), with the sstables that span the requested range reported apart.

use std::collections::{BTreeMap, HashMap};

use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::ScyllaError;
use crate::checksum::BlockChecksums;
use crate::index::{Index, ManifestRow, ScyllaSstableRow, ScyllaTableRow};
use crate::manifest::scylla::tablets::{place, Placement, Tablets, TokenRange};
use crate::manifest::{Manifest, ManifestFile, DEFAULT_BLOCK_SIZE};
use crate::names::{RelPath, VolumeId};
use crate::store::Store;

/// Which sstables a view shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Filter {
    pub snapshot: String,
    pub keyspace: String,
    pub table: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
    /// A host id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Tablet `tablet` of `tabletCount` power-of-two tablets (default: the table's own layout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tablet: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tablet_count: Option<u64>,
    /// `A:B`, the tokens in `(A, B]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_range: Option<String>,
}

/// An sstable that holds tokens both inside and outside the requested range: not shown, reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spanning {
    pub sstable_id: String,
    pub toc_name: String,
    pub first_token: i64,
    pub last_token: i64,
    pub datacenter: Option<String>,
    pub rack: Option<String>,
    pub node: Option<String>,
    pub store: String,
}

/// What a view shows: one manifest per store, the sstables in it and the spanning ones left out.
#[derive(Debug, Clone)]
pub struct ResolvedView {
    pub table: ScyllaTableRow,
    pub range: Option<TokenRange>,
    pub manifests: Vec<(Store, ManifestRow)>,
    /// The store of the first sstable matching the datacenter, rack and node asked for, whether
    /// or not it is inside the range: an empty view still names a store. `None` when none matched.
    pub first_store: Option<String>,
    pub sstables: Vec<ScyllaSstableRow>,
    pub spanning: Vec<Spanning>,
}

/// Resolves `filter` against the index, reading the TOC of each chosen sstable once (then the index
/// keeps its component names). `open` opens a store by URL.
pub async fn resolve(
    index: &Index,
    filter: &Filter,
    open: impl Fn(&str) -> Result<Store, ScyllaError>,
) -> Result<ResolvedView, ScyllaError> {
    let table = index
        .scylla_table(&filter.snapshot, &filter.keyspace, &filter.table)?
        .ok_or_else(|| unknown_table(index, filter))?;
    let range = requested_range(&table, filter)?;
    let mut sstables = Vec::new();
    let mut spanning = Vec::new();
    let mut first_store = None;
    for sstable in index.scylla_sstables(table.id)? {
        let matches = |want: &Option<String>, have: &Option<String>| want.is_none() || want == have;
        if !(matches(&filter.dc, &sstable.datacenter)
            && matches(&filter.rack, &sstable.rack)
            && matches(&filter.node, &sstable.node))
        {
            continue;
        }
        first_store.get_or_insert_with(|| sstable.store.clone());
        match range.map_or(Placement::Inside, |r| place(&r, &sstable.tokens)) {
            Placement::Inside => sstables.push(sstable),
            Placement::Spans => spanning.push(Spanning {
                sstable_id: sstable.sstable_id.clone(),
                toc_name: sstable.toc_name.clone(),
                first_token: sstable.tokens.first,
                last_token: sstable.tokens.last,
                datacenter: sstable.datacenter.clone(),
                rack: sstable.rack.clone(),
                node: sstable.node.clone(),
                store: sstable.store.clone(),
            }),
            Placement::Outside => {}
        }
    }
    let mut stores: HashMap<String, Store> = HashMap::new();
    let mut files: BTreeMap<String, Vec<ManifestFile>> = BTreeMap::new();
    let mut owners: HashMap<String, String> = HashMap::new();
    for sstable in &mut sstables {
        if !stores.contains_key(&sstable.store) {
            stores.insert(sstable.store.clone(), open(&sstable.store)?);
        }
        let store = &stores[&sstable.store];
        let components = match &sstable.components {
            Some(components) => components.clone(),
            None => {
                let components = read_toc(store, sstable).await?;
                index.set_scylla_components(sstable.id, &components)?;
                sstable.components = Some(components.clone());
                components
            }
        };
        let objects: HashMap<String, _> = index
            .scylla_objects(sstable.id)?
            .into_iter()
            .map(|o| (o.name.clone(), o))
            .collect();
        let prefix = sstable.toc_name.trim_end_matches("TOC.txt");
        for component in components {
            let name = format!("{prefix}{component}");
            let object = objects.get(&name).ok_or_else(|| ScyllaError::MissingComponent {
                sstable: sstable.sstable_id.clone(),
                file: name.clone(),
                store: sstable.store.clone(),
            })?;
            if let Some(other) = owners.insert(name.clone(), sstable.sstable_id.clone()) {
                return Err(ScyllaError::Collision(format!(
                    "sstables {other} and {} both have a component named {name}; narrow the view (--dc, --rack or --node)",
                    sstable.sstable_id
                )));
            }
            files.entry(sstable.store.clone()).or_default().push(ManifestFile {
                path: RelPath::parse(&name).map_err(|e| ScyllaError::BadToc {
                    sstable: sstable.sstable_id.clone(),
                    toc: sstable.toc_name.clone(),
                    reason: e.to_string(),
                })?,
                size: object.size,
                checksums: BlockChecksums::default(),
                low_seqno: None,
                high_seqno: None,
                object_key: Some(format!("{}{name}", sstable.prefix)),
                etag: Some(object.etag.clone()),
            });
        }
    }
    let volume = VolumeId::parse(&format!("scylla/{}/{}", table.keyspace, table.table))
        .map_err(|e| ScyllaError::BadFilter(format!("keyspace or table name: {e}")))?;
    let created_at_ms = sstables.iter().filter_map(|s| s.created_at_ms).max().unwrap_or(0);
    let mut manifests = Vec::new();
    for (url, files) in files {
        let mut manifest = Manifest {
            volume: volume.clone(),
            name: String::new(),
            term: 0,
            seq: 0,
            created_at_ms,
            block_size: DEFAULT_BLOCK_SIZE,
            files,
        };
        manifest.files.sort_by(|a, b| a.path.cmp(&b.path));
        manifest.name = view_name(&table.snapshot, &manifest);
        manifest.validate()?;
        let store = stores.remove(&url).expect("opened above");
        let row = index.insert_manifest(store.url(), &manifest)?;
        manifests.push((store, row));
    }
    Ok(ResolvedView {
        table,
        range,
        manifests,
        first_store,
        sstables,
        spanning,
    })
}

/// A view's manifest name: the snapshot and a digest of exactly the objects it shows, so the same
/// name always means the same files.
fn view_name(snapshot: &str, manifest: &Manifest) -> String {
    let mut hasher = blake3::Hasher::new();
    for file in &manifest.files {
        for part in [
            file.path.as_str(),
            file.object_key.as_deref().unwrap_or(""),
            file.etag.as_deref().unwrap_or(""),
        ] {
            hasher.update(part.as_bytes()).update(&[0]);
        }
        hasher.update(&file.size.to_le_bytes());
    }
    format!("scylla-view:{snapshot}:{}", &hasher.finalize().to_hex()[..16])
}

fn unknown_table(index: &Index, filter: &Filter) -> ScyllaError {
    let known: Vec<String> = index
        .scylla_tables()
        .unwrap_or_default()
        .into_iter()
        .map(|t| format!("{}.{} in {}", t.keyspace, t.table, t.snapshot))
        .collect();
    ScyllaError::UnknownTable {
        snapshot: filter.snapshot.clone(),
        keyspace: filter.keyspace.clone(),
        table: filter.table.clone(),
        known: match known.is_empty() {
            true => " (nothing is ingested yet: run `lazysnap scylla ingest`)".into(),
            false => format!(" (ingested: {})", known.join(", ")),
        },
    }
}

/// The token range a filter asks for, if any.
fn requested_range(table: &ScyllaTableRow, filter: &Filter) -> Result<Option<TokenRange>, ScyllaError> {
    let bad = |s: String| ScyllaError::BadFilter(s);
    match (filter.tablet, filter.tablet_count, &filter.token_range) {
        (Some(_), _, Some(_)) | (None, Some(_), Some(_)) => Err(bad("give a tablet or a token range, not both".into())),
        (None, Some(_), None) => Err(bad("--tablet-count needs --tablet".into())),
        (None, None, None) => Ok(None),
        (None, None, Some(text)) => {
            let parsed = text
                .split_once(':')
                .and_then(|(a, b)| Some((a.trim().parse::<i64>().ok()?, b.trim().parse::<i64>().ok()?)));
            let (after, last) =
                parsed.ok_or_else(|| bad(format!("token range {text:?} is not A:B with 64-bit tokens")))?;
            TokenRange::after(after, last)
                .map(Some)
                .ok_or_else(|| bad(format!("token range {text:?} is empty: A must be below B")))
        }
        (Some(tablet), count, None) => {
            let tablets = match count {
                Some(count) => Tablets::power_of_two(count)
                    .ok_or_else(|| bad(format!("tablet count {count} is not a power of two")))?,
                None => table_tablets(table)?,
            };
            tablets.range(tablet).map(Some).ok_or_else(|| {
                bad(format!(
                    "there is no tablet {tablet}: the layout has {} tablets (0 to {})",
                    tablets.count(),
                    tablets.count() - 1
                ))
            })
        }
    }
}

/// The table's own tablet layout, from its manifests.
fn table_tablets(table: &ScyllaTableRow) -> Result<Tablets, ScyllaError> {
    if !table.tablets.is_empty() {
        return Tablets::explicit(&table.tablets).map_err(ScyllaError::BadFilter);
    }
    table.tablet_count.and_then(Tablets::power_of_two).ok_or_else(|| {
        ScyllaError::BadFilter(format!(
            "the manifests of {}.{} give no power-of-two tablet layout: give --tablet-count",
            table.keyspace, table.table
        ))
    })
}

/// The component names an sstable's TOC lists (the TOC itself always among them).
async fn read_toc(store: &Store, sstable: &ScyllaSstableRow) -> Result<Vec<String>, ScyllaError> {
    let key = format!("{}{}", sstable.prefix, sstable.toc_name);
    let bad = |reason: String| ScyllaError::BadToc {
        sstable: sstable.sstable_id.clone(),
        toc: key.clone(),
        reason,
    };
    let bytes = store.get(&Path::from(key.as_str())).await?;
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("is not text".into()))?;
    let mut components = vec!["TOC.txt".to_string()];
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let plain = !line.contains('/') && !line.contains('\0') && line != "." && line != ".." && line.len() <= 200;
        if !plain {
            return Err(bad(format!("{line:?} is not a component name")));
        }
        if !components.iter().any(|c| c == line) {
            components.push(line.to_string());
        }
    }
    Ok(components)
}
