//! An S3-compatible server on 127.0.0.1 for lazysnap's integration tests and `lazysnap bench`.
//!
//! `s3s-fs` stores objects in a temporary folder; a wrapper in front of it counts requests and body
//! bytes *at the store*, so tests measure what really reached S3 rather than trusting the client's
//! own counters. Requests are path-style over plain http, signed with fixed SigV4 credentials.
//!
//! GET bodies are streamed from the object's file in large chunks (s3s-fs alone streams 4 KiB at a
//! time, which caps one GET far below what loopback can carry), and an [`Emulation`] can add S3's
//! time to first byte and per-stream bandwidth, because loopback hides what latency does to a reader.
//! [`S3Server::inject_faults`] makes GETs fail the ways real stores do (`lazysnap_faults`' model,
//! the one lazysnap's unit tests inject under the object-store trait), at a seeded rate per kind.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};
use s3s_fs::FileSystem;
use tempfile::TempDir;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use lazysnap_faults::{faulty_body, Fault, FaultPlan, Faults};

const BUCKET: &str = "lazysnap-test";
const ACCESS_KEY: &str = "lazysnap-test-key";
const SECRET_KEY: &str = "lazysnap-test-secret";
const REGION: &str = "us-east-1";

/// What the server adds to GET and HEAD requests to look like a remote object store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Emulation {
    /// Delay before each GET or HEAD is answered.
    pub first_byte: Duration,
    /// Cap on each GET body's rate, in bytes per second; `None`: as fast as disk and CPU allow.
    pub stream_rate: Option<u64>,
}

impl Emulation {
    /// No added delay: loopback speed.
    pub const NONE: Emulation = Emulation {
        first_byte: Duration::ZERO,
        stream_rate: None,
    };

    /// Close to S3 seen from a node in the same region: ~25 ms to first byte, ~90 MB/s per stream.
    pub const S3_LIKE: Emulation = Emulation {
        first_byte: Duration::from_millis(25),
        stream_rate: Some(90_000_000),
    };
}

/// Requests and bytes seen by the server since start or the last `reset_stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct S3Stats {
    /// GetObject requests, including failed ones (they still reached the store).
    pub get_requests: u64,
    /// Body bytes of successful GetObject responses (the ranged length for ranged GETs).
    pub get_bytes: u64,
    /// PutObject and UploadPart requests.
    pub put_requests: u64,
    /// ListObjects and ListObjectsV2 requests.
    pub list_requests: u64,
    /// HeadObject requests.
    pub head_requests: u64,
}

#[derive(Default)]
struct Counters {
    get_requests: AtomicU64,
    get_bytes: AtomicU64,
    put_requests: AtomicU64,
    list_requests: AtomicU64,
    head_requests: AtomicU64,
    gets_by_key: Mutex<HashMap<String, u64>>,
}

/// The `S3` implementation the service runs: s3s-fs plus counting, fast bodies, emulation and
/// faults.
struct Counting {
    fs: Arc<FileSystem>,
    root: PathBuf,
    counters: Arc<Counters>,
    emulation: Emulation,
    faults: FaultSlot,
}

/// The faults GETs get now, if any; replaced whole by [`S3Server::inject_faults`].
type FaultSlot = Arc<Mutex<Option<Arc<Faults>>>>;

/// Bytes read from the object's file per body chunk.
const BODY_CHUNK: usize = 256 << 10;

/// Implements `S3` for `Counting`: the methods in braces as written, the `forward` list by passing
/// the request to s3s-fs unchanged. (A macro because `#[async_trait]` must see the expanded fns.)
/// Operations s3s-fs lacks keep the trait default, NotImplemented, exactly as s3s-fs alone would.
macro_rules! impl_s3 {
    ({ $($counted:tt)* } forward: $($op:ident($input:ident) -> $output:ident;)*) => {
        #[async_trait::async_trait]
        impl S3 for Counting {
            $($counted)*
            $(async fn $op(&self, req: S3Request<$input>) -> S3Result<S3Response<$output>> {
                self.fs.$op(req).await
            })*
        }
    };
}

