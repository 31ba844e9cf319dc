//! The S3 server tests run against lives in its own crate (`s3dev/`) so `lazysnap bench` can start
//! it too.
pub use lazysnap_s3dev::{S3Server, S3Stats};
