//! Prometheus metrics: a scrape of `--metrics-addr` shows the node's figures, and the bytes
//! fetched from the store, the HTTP requests and the FUSE read latencies grow with a read.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;

use support::data;
use support::node::Node;
use support::stores::TestStore;

const VOLUME: &str = "kv/b/kvstore-5";

/// GET `path` over HTTP/1.0; answers the status line and the body.
fn get(addr: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics address");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

/// The value of the sample `name{labels}` (or `name` with no labels), if shown.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn a_scrape_shows_bytes_fetched_growing_with_a_read() {
    require_root!();
    let store = TestStore::s3();
    let node = Node::new(store.env());
    let src = node.path("src");
    let bytes = data::bytes(5, 2 << 20);
    data::write(&src, "log.0001", &bytes);
    node.publish(&store, &src, VOLUME, &[]);
    node.ok(&["daemon", "start", "--", "--metrics-addr", "127.0.0.1:0"]);
    let addr = node.json(&["daemon", "status"])["metricsAddr"]
        .as_str()
        .expect("the daemon says where it serves metrics")
        .to_string();
    let url = store.url();
    let mount = node.mount(&["--store", &url, "--volume", VOLUME]);
    let series = |name: &str| format!("{name}{{mount=\"{}\"}}", mount.path.display());

    let (status, before) = get(&addr, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert_eq!(sample(&before, "lazysnap_mounts"), Some(1.0), "{before}");
    let fetched_before = sample(&before, &series("lazysnap_store_fetched_bytes_total")).expect("fetched bytes");
    let requests_before = sample(&before, "lazysnap_store_http_requests_total{outcome=\"succeeded\"}").unwrap();

    assert!(std::fs::read(mount.path.join(VOLUME).join("log.0001")).unwrap() == bytes);
    let (_, after) = get(&addr, "/metrics");
    let fetched = sample(&after, &series("lazysnap_store_fetched_bytes_total")).unwrap();
    assert!(
        fetched >= fetched_before + bytes.len() as f64,
        "{fetched_before} -> {fetched}"
    );
    let requests = sample(&after, "lazysnap_store_http_requests_total{outcome=\"succeeded\"}").unwrap();
    assert!(requests > requests_before, "{requests_before} -> {requests}");
    assert!(sample(&after, &series("lazysnap_read_bytes_total")).unwrap() >= bytes.len() as f64);
    let reads = sample(&after, "lazysnap_fuse_request_duration_seconds_count{op=\"read\"}").unwrap();
    assert!(reads >= 1.0, "{after}");
    assert!(sample(&after, "lazysnap_cache_misses_total").unwrap() >= 1.0);
    assert!(after.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");

    let (status, _) = get(&addr, "/other");
    assert!(status.contains("404"), "{status}");
    mount.unmount();
    node.ok(&["daemon", "stop"]);

    // An address in use is refused at start, named.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let error = node.fails(&["daemon", "start", "--", "--metrics-addr", &taken_addr]);
    assert!(error.contains(&taken_addr) && error.contains("metrics"), "{error}");
    assert!(
        !node.home().join("mountd.sock").exists(),
        "a failed start left its socket"
    );
}