impl_s3! {
    {
        async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
            let c = &self.counters;
            c.get_requests.fetch_add(1, Relaxed);
            *c.gets_by_key.lock().unwrap().entry(req.input.key.clone()).or_default() += 1;
            let faults = self.faults.lock().unwrap().clone();
            let fault = faults.as_ref().and_then(|f| f.draw().map(|kind| (kind, f.plan().stall)));
            let if_match = req.input.if_match.clone();
            let path = self.root.join(&req.input.bucket).join(&req.input.key);
            tokio::time::sleep(self.emulation.first_byte).await;
            match fault {
                Some((Fault::ServerError, _)) => return Err(s3_error!(SlowDown, "injected")),
                Some((Fault::Vanished, _)) => return Err(s3_error!(NoSuchKey, "deleted under the reader (injected)")),
                Some((Fault::StallFirstByte, stall)) => tokio::time::sleep(stall).await,
                _ => {}
            }
            no_folder_objects(&path)?;
            let mut resp = self.fs.get_object(req).await?;
            // s3s-fs ignores If-Match on GET; real S3 answers 412, and readers pinning an ETag rely on it.
            if let Some(ETagCondition::ETag(want)) = if_match {
                if !resp.output.e_tag.as_ref().is_some_and(|have| have.strong_cmp(&want)) {
                    return Err(s3_error!(PreconditionFailed));
                }
            }
            // s3s-fs sets content_length to the (ranged) body length it streams.
            let len = u64::try_from(resp.output.content_length.unwrap_or(0)).unwrap_or(0);
            c.get_bytes.fetch_add(len, Relaxed);
            let start = body_start(resp.output.content_range.as_deref());
            let chunks = file_chunks(path, start, len, self.emulation.stream_rate);
            resp.output.body = Some(match fault {
                Some((Fault::ChangedEtag, _)) => {
                    resp.output.e_tag = Some(ETag::Strong("changed-by-a-fault".into()));
                    StreamingBlob::wrap(chunks)
                }
                Some((kind, stall)) => {
                    let body = faulty_body(chunks, len, kind, stall, std::io::Error::other);
                    StreamingBlob::wrap(Shareable(Mutex::new(body)))
                }
                None => StreamingBlob::wrap(chunks),
            });
            Ok(resp)
        }

        async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
            self.counters.head_requests.fetch_add(1, Relaxed);
            tokio::time::sleep(self.emulation.first_byte).await;
            no_folder_objects(&self.root.join(&req.input.bucket).join(&req.input.key))?;
            self.fs.head_object(req).await
        }

        async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
            self.counters.put_requests.fetch_add(1, Relaxed);
            self.fs.put_object(req).await
        }

        async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
            self.counters.put_requests.fetch_add(1, Relaxed);
            self.fs.upload_part(req).await
        }

        async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
            self.counters.list_requests.fetch_add(1, Relaxed);
            self.fs.list_objects(req).await
        }

        async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
            self.counters.list_requests.fetch_add(1, Relaxed);
            self.fs.list_objects_v2(req).await
        }
    }
    forward:
    abort_multipart_upload(AbortMultipartUploadInput) -> AbortMultipartUploadOutput;
    complete_multipart_upload(CompleteMultipartUploadInput) -> CompleteMultipartUploadOutput;
    copy_object(CopyObjectInput) -> CopyObjectOutput;
    create_bucket(CreateBucketInput) -> CreateBucketOutput;
    create_multipart_upload(CreateMultipartUploadInput) -> CreateMultipartUploadOutput;
    delete_bucket(DeleteBucketInput) -> DeleteBucketOutput;
    delete_object(DeleteObjectInput) -> DeleteObjectOutput;
    delete_objects(DeleteObjectsInput) -> DeleteObjectsOutput;
    get_bucket_location(GetBucketLocationInput) -> GetBucketLocationOutput;
    head_bucket(HeadBucketInput) -> HeadBucketOutput;
    list_buckets(ListBucketsInput) -> ListBucketsOutput;
    list_parts(ListPartsInput) -> ListPartsOutput;
    upload_part_copy(UploadPartCopyInput) -> UploadPartCopyOutput;
}

/// A running server; dropping it shuts it down gracefully and removes its data.
pub struct S3Server {
    addr: SocketAddr,
    fs: Arc<FileSystem>,
    counters: Arc<Counters>,
    faults: FaultSlot,
    handle: Handle,
    runtime: Option<Runtime>,
    stop: Option<oneshot::Sender<()>>,
    accept_loop: Option<JoinHandle<()>>,
    // Last field: the folder goes away only after the runtime that serves it.
    _root: TempDir,
}

