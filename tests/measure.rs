//! Figures for the README and issue notes, not a pass/fail test (timings vary by machine):
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo test --release --test measure -- --ignored --nocapture
//! ```
//! For each store: publish time, mount time, cold read MB/s through a fresh mount, warm read MB/s
//! through a second fresh mount (served by the node's block cache, not the kernel page cache), and
//! the raw store read rate for the same object as a baseline measured in the same run.

mod support;

use std::io::Read;
use std::time::Instant;

use support::data;
use support::node::Node;
use support::stores::TestStore;

const SIZE: usize = 512 << 20;
const VOLUME: &str = "bench/vol";

fn mbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

fn read_all(path: &std::path::Path) -> (usize, f64) {
    let started = Instant::now();
    let mut file = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    (total, started.elapsed().as_secs_f64())
}

#[test]
#[ignore = "measurement: run with --ignored --nocapture"]
fn publish_mount_and_read_rates() {
    require_root!();
    let bytes = data::bytes(1, SIZE);
    for store in TestStore::all() {
        let node = Node::new(store.env());
        let src = node.path("src");
        data::write(&src, "big.data", &bytes);
        let started = Instant::now();
        node.publish(&store, &src, VOLUME, &[]);
        let publish = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let mount = node.mount(&["--store", &store.url(), "--volume", VOLUME]);
        let mount_secs = started.elapsed().as_secs_f64();
        let (n, cold) = read_all(&mount.path.join(VOLUME).join("big.data"));
        assert_eq!(n, SIZE);
        mount.unmount();
        let mount = node.mount(&["--store", &store.url(), "--volume", VOLUME]);
        let (_, warm) = read_all(&mount.path.join(VOLUME).join("big.data"));
        mount.unmount();
        let (_, local) = read_all(&src.join("big.data"));
        println!(
            "{:>4}: {} MiB  publish {:.1} MB/s  mount {:.0} ms  cold read {:.0} MB/s  warm read {:.0} MB/s  local file {:.0} MB/s",
            store.name(),
            SIZE >> 20,
            mbps(SIZE, publish),
            mount_secs * 1e3,
            mbps(SIZE, cold),
            mbps(SIZE, warm),
            mbps(SIZE, local)
        );
    }
}
