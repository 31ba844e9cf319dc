//! Checks the in-process S3 test server against the real object_store S3 client, including that
//! its request and byte counts are exact.

mod support;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{Error, GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use support::s3::S3Server;

fn client(server: &S3Server) -> AmazonS3 {
    // Not from_env(): this machine sets AWS_* variables of its own.
    AmazonS3Builder::new()
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_region(server.region())
        .with_access_key_id(server.access_key())
        .with_secret_access_key(server.secret_key())
        .with_bucket_name(server.bucket())
        .build()
        .expect("S3 client")
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn object_store_round_trip_is_counted_at_the_server() {
    let server = S3Server::start();
    let store = client(&server);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let data = pattern(8192);
        let a = Path::from("dir/a.bin");
        store.put(&a, data.clone().into()).await.unwrap();
        store.put(&Path::from("dir/sub/b.bin"), "b".into()).await.unwrap();
        server.put_object("top.bin", "seeded");

        let meta = store.head(&a).await.unwrap();
        assert_eq!(meta.size, 8192);
        let etag = meta.e_tag.expect("HEAD returns an ETag");
        assert_eq!(server.stats().head_requests, 1);

        server.reset_stats();
        let got = store.get_range(&a, 100..4196).await.unwrap();
        assert_eq!(&got[..], &data[100..4196]);
        let stats = server.stats();
        assert_eq!((stats.get_requests, stats.get_bytes), (1, 4096), "{stats:?}");
        assert_eq!(server.get_requests_for("a.bin"), 1);
        assert_eq!(server.get_requests_for("b.bin"), 0);

        server.reset_stats();
        let c = Path::from("create.bin");
        store.put_opts(&c, "one".into(), PutMode::Create.into()).await.unwrap();
        let second = store.put_opts(&c, "two".into(), PutMode::Create.into()).await;
        assert!(matches!(second, Err(Error::AlreadyExists { .. })), "{second:?}");
        assert_eq!(store.get(&c).await.unwrap().bytes().await.unwrap(), "one");
        assert_eq!(server.stats().put_requests, 2);

        // Multipart: every UploadPart counts as a put (s3s-fs wants >= 5 MiB for all but the last).
        server.reset_stats();
        let m = Path::from("dir/sub/multi.bin");
        let mut upload = store.put_multipart(&m).await.unwrap();
        upload.put_part(vec![1u8; 5 << 20].into()).await.unwrap();
        upload.put_part(PutPayload::from_static(b"tail")).await.unwrap();
        upload.complete().await.unwrap();
        assert_eq!(server.stats().put_requests, 2);
        assert_eq!(store.head(&m).await.unwrap().size, (5 << 20) + 4);

        server.reset_stats();
        let listing = store.list_with_delimiter(Some(&Path::from("dir"))).await.unwrap();
        let objects: Vec<_> = listing.objects.iter().map(|o| o.location.to_string()).collect();
        let prefixes: Vec<_> = listing.common_prefixes.iter().map(|p| p.to_string()).collect();
        assert_eq!(objects, ["dir/a.bin"]);
        assert_eq!(prefixes, ["dir/sub"]);
        assert_eq!(server.stats().list_requests, 1);

        server.corrupt_object("dir/a.bin");
        let bad = store.get(&a).await.unwrap().bytes().await.unwrap();
        assert_eq!(bad.len(), data.len());
        assert!(bad[..4096].iter().zip(&data).all(|(b, d)| *b == !*d));
        assert_eq!(&bad[4096..], &data[4096..]);
        // The ETag changed with the content, so a reader pinned to the old one gets a 412.
        let pinned = GetOptions {
            if_match: Some(etag),
            ..Default::default()
        };
        let stale = store.get_opts(&a, pinned).await;
        assert!(matches!(stale, Err(Error::Precondition { .. })), "{stale:?}");

        store.delete(&a).await.unwrap();
        assert!(matches!(store.head(&a).await, Err(Error::NotFound { .. })));
        assert_eq!(
            store.get(&Path::from("top.bin")).await.unwrap().bytes().await.unwrap(),
            "seeded"
        );
        server.delete_object("top.bin");
        assert!(matches!(
            store.head(&Path::from("top.bin")).await,
            Err(Error::NotFound { .. })
        ));
    });

    let env = server.env();
    let endpoint = server.endpoint();
    assert!(env.contains(&("AWS_ENDPOINT".to_owned(), endpoint)));
    assert!(env.iter().any(|(k, v)| k == "AWS_ALLOW_HTTP" && v == "true"));
}

// Starting and dropping the server inside a tokio runtime must neither panic nor hang.
#[tokio::test]
async fn starts_and_stops_inside_a_runtime() {
    let server = S3Server::start();
    let store = client(&server);
    store.put(&Path::from("x"), "x".into()).await.unwrap();
    assert_eq!(server.stats().put_requests, 1);
    drop(server);
    assert!(
        store.head(&Path::from("x")).await.is_err(),
        "server still answering after drop"
    );
}