impl S3Server {
    /// Starts a server on 127.0.0.1 with an empty bucket `lazysnap-test`. Works from plain
    /// `#[test]`s and from inside a tokio runtime alike: the server has its own runtime.
    pub fn start() -> S3Server {
        S3Server::start_emulating(Emulation::NONE)
    }

    /// Like [`S3Server::start`], with S3's latency and bandwidth emulated.
    pub fn start_emulating(emulation: Emulation) -> S3Server {
        let root = tempfile::tempdir().expect("temp dir for the S3 server");
        // To s3s-fs a bucket is a top-level directory (its CreateBucket does just this).
        std::fs::create_dir(root.path().join(BUCKET)).expect("create bucket dir");
        let fs = Arc::new(FileSystem::new(root.path()).expect("s3s-fs root"));
        let counters = Arc::new(Counters::default());
        let faults = FaultSlot::default();
        let mut builder = S3ServiceBuilder::new(Counting {
            fs: fs.clone(),
            root: root.path().to_owned(),
            counters: counters.clone(),
            emulation,
            faults: faults.clone(),
        });
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();

        // Bind with std so `start` needs no async context; tokio adopts the socket in the loop.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = listener.local_addr().expect("listener address");

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .thread_name("s3-test-server")
            .enable_all()
            .build()
            .expect("S3 server runtime");
        let (stop, stopped) = oneshot::channel();
        let accept_loop = runtime.spawn(serve(listener, service, stopped));
        S3Server {
            addr,
            fs,
            counters,
            faults,
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            stop: Some(stop),
            accept_loop: Some(accept_loop),
            _root: root,
        }
    }

