//! A store wrapper that injects the faults of a [`FaultPlan`] into GETs (the model, its draws and
//! counts are `lazysnap_faults`', shared with the S3 test server's fault mode).

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

pub use lazysnap_faults::{Fault, FaultPlan, Faults, Injected};

/// An object store whose GETs get the faults of a plan.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: Arc<Faults>,
}

/// Turns a [`FaultyStore`]'s faults on and off (a test checks recovery once they stop).
#[derive(Debug, Clone)]
pub struct FaultSwitch(Arc<Faults>);

impl FaultSwitch {
    pub fn set(&self, on: bool) {
        self.0.set(on);
    }
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, plan: FaultPlan) -> (FaultyStore, Arc<Faults>, FaultSwitch) {
        let faults = Arc::new(Faults::new(plan));
        let store = FaultyStore {
            inner,
            faults: faults.clone(),
        };
        (store, faults.clone(), FaultSwitch(faults))
    }
}

fn injected(what: &'static str) -> object_store::Error {
    object_store::Error::Generic {
        store: "faulty",
        source: what.into(),
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let Some(fault) = self.faults.draw() else {
            return self.inner.get_opts(location, options).await;
        };
        let stall = self.faults.plan().stall;
        match fault {
            Fault::ServerError => return Err(injected("503 SlowDown (injected)")),
            Fault::Vanished => {
                return Err(object_store::Error::NotFound {
                    path: location.to_string(),
                    source: "deleted under the reader (injected)".into(),
                })
            }
            Fault::StallFirstByte => tokio::time::sleep(stall).await,
            _ => {}
        }
        let mut result = self.inner.get_opts(location, options).await?;
        if fault == Fault::ChangedEtag {
            result.meta.e_tag = Some("\"changed-by-a-fault\"".into());
            return Ok(result);
        }
        if matches!(fault, Fault::StallFirstByte) {
            return Ok(result);
        }
        let empty = GetResultPayload::Stream(futures::stream::empty().boxed());
        let range = result.range.clone();
        let body = match std::mem::replace(&mut result.payload, empty) {
            GetResultPayload::Stream(body) => body,
            GetResultPayload::File(file, path) => {
                // A local directory's answer: read the range now and stream it as one chunk.
                let mut buf = vec![0; (range.end - range.start) as usize];
                std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, range.start).map_err(|source| {
                    object_store::Error::Generic {
                        store: "faulty",
                        source: format!("read {}: {source}", path.display()).into(),
                    }
                })?;
                futures::stream::once(async move { Ok(Bytes::from(buf)) }).boxed()
            }
        };
        let len = range.end - range.start;
        result.payload = GetResultPayload::Stream(lazysnap_faults::faulty_body(body, len, fault, stall, injected));
        Ok(result)
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        // Through get_opts, one GET per range, so each can be faulty.
        let mut out = Vec::with_capacity(ranges.len());
        for range in ranges {
            let options = GetOptions {
                range: Some(range.clone().into()),
                ..Default::default()
            };
            out.push(self.get_opts(location, options).await?.bytes().await?);
        }
        Ok(out)
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    use super::*;

    const KEY: &str = "volumes/v/files/f";

    async fn faulty(fault: Fault, stall: Duration) -> (FaultyStore, Arc<Faults>, Vec<u8>) {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let raw = Arc::new(InMemory::new());
        raw.put(&Path::from(KEY), data.clone().into()).await.unwrap();
        let plan = FaultPlan {
            rates: vec![(fault, 1.0)],
            stall,
            seed: 1,
        };
        let (store, injected, _) = FaultyStore::new(raw, plan);
        (store, injected, data)
    }

    /// A GET of the whole object through a store whose every GET has `fault`: the body (or the
    /// error), the ETag it claimed, and how long it took.
    async fn get(store: &FaultyStore) -> (Result<Bytes>, Option<String>, Duration) {
        let started = Instant::now();
        match store.get_opts(&Path::from(KEY), GetOptions::default()).await {
            Ok(result) => {
                let etag = result.meta.e_tag.clone();
                (result.bytes().await, etag, started.elapsed())
            }
            Err(e) => (Err(e), None, started.elapsed()),
        }
    }

    #[tokio::test]
    async fn each_fault_does_what_it_names_and_is_counted() {
        let stall = Duration::from_millis(60);
        let (clean, _, data) = faulty(Fault::ServerError, stall).await;
        let clean_etag = clean.inner.head(&Path::from(KEY)).await.unwrap().e_tag;
        for fault in Fault::ALL {
            let (store, faults, _) = faulty(fault, stall).await;
            let injected = faults.injected();
            let (body, etag, took) = get(&store).await;
            assert_eq!(injected.count(fault), 1, "{fault:?} counted");
            assert_eq!(injected.total(), 1, "{fault:?}: one fault per GET");
            match fault {
                Fault::ServerError | Fault::Reset => assert!(body.is_err(), "{fault:?}"),
                Fault::Vanished => assert!(matches!(body, Err(object_store::Error::NotFound { .. }))),
                Fault::Truncated => assert_eq!(&body.unwrap()[..], &data[..data.len() / 2]),
                Fault::Corrupted => {
                    let body = body.unwrap();
                    assert_eq!(body.len(), data.len());
                    let flipped: Vec<u32> = body.iter().zip(&data).map(|(a, b)| (a ^ b).count_ones()).collect();
                    assert_eq!(flipped.iter().sum::<u32>(), 1, "one bit flipped");
                }
                Fault::StallFirstByte | Fault::StallMidBody => {
                    assert_eq!(&body.unwrap()[..], &data[..], "{fault:?} delays, never changes");
                    assert!(took >= stall, "{fault:?} took {took:?}");
                }
                Fault::ChangedEtag => {
                    assert_eq!(&body.unwrap()[..], &data[..]);
                    assert_ne!(etag, clean_etag);
                }
            }
        }
    }

    #[tokio::test]
    async fn the_same_seed_injects_the_same_faults_and_the_switch_stops_them() {
        let run = |seed| async move {
            let raw = Arc::new(InMemory::new());
            raw.put(&Path::from(KEY), Bytes::from_static(b"0123456789").into())
                .await
                .unwrap();
            let plan = FaultPlan::mixed(0.5, &[Fault::ServerError, Fault::Vanished], Duration::ZERO, seed);
            let (store, faults, switch) = FaultyStore::new(raw, plan);
            let mut outcomes = Vec::new();
            for _ in 0..64 {
                outcomes.push(get(&store).await.0.is_ok());
            }
            switch.set(false);
            let after = get(&store).await.0.is_ok();
            (outcomes, faults.injected().total(), after)
        };
        let (first, faults, recovered) = run(7).await;
        let (again, _, _) = run(7).await;
        let (other, _, _) = run(8).await;
        assert_eq!(first, again, "a seed replays");
        assert_ne!(first, other, "another seed differs");
        assert!((16..=48).contains(&faults), "{faults} faults in 64 GETs at 50%");
        assert_eq!(first.iter().filter(|ok| !**ok).count() as u64, faults);
        assert!(recovered, "no fault once switched off");
    }

    /// Whole-object reads (manifests, records) read a body that broke off again: at half of all
    /// GETs reset or cut short, nearly every read succeeds, with the exact bytes.
    #[tokio::test]
    async fn whole_object_reads_survive_bodies_that_break_off() {
        let raw = Arc::new(InMemory::new());
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 241) as u8).collect();
        raw.put(&Path::from(KEY), data.clone().into()).await.unwrap();
        let plan = FaultPlan::mixed(0.5, &[Fault::Reset, Fault::Truncated], Duration::ZERO, 11);
        let (faulty, faults, _) = FaultyStore::new(raw, plan);
        let store = crate::store::Store::from_object_store("test://whole-reads".parse().unwrap(), Arc::new(faulty));
        let mut good = 0;
        for _ in 0..40 {
            if let Ok(bytes) = store.get(&Path::from(KEY)).await {
                assert_eq!(&bytes[..], &data[..], "never other or fewer bytes");
                good += 1;
            }
        }
        // One read in two would fail without reading again; one in eight fails all three reads.
        assert!(
            good >= 30,
            "{good} of 40 reads good, {} faults",
            faults.injected().total()
        );
        assert!(faults.injected().total() >= 15);
    }
}
