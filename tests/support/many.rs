//! Many small volumes at once, for the tests of a daemon with hundreds of mounts: published in
//! this process through the library into a local directory (hundreds of CLI runs would dominate
//! the test), then copied object by object into the test's store.

use std::path::Path;

use lazysnap::index::Index;
use lazysnap::names::VolumeId;
use lazysnap::publish::{self, NoProgress, PublishOptions};
use lazysnap::store::{Store, StoreConfig};

use super::data;
use super::stores::TestStore;

/// The volume IDs published and the bytes of each one's single file, `log.0000000001`.
pub struct Volumes {
    pub ids: Vec<String>,
    pub seeds: Vec<u64>,
}

pub const FILE: &str = "log.0000000001";
pub const FILE_SIZE: usize = 5000;

impl Volumes {
    pub fn bytes(&self, i: usize) -> Vec<u8> {
        data::bytes(self.seeds[i], FILE_SIZE)
    }
}

/// Publishes `count` volumes `kv/b1/kvstore-<i>` into `store`, using `scratch` for sources.
pub fn publish_volumes(store: &TestStore, count: usize, scratch: &Path) -> Volumes {
    let staging = match store {
        TestStore::File(_) => store.url(),
        TestStore::S3(_) => format!("file://{}", scratch.join("staging").display()),
    };
    std::fs::create_dir_all(scratch.join("staging")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let target = Store::open(&staging.parse().unwrap(), &StoreConfig::default()).unwrap();
    let index = Index::open_in_memory().unwrap();
    let mut volumes = Volumes {
        ids: Vec::new(),
        seeds: Vec::new(),
    };
    for i in 0..count {
        let id = format!("kv/b1/kvstore-{i}");
        let seed = 7000 + i as u64;
        let src = scratch.join("src").join(i.to_string());
        data::write(&src, FILE, &data::bytes(seed, FILE_SIZE));
        let volume = VolumeId::parse(&id).unwrap();
        runtime
            .block_on(publish::publish(
                &target,
                &index,
                &src,
                &volume,
                &PublishOptions::default(),
                &NoProgress,
            ))
            .unwrap();
        volumes.ids.push(id);
        volumes.seeds.push(seed);
    }
    if let TestStore::S3(_) = store {
        let root = scratch.join("staging");
        for entry in walkdir::WalkDir::new(&root).into_iter().filter_map(Result::ok) {
            if entry.file_type().is_file() {
                let key = entry.path().strip_prefix(&root).unwrap().display().to_string();
                store.put(&key, &std::fs::read(entry.path()).unwrap());
            }
        }
    }
    volumes
}

/// Threads of a process, from the kernel's account.
pub fn threads(pid: i64) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("a Threads line")
}