    /// e.g. `http://127.0.0.1:40123` (no bucket: clients must use path-style requests).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn bucket(&self) -> &str {
        BUCKET
    }

    pub fn access_key(&self) -> &str {
        ACCESS_KEY
    }

    pub fn secret_key(&self) -> &str {
        SECRET_KEY
    }

    pub fn region(&self) -> &str {
        REGION
    }

    /// Variables that point a child process's `AmazonS3Builder::from_env()` (or an AWS SDK) at
    /// this server. The caller must also remove variables the machine may set that would override
    /// or break them: AWS_SESSION_TOKEN, AWS_PROFILE, AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE,
    /// AWS_CONTAINER_*, AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN, AWS_CA_BUNDLE and the like.
    pub fn env(&self) -> Vec<(String, String)> {
        let endpoint = self.endpoint();
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_REGION", REGION),
            ("AWS_DEFAULT_REGION", REGION),
            ("AWS_ENDPOINT", &endpoint),
            ("AWS_ENDPOINT_URL", &endpoint),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    pub fn stats(&self) -> S3Stats {
        let c = &self.counters;
        S3Stats {
            get_requests: c.get_requests.load(Relaxed),
            get_bytes: c.get_bytes.load(Relaxed),
            put_requests: c.put_requests.load(Relaxed),
            list_requests: c.list_requests.load(Relaxed),
            head_requests: c.head_requests.load(Relaxed),
        }
    }

    /// From now on, GETs get the faults of `plan` (replacing any plan before): 5xx SlowDown,
    /// NoSuchKey, stalls, resets and cuts (the connection closes before the body's declared
    /// length), a flipped bit, a changed ETag. The answer counts what was injected and turns it off.
    pub fn inject_faults(&self, plan: FaultPlan) -> Arc<Faults> {
        let faults = Arc::new(Faults::new(plan));
        *self.faults.lock().unwrap() = Some(faults.clone());
        faults
    }

    /// GETs are answered faithfully again.
    pub fn stop_faults(&self) {
        *self.faults.lock().unwrap() = None;
    }

    pub fn reset_stats(&self) {
        let c = &self.counters;
        for n in [
            &c.get_requests,
            &c.get_bytes,
            &c.put_requests,
            &c.list_requests,
            &c.head_requests,
        ] {
            n.store(0, Relaxed);
        }
        c.gets_by_key.lock().unwrap().clear();
    }

    /// GetObject requests for keys ending in `key_suffix` (since start or `reset_stats`).
    pub fn get_requests_for(&self, key_suffix: &str) -> u64 {
        let gets = self.counters.gets_by_key.lock().unwrap();
        gets.iter()
            .filter(|(k, _)| k.ends_with(key_suffix))
            .map(|(_, n)| n)
            .sum()
    }

    // The helpers below call s3s-fs directly: they keep its metadata (ETag sidecars) consistent,
    // as writing into its folder would not, and they are not counted in `stats`.

    /// Stores `data` at `key`, uncounted: for seeding a test's fixtures.
    pub fn put_object(&self, key: &str, data: impl Into<Vec<u8>>) {
        let (fs, key, data) = (self.fs.clone(), key.to_owned(), data.into());
        self.run(async move { fs_put(&fs, key, data).await })
            .unwrap_or_else(|e| panic!("put_object: {e:?}"));
    }

    /// The bytes at `key`, uncounted.
    pub fn get_object(&self, key: &str) -> Vec<u8> {
        let (fs, key) = (self.fs.clone(), key.to_owned());
        self.run(async move { fs_get(&fs, key).await })
            .unwrap_or_else(|e| panic!("get_object: {e:?}"))
    }

    /// Overwrites `key` with bytes of the same length that differ in each of the first 4 KiB
    /// (every byte inverted), as a real overwrite would: the ETag changes too.
    pub fn corrupt_object(&self, key: &str) {
        let (fs, key) = (self.fs.clone(), key.to_owned());
        self.run(async move {
            let mut data = fs_get(&fs, key.clone()).await?;
            if data.is_empty() {
                return Err(s3_error!(InvalidRequest, "cannot corrupt the empty object {key}"));
            }
            data.iter_mut().take(4096).for_each(|b| *b = !*b);
            fs_put(&fs, key, data).await
        })
        .unwrap_or_else(|e| panic!("corrupt_object: {e:?}"));
    }

    /// Every key below `prefix` with its ETag, uncounted: for tests that prove a store unchanged.
    pub fn list_keys(&self, prefix: &str) -> Vec<(String, String)> {
        let (fs, prefix) = (self.fs.clone(), prefix.to_owned());
        self.run(async move {
            let mut found = Vec::new();
            let mut token = None;
            loop {
                let input = ListObjectsV2Input {
                    bucket: BUCKET.into(),
                    prefix: Some(prefix.clone()),
                    continuation_token: token.take(),
                    ..Default::default()
                };
                let page = fs.list_objects_v2(request(input)).await?.output;
                for object in page.contents.unwrap_or_default() {
                    found.push((object.key.unwrap_or_default(), format!("{:?}", object.e_tag)));
                }
                match page.next_continuation_token {
                    Some(next) => token = Some(next),
                    None => return Ok::<_, s3s::S3Error>(found),
                }
            }
        })
        .unwrap_or_else(|e| panic!("list_keys: {e:?}"))
    }

    /// Deletes `key`, uncounted.
    pub fn delete_object(&self, key: &str) {
        let (fs, key) = (self.fs.clone(), key.to_owned());
        let input = DeleteObjectInput {
            bucket: BUCKET.into(),
            key,
            ..Default::default()
        };
        self.run(async move { fs.delete_object(request(input)).await })
            .unwrap_or_else(|e| panic!("delete_object: {e:?}"));
    }

    /// Runs `f` on the server's runtime and waits for it; fine from sync and async callers.
    fn run<F>(&self, f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        futures::executor::block_on(self.handle.spawn(f)).expect("S3 server task panicked")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        // Stop accepting, let in-flight requests finish (bounded inside `serve`), then stop threads.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(accept_loop) = self.accept_loop.take() {
            let _ = futures::executor::block_on(accept_loop);
        }
        if let Some(runtime) = self.runtime.take() {
            // A runtime may not block while dropped inside another one (e.g. a #[tokio::test]).
            if Handle::try_current().is_ok() {
                runtime.shutdown_background();
            } else {
                runtime.shutdown_timeout(Duration::from_secs(5));
            }
        }
    }
}

async fn serve(listener: std::net::TcpListener, service: S3Service, mut stop: oneshot::Receiver<()>) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("adopt listener");
    let http = ConnBuilder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(_) => continue,
            },
            _ = &mut stop => break,
        };
        // Without TCP_NODELAY, Nagle plus delayed ACKs add ~40 ms to each small response.
        let _ = socket.set_nodelay(true);
        let conn = http.serve_connection(TokioIo::new(socket), service.clone());
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

