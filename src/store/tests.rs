use super::*;

fn memory(name: &str) -> Store {
    Store::open(&format!("test://{name}").parse().unwrap(), &StoreConfig::default()).unwrap()
}

#[test]
fn urls_parse_to_a_canonical_form() {
    let cases = [
        ("file:///var/tmp/store", "file:///var/tmp/store"),
        ("/var/tmp/store/", "file:///var/tmp/store"),
        ("s3://bucket", "s3://bucket"),
        ("s3://bucket/a/b/", "s3://bucket/a/b"),
        (
            "s3://b/p?region=us-east-1&endpoint=http://127.0.0.1:9000",
            "s3://b/p?endpoint=http://127.0.0.1:9000&region=us-east-1",
        ),
        ("gs://bucket/x", "gs://bucket/x"),
        ("az://container", "az://container"),
        ("test://t", "test://t"),
    ];
    for (raw, canonical) in cases {
        let url: StoreUrl = raw.parse().unwrap_or_else(|e| panic!("{raw}: {e}"));
        assert_eq!(url.to_string(), canonical);
        assert_eq!(url.to_string().parse::<StoreUrl>().unwrap(), url);
    }
    for bad in [
        "",
        "relative/dir",
        "ftp://x",
        "file://host/dir",
        "file:///",
        "s3://",
        "s3://b?colour=red",
        "file:///a/../b",
    ] {
        assert!(bad.parse::<StoreUrl>().is_err(), "{bad:?} should be rejected");
    }
}

