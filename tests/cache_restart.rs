//! The block cache is the node's, not a mount's: it survives unmounts and daemon restarts, so data
//! read once is never fetched from the store again, counted at the S3 server.

mod support;

use support::data;
use support::node::Node;
use support::stores::TestStore;

const VOLUME: &str = "kv/b/kvstore-3";

#[test]
fn blocks_read_once_are_not_fetched_again_after_a_daemon_restart() {
    let store = TestStore::s3();
    let server = store.server().unwrap();
    let node = Node::new(store.env());
    let src = node.path("src");
    let bytes = data::bytes(3, 3 << 20);
    data::write(&src, "log.0001", &bytes);
    node.json(&[
        "publish",
        src.to_str().unwrap(),
        "--store",
        &store.url(),
        "--volume",
        VOLUME,
    ]);
    node.ok(&[
        "snapshot",
        "create",
        "--store",
        &store.url(),
        "--volume",
        VOLUME,
        "--uuid",
        "s",
        "--validity",
        "600",
    ]);
    let args = ["--store", &store.url(), "--volume", VOLUME, "--snapshot", "s"];

    let mount = node.mount(&args);
    server.reset_stats();
    assert!(std::fs::read(mount.path.join(VOLUME).join("log.0001")).unwrap() == bytes);
    assert!(server.get_requests_for("files/log.0001") >= 1);
    mount.unmount();
    node.ok(&["daemon", "stop"]);

    let stat = node.json(&["stat", &format!("{}#{VOLUME}:log.0001", store.url()), "--snapshot", "s"]);
    assert_eq!(stat["blocksCached"], stat["blocksTotal"], "{stat}");
    assert_eq!(stat["bytesFetched"], 3 << 20, "{stat}");

    server.reset_stats();
    let mount = node.mount(&args);
    assert!(std::fs::read(mount.path.join(VOLUME).join("log.0001")).unwrap() == bytes);
    assert_eq!(
        server.get_requests_for("files/log.0001"),
        0,
        "a cached block was fetched again"
    );
    // The CLI reads through the same cache while the daemon owns it.
    let out = node
        .command()
        .args(["cat", &format!("{}#{VOLUME}:log.0001", store.url())])
        .output()
        .unwrap();
    assert!(out.status.success() && out.stdout == bytes);
    assert_eq!(server.get_requests_for("files/log.0001"), 0);
    mount.unmount();
}
