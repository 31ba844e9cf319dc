//! Random interleavings of publish, snapshot create / release / expiry, uploader term changes, GC
//! and reads of snapshots, two operations at a time, switching between them at every store call
//! (a store wrapper yields a scripted number of times before each call). Whatever the order:
//! no file a live snapshot references is ever deleted, an uploader whose term was replaced never
//! changes the store, and every read of a live snapshot returns the published bytes.

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};
use proptest::prelude::*;

use super::*;
use crate::publish::{publish, start_term, NoProgress, PublishError, PublishOptions};
use crate::snapshot::State;

/// Yields to the other task a scripted number of times before every store call.
#[derive(Debug)]
struct Interleaving {
    inner: Arc<dyn ObjectStore>,
    script: Arc<Mutex<Vec<u8>>>,
}

impl Interleaving {
    async fn switch(script: &Mutex<Vec<u8>>) {
        let turns = {
            let mut script = script.lock().unwrap();
            let next = script.pop().unwrap_or(0);
            script.insert(0, next);
            next % 4
        };
        for _ in 0..turns {
            tokio::task::yield_now().await;
        }
    }
}

impl fmt::Display for Interleaving {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Interleaving({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Interleaving {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        Self::switch(&self.script).await;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        Self::switch(&self.script).await;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        Self::switch(&self.script).await;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let script = self.script.clone();
        let locations = locations
            .then(move |location| {
                let script = script.clone();
                async move {
                    Self::switch(&script).await;
                    location
                }
            })
            .boxed();
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let (script, inner, prefix) = (self.script.clone(), self.inner.clone(), prefix.cloned());
        futures::stream::once(async move {
            Self::switch(&script).await;
            inner.list(prefix.as_ref())
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        Self::switch(&self.script).await;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        Self::switch(&self.script).await;
        self.inner.copy_opts(from, to, options).await
    }
}

const NAMES: [&str; 6] = ["log.1", "log.2", "log.3", "log.4", "data.a", "data.b"];
const UUIDS: [&str; 3] = ["s0", "s1", "s2"];

/// A file's bytes follow from its name, so a name always means the same content.
fn content(name: &str) -> Vec<u8> {
    name.bytes().cycle().take(100 + name.len() * 37).collect()
}

#[derive(Debug, Clone)]
enum Op {
    /// Publish these files (indices into NAMES) under the current term.
    Publish(Vec<usize>),
    Create(usize, u64),
    Release(usize),
    Advance(u64),
    StartTerm,
    Gc,
    Read(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => proptest::collection::vec(0..NAMES.len(), 1..4).prop_map(Op::Publish),
        3 => (0..UUIDS.len(), 1u64..300).prop_map(|(u, v)| Op::Create(u, v)),
        1 => (0..UUIDS.len()).prop_map(Op::Release),
        1 => (0u64..400).prop_map(Op::Advance),
        1 => Just(Op::StartTerm),
        3 => Just(Op::Gc),
        2 => (0..UUIDS.len()).prop_map(Op::Read),
    ]
}

struct World {
    store: Store,
    index: Index,
    volume: VolumeId,
    clock: Mutex<u64>,
    term: Mutex<u64>,
}

impl World {
    fn now(&self) -> u64 {
        *self.clock.lock().unwrap()
    }

    fn term(&self) -> u64 {
        *self.term.lock().unwrap()
    }

    async fn run(&self, op: &Op) -> std::result::Result<(), String> {
        match op {
            Op::Publish(files) => {
                let files: Vec<(&str, Vec<u8>)> = files.iter().map(|&i| (NAMES[i], content(NAMES[i]))).collect();
                match self.publish(&files, self.term()).await {
                    // A term started meanwhile fences this publish: that is the point.
                    Ok(_) | Err(PublishError::Conflict { .. } | PublishError::Fenced { .. }) => Ok(()),
                    Err(e) => Err(format!("publish: {e}")),
                }
            }
            Op::Create(u, validity) => {
                match snapshot::create(&self.store, &self.index, &self.volume, UUIDS[*u], *validity, self.now()).await {
                    Ok(_)
                    | Err(
                        SnapshotError::Exists { .. } | SnapshotError::RolledBack { .. } | SnapshotError::EmptyVolume(_),
                    ) => Ok(()),
                    Err(e) => Err(format!("create: {e}")),
                }
            }
            Op::Release(u) => snapshot::release(&self.store, &self.index, &self.volume, UUIDS[*u])
                .await
                .map(|_| ())
                .map_err(|e| format!("release: {e}")),
            Op::Advance(secs) => {
                *self.clock.lock().unwrap() += secs * 1000;
                Ok(())
            }
            Op::StartTerm => {
                let next = self.term() + 1;
                match start_term(&self.store, &self.index, &self.volume, next).await {
                    Ok(_) => {
                        *self.term.lock().unwrap() = next;
                        Ok(())
                    }
                    Err(e) => Err(format!("start term {next}: {e}")),
                }
            }
            Op::Gc => {
                let options = GcOptions {
                    term: Some(self.term()),
                    retention_ms: 0,
                    upload_grace_ms: u64::MAX / 4,
                    dry_run: false,
                };
                match collect(&self.store, &self.index, &self.volume, &options, self.now()).await {
                    Ok(_) | Err(GcError::EmptyVolume(_) | GcError::Fenced { .. }) => Ok(()),
                    Err(e) => Err(format!("gc: {e}")),
                }
            }
            Op::Read(u) => match snapshot::describe(&self.store, &self.volume, UUIDS[*u], self.now()).await {
                Ok(s) if s.state == State::Committed => self.check_files(&s.log_manifest_name).await,
                _ => Ok(()),
            },
        }
    }

    async fn publish(&self, files: &[(&str, Vec<u8>)], term: u64) -> std::result::Result<(), PublishError> {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let options = PublishOptions {
            term: Some(term),
            ..PublishOptions::default()
        };
        publish(
            &self.store,
            &self.index,
            dir.path(),
            &self.volume,
            &options,
            &NoProgress,
        )
        .await
        .map(|_| ())
    }

    /// Every file of the manifest is in the store with its published bytes.
    async fn check_files(&self, manifest: &str) -> std::result::Result<(), String> {
        let bytes = self
            .store
            .get(&layout::manifest_key(&self.volume, manifest))
            .await
            .map_err(|e| format!("manifest {manifest} of a live snapshot: {e}"))?;
        let manifest = crate::manifest::native::parse(&bytes, &self.volume, manifest).map_err(|e| e.to_string())?;
        for file in &manifest.files {
            let got = self
                .store
                .get(&layout::file_key(&self.volume, &file.path))
                .await
                .map_err(|e| format!("file {} of live manifest {}: {e}", file.path, manifest.name))?;
            if got.as_ref() != content(file.path.as_str()) {
                return Err(format!("file {} has other bytes", file.path));
            }
        }
        Ok(())
    }

    async fn objects(&self) -> Vec<(String, Option<String>)> {
        let mut all: Vec<_> = self
            .store
            .list(&Path::from("volumes"))
            .await
            .unwrap()
            .into_iter()
            .map(|o| (o.key.to_string(), o.etag))
            .collect();
        all.sort();
        all
    }

    /// A writer with the previous term, after the current one started: it must fail and change
    /// nothing in the store.
    async fn fenced_writer_changes_nothing(&self) -> std::result::Result<(), String> {
        let stale = self.term() - 1;
        let before = self.objects().await;
        let published = self.publish(&[("zombie", b"zombie".to_vec())], stale).await;
        let gc_options = GcOptions {
            term: Some(stale),
            retention_ms: 0,
            upload_grace_ms: 0,
            dry_run: false,
        };
        let collected = collect(&self.store, &self.index, &self.volume, &gc_options, self.now()).await;
        if !matches!(published, Err(PublishError::Fenced { .. })) || !matches!(collected, Err(GcError::Fenced { .. })) {
            return Err(format!(
                "a fenced writer was let through: {published:?} / {collected:?}"
            ));
        }
        if self.objects().await != before {
            return Err("a fenced writer changed the store".into());
        }
        Ok(())
    }
}

fn run_case(rounds: Vec<(Op, Op)>, script: Vec<u8>) -> std::result::Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let script = Arc::new(Mutex::new(script));
        let inner = Interleaving {
            inner: Arc::new(InMemory::new()),
            script,
        };
        let world = World {
            store: Store::from_object_store("test://interleavings".parse().unwrap(), Arc::new(inner)),
            index: Index::open_in_memory().unwrap(),
            volume: VolumeId::parse("kv/b/kvstore-9").unwrap(),
            clock: Mutex::new(crate::time::now_ms()),
            term: Mutex::new(1),
        };
        world.run(&Op::Publish(vec![0])).await?;
        for (a, b) in &rounds {
            let (ra, rb) = tokio::join!(world.run(a), world.run(b));
            ra?;
            rb?;
            for snap in snapshot::list(&world.store, &world.volume, world.now())
                .await
                .map_err(|e| e.to_string())?
            {
                match snap.state {
                    State::Committed => world.check_files(&snap.log_manifest_name).await?,
                    State::Pending => return Err(format!("{} left PENDING", snap.snapshot_uuid)),
                    _ => {}
                }
            }
            if world.term() > 1 && matches!((a, b), (Op::StartTerm, _) | (_, Op::StartTerm)) {
                world.fenced_writer_changes_nothing().await?;
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn no_interleaving_loses_a_live_snapshots_files_or_lets_a_fenced_writer_through(
        rounds in proptest::collection::vec((op(), op()), 1..10),
        script in proptest::collection::vec(any::<u8>(), 1..64),
    ) {
        if let Err(failure) = run_case(rounds, script) {
            prop_assert!(false, "{}", failure);
        }
    }
}
