#![allow(dead_code)]
pub mod data;
pub mod many;
pub mod node;
pub mod s3;
pub mod scylla;
pub mod stores;

/// The first line of every test that mounts: FUSE mounts need root (`make test` runs as root), so
/// as another user the test says why and passes without running, instead of failing on mount(2).
#[macro_export]
macro_rules! require_root {
    () => {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!(
                "skipped {}: it mounts FUSE filesystems, which needs root",
                module_path!()
            );
            return;
        }
    };
}

/// A row of `make reliability`'s table (test, load, faults injected, inputs, failures, wrong
/// bytes), printed by a crash test once it passed: the kills it made, on every test store.
pub fn crash_row(what: &str, failpoints: &[&str]) {
    let stores = stores::TestStore::all().len();
    eprintln!(
        "| crash: {what} | {stores} stores | SIGKILL at {} | {} kills | 0 | 0 |",
        failpoints.join(", "),
        stores * failpoints.len()
    );
}

/// After a job resumed: it fetched `fetched` bytes, no more than the `total - done` it had left,
/// and the S3 server (when the store has one) counted exactly those.
pub fn assert_fetched_only_what_was_left(store: &stores::TestStore, fetched: u64, total: u64, done: u64) {
    let what = store.name();
    assert!(
        fetched <= total - done,
        "{what}: {fetched} bytes fetched after the restart, but {done} of {total} were done before"
    );
    if let Some(server) = store.server() {
        assert_eq!(server.stats().get_bytes, fetched, "{what}: counted at the server");
    }
}
