//! One backup round: scan the folder, place what is new, call back, write the generations.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use object_store::path::Path;

use super::{lock, BackupError, BackupFile, BackupOptions, BackupStatus, Callback, MetadataWriter};
use crate::chain::{generations, read_generation};
use crate::checksum::BlockChecksums;
use crate::manifest::backup as format;
use crate::manifest::{Manifest, ManifestFile};
use crate::names::RelPath;
use crate::publish::{self, LocalFile, NoProgress, PublishOptions};
use crate::store::{layout, Scheme, Store, StoreError};

/// A file of the folder as placed in the location.
#[derive(Debug, Clone)]
struct Placed {
    object: String,
    len: u64,
    checksums: BlockChecksums,
    low_seqno: Option<u64>,
    high_seqno: Option<u64>,
    /// (mtime ns, inode) of the local file; `None` for a file known only from the newest
    /// generation at start, not yet matched with the folder.
    identity: Option<(i128, u64)>,
}

pub(super) struct Rounds {
    source: PathBuf,
    location: Store,
    /// The location's directory when it is a local one: files are hard-linked there.
    local_root: Option<PathBuf>,
    options: BackupOptions,
    callback: Callback,
    status: Arc<Mutex<BackupStatus>>,
    /// The folder's files as of the last round.
    live: BTreeMap<RelPath, Placed>,
    /// Every object key under `files/` in the location: a new object never takes one of them.
    used: HashSet<String>,
    next_generation: u64,
    /// The callback is due: files were placed (or lost) that no completed callback and
    /// generation write has covered yet, or no round has completed since start.
    due: bool,
    /// Files placed since the last completed callback: a round that failed after placing some
    /// reports them the next time instead of losing them.
    unreported: Vec<BackupFile>,
}

impl Rounds {
    pub(super) async fn open(
        source: PathBuf,
        location: Store,
        options: BackupOptions,
        callback: Callback,
        status: Arc<Mutex<BackupStatus>>,
    ) -> Result<Rounds, BackupError> {
        let numbers = generations(&location).await?;
        let mut live = BTreeMap::new();
        if let Some(&newest) = numbers.last() {
            for file in read_generation(&location, newest).await?.manifest.files {
                live.insert(
                    file.path,
                    Placed {
                        object: file.object_key.unwrap_or_default(),
                        len: file.size,
                        checksums: file.checksums,
                        low_seqno: file.low_seqno,
                        high_seqno: file.high_seqno,
                        identity: None,
                    },
                );
            }
            lock(&status).last_generation = Some(newest);
        }
        let used = location
            .list(&Path::from(layout::BACKUP_FILES))
            .await?
            .into_iter()
            .map(|o| o.key.to_string())
            .collect();
        let url = location.url();
        let local_root = (url.scheme() == Scheme::File).then(|| PathBuf::from(url.root()));
        Ok(Rounds {
            source,
            location,
            local_root,
            options,
            callback,
            status,
            live,
            used,
            next_generation: numbers.last().map_or(1, |n| n + 1),
            due: true,
            unreported: Vec::new(),
        })
    }

    pub(super) fn location(&self) -> String {
        self.location.url().to_string()
    }

    /// One round; the error is also kept in the status.
    pub(super) async fn run_once(&mut self) -> Result<(), BackupError> {
        let result = self.round().await;
        let mut status = lock(&self.status);
        status.rounds += 1;
        status.last_round_at_ms = Some(crate::time::now_ms());
        status.last_error = result.as_ref().err().map(ToString::to_string);
        result
    }

    async fn round(&mut self) -> Result<(), BackupError> {
        let scanned = publish::scan(&self.source).await?;
        let (files, sidecars): (Vec<LocalFile>, Vec<LocalFile>) = scanned
            .into_iter()
            .partition(|f| !f.path.as_str().ends_with(super::SEQNO_SIDECAR_SUFFIX));
        let sidecars: HashSet<String> = sidecars.into_iter().map(|f| f.path.to_string()).collect();
        // The state moves file by file, so a round cut by an error keeps what it placed.
        let seen: HashSet<&RelPath> = files.iter().map(|f| &f.path).collect();
        let before = self.live.len();
        self.live.retain(|path, _| seen.contains(path));
        self.due |= self.live.len() != before;
        for file in &files {
            let identity = (file.modified_ns, file.inode);
            let kept = match self.live.get(&file.path) {
                Some(placed) if placed.identity == Some(identity) => continue,
                Some(placed) if placed.identity.is_none() && placed.len == file.size => {
                    let placed = placed.clone();
                    self.same_as_placed(file, &placed).await?.then_some(placed)
                }
                Some(_) => {
                    tracing::warn!(file = %file.path, "file changed in place; backing it up again under a new object");
                    None
                }
                None => None,
            };
            if let Some(placed) = kept {
                let identified = Placed {
                    identity: Some(identity),
                    ..placed
                };
                self.live.insert(file.path.clone(), identified);
                continue;
            }
            let sidecar = format!("{}{}", file.path, super::SEQNO_SIDECAR_SUFFIX);
            let seqnos = match sidecars.contains(&sidecar) {
                true => read_seqnos(&self.source.join(&sidecar)),
                false => None,
            };
            let placed = self.place(file, seqnos).await?;
            self.unreported.push(BackupFile {
                name: file.path.to_string(),
                len: placed.len,
                low_seqno: placed.low_seqno,
                high_seqno: placed.high_seqno,
            });
            self.live.insert(file.path.clone(), placed);
            self.due = true;
        }
        if !self.due {
            return Ok(());
        }
        let mut writer = MetadataWriter {
            next: self.next_generation,
            pending: Vec::new(),
        };
        (self.callback)(&self.unreported, &mut writer);
        crate::failpoint::stopped_at(crate::failpoint::BACKUP_FILES_PLACED).await;
        for metadata in writer.pending {
            self.write_generation(metadata).await?;
        }
        self.unreported.clear();
        self.due = false;
        Ok(())
    }

