//! A store that stops answering: reads that need it fail with EIO after the client's retries and
//! the fetch deadline, cached data keeps being served, and the mount stays up.

mod support;

use std::time::{Duration, Instant};

use support::data;
use support::node::Node;
use support::stores::TestStore;

const VOLUME: &str = "kv/b/kvstore-9";

#[test]
fn reads_fail_with_eio_when_the_store_is_gone_and_the_mount_stays_up() {
    require_root!();
    let store = TestStore::s3();
    let node = Node::new(store.env());
    let src = node.path("src");
    data::write(&src, "cached.log", &data::bytes(1, 200_000));
    data::write(&src, "uncached.log", &data::bytes(2, 200_000));
    node.publish(&store, &src, VOLUME, &[]);
    let mount = node.mount(&["--store", &store.url(), "--volume", VOLUME]);
    let root = mount.path.join(VOLUME);
    assert_eq!(std::fs::read(root.join("cached.log")).unwrap(), data::bytes(1, 200_000));

    drop(store); // the S3 server shuts down: connections are refused from now on
    let started = Instant::now();
    let err = std::fs::read(root.join("uncached.log")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the read waited {:?}",
        started.elapsed()
    );

    // Cached bytes are still served (a fresh open: the kernel's page cache may be dropped).
    let file = std::fs::File::open(root.join("cached.log")).unwrap();
    let mut buf = vec![0u8; 1000];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, 150_000).unwrap();
    assert_eq!(buf, data::bytes(1, 200_000)[150_000..151_000]);
    drop(file);
    let mounts = node.json(&["mounts"]);
    assert!(
        mounts[0]["stats"]["store"]["failedRequests"].as_u64().unwrap() >= 1,
        "{mounts}"
    );
    mount.unmount();
}