/// Where a (ranged) GET body starts, from its `Content-Range: bytes FIRST-LAST/SIZE`.
/// A key that names a common prefix ("a/b" when "a/b/c" exists) is a folder in s3s-fs's storage,
/// which it answers with 500 InternalError; S3 has no such object and answers 404, which clients
/// (rclone, s3fs) rely on to tell files from folders, retrying a 500 for seconds instead.
fn no_folder_objects(path: &std::path::Path) -> S3Result<()> {
    match path.is_dir() {
        true => Err(s3_error!(NoSuchKey)),
        false => Ok(()),
    }
}

fn body_start(content_range: Option<&str>) -> u64 {
    content_range
        .and_then(|r| r.strip_prefix("bytes "))
        .and_then(|r| r.split('-').next())
        .and_then(|first| first.parse().ok())
        .unwrap_or(0)
}

/// `len` bytes of the file at `path` from `start`, in large chunks, no faster than `rate` bytes/s.
fn file_chunks(
    path: PathBuf,
    start: u64,
    len: u64,
    rate: Option<u64>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    struct State {
        path: PathBuf,
        file: Option<Arc<std::fs::File>>,
        sent: u64,
        started: Instant,
    }
    let state = State {
        path,
        file: None,
        sent: 0,
        started: Instant::now(),
    };
    futures::stream::try_unfold(state, move |mut state| async move {
        if state.sent == len {
            return Ok::<_, std::io::Error>(None);
        }
        let file = match &state.file {
            Some(file) => file.clone(),
            None => Arc::new(std::fs::File::open(&state.path)?),
        };
        state.file = Some(file.clone());
        let n = (len - state.sent).min(BODY_CHUNK as u64) as usize;
        let offset = start + state.sent;
        let chunk = tokio::task::spawn_blocking(move || {
            // Read into fresh capacity, not a zeroed buffer: zeroing cost the server as much as
            // sending. The chunks of one GET are read one after another, so seeking is safe.
            use std::io::{Read, Seek};
            let mut buf = Vec::with_capacity(n);
            (&*file).seek(std::io::SeekFrom::Start(offset))?;
            (&*file).take(n as u64).read_to_end(&mut buf)?;
            if buf.len() != n {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(std::io::Error::other)??;
        state.sent += n as u64;
        if let Some(rate) = rate {
            let due = state.started + Duration::from_secs_f64(state.sent as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        Ok(Some((chunk, state)))
    })
}

/// A stream s3s can hold (it wants `Sync` bodies): only the one task polling it ever locks it.
struct Shareable<S>(Mutex<S>);

impl<S: futures::Stream + Unpin> futures::Stream for Shareable<S> {
    type Item = S::Item;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let inner = self.get_mut().0.get_mut().unwrap_or_else(|p| p.into_inner());
        std::pin::Pin::new(inner).poll_next(cx)
    }
}

async fn fs_get(fs: &FileSystem, key: String) -> S3Result<Vec<u8>> {
    let input = GetObjectInput {
        bucket: BUCKET.into(),
        key,
        ..Default::default()
    };
    let resp = fs.get_object(request(input)).await?;
    let body = resp.output.body.ok_or_else(|| s3_error!(InternalError, "no body"))?;
    let chunks: Vec<_> = body.try_collect().await.map_err(|e| s3_error!(InternalError, "{e}"))?;
    Ok(chunks.concat())
}

async fn fs_put(fs: &FileSystem, key: String, data: Vec<u8>) -> S3Result<()> {
    let input = PutObjectInput {
        bucket: BUCKET.into(),
        key,
        content_length: Some(data.len().try_into().unwrap()),
        body: Some(StreamingBlob::from(s3s::Body::from(data))),
        ..Default::default()
    };
    fs.put_object(request(input)).await.map(drop)
}

/// A request as s3s would hand it over, minus HTTP details s3s-fs does not look at.
fn request<T>(input: T) -> S3Request<T> {
    S3Request {
        input,
        method: Default::default(),
        uri: Default::default(),
        headers: Default::default(),
        extensions: Default::default(),
        credentials: None,
        region: None,
        service: None,
        trailing_headers: None,
    }
}