#[test]
fn missing_local_directory_is_a_clear_error() {
    let url: StoreUrl = "file:///nonexistent/lazysnap-store".parse().unwrap();
    let err = Store::open(&url, &StoreConfig::default()).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn reads_writes_and_conditional_creates() {
    let store = memory("store-basic");
    let key = Path::from("volumes/v/files/a");
    store
        .put(&key, Bytes::from_static(b"hello world").into())
        .await
        .unwrap();
    assert_eq!(store.get(&key).await.unwrap(), "hello world");
    assert_eq!(store.get_range(&key, 6..11).await.unwrap(), "world");
    assert!(matches!(
        store.get_range(&key, 6..20).await,
        Err(StoreError::ShortRead { .. } | StoreError::Other { .. })
    ));
    assert_eq!(store.head(&key).await.unwrap().unwrap().size, 11);
    assert!(store.head(&Path::from("nope")).await.unwrap().is_none());
    let missing = store.get(&Path::from("nope")).await.unwrap_err();
    assert!(missing.is_not_found());
    assert!(missing.to_string().contains("test://store-basic"), "{missing}");

    let m = Path::from("volumes/v/manifests/x.json");
    store.put_if_absent(&m, Bytes::from_static(b"1")).await.unwrap();
    let again = store.put_if_absent(&m, Bytes::from_static(b"2")).await.unwrap_err();
    assert!(matches!(again, StoreError::AlreadyExists { .. }), "{again}");
    assert_eq!(store.get(&m).await.unwrap(), "1");

    let (dirs, objects) = store.list_children(&Path::from("volumes/v")).await.unwrap();
    assert_eq!(dirs.len(), 2);
    assert!(objects.is_empty());
    assert_eq!(store.list(&Path::from("volumes")).await.unwrap().len(), 2);
    store.delete(&key).await.unwrap();
    store.delete(&key).await.unwrap();
    assert!(store.head(&key).await.unwrap().is_none());
}

/// `range` of `key` as [`Store::get_range_pieces`] gives it, in 4 KiB pieces.
async fn split(
    store: &Store,
    key: &Path,
    etag: Option<&str>,
    range: std::ops::Range<u64>,
) -> Result<Vec<Bytes>, StoreError> {
    let mut pieces = Vec::new();
    let buffers = BlockBuffers::new(1 << 20);
    let patience = std::time::Duration::from_secs(30);
    store
        .get_range_pieces(key, etag, range, 4096, &buffers, patience, &mut |p| {
            pieces.push(p.join(&buffers))
        })
        .await
        .map(|()| pieces)
}

#[tokio::test]
async fn split_reads_give_the_range_in_pieces_on_streaming_and_file_stores() {
    let dir = tempfile::tempdir().unwrap();
    let file_url: StoreUrl = format!("file://{}", dir.path().display()).parse().unwrap();
    let stores = [
        memory("store-split"),
        Store::open(&file_url, &StoreConfig::default()).unwrap(),
    ];
    let content: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let key = Path::from("volumes/v/files/a");
    for store in stores {
        store.put(&key, Bytes::from(content.clone()).into()).await.unwrap();
        let pieces = split(&store, &key, None, 4096..10_000).await.unwrap();
        let lens: Vec<_> = pieces.iter().map(Bytes::len).collect();
        assert_eq!(lens, [4096, 1808], "{}", store.url());
        assert_eq!(pieces.concat(), &content[4096..], "{}", store.url());
        let one = split(&store, &key, None, 100..200).await.unwrap();
        assert_eq!(one.concat(), &content[100..200]);
        let past_end = split(&store, &key, None, 8192..12_288).await;
        assert!(past_end.is_err(), "{}: a range past the end is an error", store.url());
    }
}

/// A store on the S3 test server, under `prefix`.
fn on_s3_server(server: &lazysnap_s3dev::S3Server, prefix: &str) -> Store {
    let url = format!(
        "s3://{}/{prefix}?endpoint={}&region={}&allow_http=true",
        server.bucket(),
        server.endpoint(),
        server.region()
    );
    let config = StoreConfig {
        settings: vec![
            ("aws_access_key_id".into(), server.access_key().into()),
            ("aws_secret_access_key".into(), server.secret_key().into()),
        ],
        ..StoreConfig::default()
    };
    Store::open(&url.parse().unwrap(), &config).unwrap()
}

#[tokio::test]
async fn a_streamed_piece_keeps_the_chunks_it_came_in_and_checks_and_joins_as_its_bytes() {
    let server = lazysnap_s3dev::S3Server::start();
    let store = on_s3_server(&server, "chunks");
    let content: Vec<u8> = (0..(8u32 << 20) + 5).map(|i| (i * 13 % 241) as u8).collect();
    let key = Path::from("volumes/v/files/big");
    store.put(&key, Bytes::from(content.clone()).into()).await.unwrap();
    let (buffers, patience) = (BlockBuffers::new(1 << 20), std::time::Duration::from_secs(30));
    let mut pieces = Vec::new();
    let range = 3..content.len() as u64;
    store
        .get_range_pieces(&key, None, range.clone(), 1 << 20, &buffers, patience, &mut |p| {
            pieces.push(p)
        })
        .await
        .unwrap();
    assert_eq!(pieces.len(), 9, "eight whole MiB and a tail");
    // hyper reads a body at most ~400 KiB at a time, so a 1 MiB piece is several chunks: kept as
    // they are, not copied together.
    assert!(pieces[0].parts().len() > 1, "{} parts", pieces[0].parts().len());
    let mut at = range.start as usize;
    for piece in pieces {
        let want = &content[at..at + piece.len()];
        assert_eq!(piece.crc32c(), crate::checksum::crc32c(want), "piece at {at}");
        assert_eq!(&piece.join(&buffers)[..], want, "piece at {at}");
        at += want.len();
    }
    assert_eq!(at, content.len());
}

#[tokio::test]
async fn every_http_request_of_an_s3_client_is_counted_by_outcome() {
    let server = lazysnap_s3dev::S3Server::start();
    let store = on_s3_server(&server, "metered");
    // Process-wide counters: other tests add to them meanwhile, never take away.
    let before = http_stats();
    let key = Path::from("a/b");
    store.put(&key, PutPayload::from_static(b"hello world")).await.unwrap();
    assert_eq!(store.get_range(&key, 0..5).await.unwrap(), "hello");
    assert!(store.head(&Path::from("missing")).await.unwrap().is_none());
    let after = http_stats();
    assert!(after.requests >= before.requests + 3, "{before:?} -> {after:?}");
    assert!(after.succeeded >= before.succeeded + 2, "{before:?} -> {after:?}");
    assert!(
        after.client_errors > before.client_errors,
        "the 404 of the head: {after:?}"
    );
}

/// An HTTP server that answers its first request with 503 SlowDown and every later one with the
/// object `hello`; one request per connection. Answers its address and how many it served.
fn slow_down_once() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let answer = match count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 => "HTTP/1.1 503 Slow Down\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                _ => "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"e1\"\r\nLast-Modified: Mon, 30 Nov 2026 00:00:00 GMT\r\nConnection: close\r\n\r\nhello".to_string(),
            };
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (addr, served)
}

