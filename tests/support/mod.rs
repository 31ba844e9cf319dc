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