    /// Whether a file known from the newest generation at start is still that file: the same
    /// inode for a hard link, else the same checksums.
    async fn same_as_placed(&self, file: &LocalFile, placed: &Placed) -> Result<bool, BackupError> {
        if let Some(root) = &self.local_root {
            if let Ok(meta) = std::fs::metadata(local_object_path(root, &placed.object)) {
                return Ok(meta.ino() == file.inode);
            }
        }
        Ok(publish::checksum_local(file, self.options.block_size).await? == placed.checksums)
    }

    /// Places one file under an object key no earlier file used.
    async fn place(&mut self, file: &LocalFile, seqnos: Option<(u64, u64)>) -> Result<Placed, BackupError> {
        let mut object = layout::backup_object(&file.path, None);
        if self.used.contains(&Path::from(object.as_str()).to_string()) {
            object = layout::backup_object(&file.path, Some(self.next_generation));
        }
        let key = Path::from(object.as_str());
        let linked = match &self.local_root {
            Some(root) => hard_link(&file.local, &local_object_path(root, &object))?,
            None => false,
        };
        let (len, checksums) = if linked {
            // Length and checksums from one read, so they agree even if the file grew since the scan.
            checksum_with_len(&file.local, self.options.block_size).await?
        } else {
            let options = PublishOptions {
                block_size: self.options.block_size,
                ..PublishOptions::default()
            };
            publish::upload(&self.location, &key, file, &options, &NoProgress).await?
        };
        self.used.insert(key.to_string());
        let mut status = lock(&self.status);
        match linked {
            true => status.files_linked += 1,
            false => status.files_uploaded += 1,
        }
        status.bytes_placed += len;
        Ok(Placed {
            object,
            len,
            checksums,
            low_seqno: seqnos.map(|s| s.0),
            high_seqno: seqnos.map(|s| s.1),
            identity: Some((file.modified_ns, file.inode)),
        })
    }

    async fn write_generation(&mut self, metadata: String) -> Result<(), BackupError> {
        let generation = self.next_generation;
        let manifest = Manifest {
            volume: self.options.volume.clone(),
            name: layout::generation_name(generation),
            term: 0,
            seq: generation,
            created_at_ms: crate::time::now_ms(),
            block_size: self.options.block_size,
            files: self
                .live
                .iter()
                .map(|(path, placed)| ManifestFile {
                    path: path.clone(),
                    size: placed.len,
                    checksums: placed.checksums.clone(),
                    low_seqno: placed.low_seqno,
                    high_seqno: placed.high_seqno,
                    object_key: Some(placed.object.clone()),
                    etag: None,
                })
                .collect(),
        };
        manifest.validate()?;
        let writer = uuid::Uuid::new_v4().to_string();
        let body = Bytes::from(format::to_json(&format::Generation { manifest, metadata }, &writer));
        let key = Path::from(layout::generation_name(generation).as_str());
        match self.location.put_if_absent(&key, body).await {
            Ok(()) => {}
            Err(StoreError::AlreadyExists { .. }) => {
                let ours = format::writer(&self.location.get(&key).await?).as_deref() == Some(writer.as_str());
                if !ours {
                    // Numbering continues after whatever is there now.
                    self.next_generation = generations(&self.location).await?.last().map_or(1, |n| n + 1);
                    return Err(BackupError::Conflict {
                        location: self.location(),
                        generation,
                    });
                }
            }
            Err(e) => return Err(e.into()),
        }
        self.next_generation = generation + 1;
        let mut status = lock(&self.status);
        status.generations_written += 1;
        status.last_generation = Some(generation);
        tracing::info!(location = %self.location.url(), generation, files = self.live.len(), "backup generation written");
        Ok(())
    }
}

/// The file a local location keeps an object in (object_store's on-disk name for the key).
fn local_object_path(root: &std::path::Path, object: &str) -> PathBuf {
    root.join(Path::from(object).as_ref())
}

/// Hard-links `from` to `to`; false when they are on different filesystems (upload instead).
fn hard_link(from: &std::path::Path, to: &std::path::Path) -> Result<bool, BackupError> {
    let place_err = |source| BackupError::Place {
        path: to.display().to_string(),
        source,
    };
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(place_err)?;
    }
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => Ok(false),
        Err(e) => Err(place_err(e)),
    }
}

async fn checksum_with_len(path: &std::path::Path, block_size: u64) -> Result<(u64, BlockChecksums), BackupError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let read =
            std::fs::File::open(&path).and_then(|f| BlockChecksums::compute(std::io::BufReader::new(f), block_size));
        match read {
            Ok((sums, len)) => Ok((len, sums)),
            Err(source) => Err(BackupError::Place {
                path: path.display().to_string(),
                source,
            }),
        }
    })
    .await
    .expect("checksum task does not panic")
}

/// `<low> <high>` from a sidecar; a sidecar that cannot be used is logged and ignored.
fn read_seqnos(path: &std::path::Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut parts = text.split_whitespace().map(str::parse::<u64>);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Ok(low)), Some(Ok(high)), None) if low <= high => Some((low, high)),
        _ => {
            tracing::warn!(sidecar = %path.display(), "ignoring seqno sidecar: expected \"<low> <high>\" with low <= high");
            None
        }
    }
}