#[tokio::test]
async fn a_request_repeated_after_a_slow_down_is_counted_as_a_retry() {
    let (addr, served) = slow_down_once();
    let url = format!("s3://bucket/p?endpoint=http://{addr}&region=us-east-1&allow_http=true");
    let config = StoreConfig {
        settings: vec![
            ("aws_access_key_id".into(), "key".into()),
            ("aws_secret_access_key".into(), "secret".into()),
        ],
        ..StoreConfig::default()
    };
    let store = Store::open(&url.parse().unwrap(), &config).unwrap();
    let before = http_stats();
    assert_eq!(store.get(&Path::from("k")).await.unwrap(), "hello");
    let after = http_stats();
    assert_eq!(
        served.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one 503, then the object"
    );
    assert!(after.throttled > before.throttled, "{before:?} -> {after:?}");
    assert!(after.retries > before.retries, "{before:?} -> {after:?}");
}

#[tokio::test]
async fn primed_reads_serve_the_ranges_they_cover_while_their_guard_is_kept() {
    use std::sync::atomic::Ordering::Relaxed;
    let (store, counters) = testing::counted(&memory("store-primed"));
    let content: Vec<u8> = (0..20_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let key = Path::from("volumes/v/files/primed");
    let etag = store.put(&key, Bytes::from(content.clone()).into()).await.unwrap();
    let read = |range| PrimedRead {
        key: key.clone(),
        range,
        held: None,
    };
    let primed = store.prime(vec![read(4096..16_384)], 4);

    // The primed range and a range inside it: one GET between them, the right bytes each time.
    let whole = split(&store, &key, etag.as_deref(), 4096..16_384).await.unwrap();
    assert_eq!(whole.iter().map(Bytes::len).collect::<Vec<_>>(), [4096; 3]);
    assert_eq!(whole.concat(), &content[4096..16_384]);
    let inside = split(&store, &key, None, 5000..9000).await.unwrap();
    assert_eq!(inside.concat(), &content[5000..9000]);
    assert_eq!(counters.requests(), 1, "a covered range was fetched again");

    // A range past the primed one, or a read of another version, GETs for itself.
    let past = split(&store, &key, None, 12_288..20_000).await.unwrap();
    assert_eq!(past.concat(), &content[12_288..]);
    assert_eq!(counters.requests(), 2);
    let other = split(&store, &key, Some("not-this-version"), 4096..8192).await;
    // (The store refuses it; the counter counts answered GETs only.)
    assert!(
        other.is_err(),
        "a read of another version must not take the primed bytes"
    );

    // Dropping the guard forgets the primed reads.
    drop(primed);
    split(&store, &key, None, 4096..8192).await.unwrap();
    assert_eq!(counters.requests(), 3);

    // Held bytes are served without a GET, and only for the version they are of.
    let held = Bytes::from(content[0..8192].to_vec());
    let primed = store.prime(
        vec![PrimedRead {
            key: key.clone(),
            range: 0..8192,
            held: Some((held, etag.clone())),
        }],
        4,
    );
    let from_held = split(&store, &key, etag.as_deref(), 0..8192).await.unwrap();
    assert_eq!(from_held.concat(), &content[..8192]);
    assert_eq!(counters.requests(), 3, "held bytes were fetched");
    let other = split(&store, &key, Some("not-this-version"), 0..4096).await;
    assert!(other.is_err(), "held bytes of one version were given for another");
    assert_eq!(counters.bytes.load(Relaxed), 12_288 + 7712 + 4096, "bytes fetched");
    drop(primed);
}
