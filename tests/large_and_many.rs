//! Scale: a 256 MiB file and a nested tree of 10,000 small files, byte-identical through the mount
//! on both stores; and a 4 KiB read from the middle of the large file fetches at most two blocks,
//! counted at the S3 server itself.

mod support;

use std::io::Read;
use std::os::unix::fs::FileExt;

use support::data;
use support::node::Node;
use support::stores::TestStore;

const VOLUME: &str = "ks/big-table";
const LARGE: usize = 256 << 20;
/// The default checksum block size, which a random read fetches.
const BLOCK: u64 = 256 << 10;

fn small_name(i: usize) -> String {
    format!("d{:02}/e{:02}/f{i:05}.db", i % 100, (i / 100) % 10)
}

#[test]
fn a_large_file_and_ten_thousand_small_files() {
    require_root!();
    let large = data::bytes(7, LARGE);
    for store in TestStore::all() {
        let started = std::time::Instant::now();
        let node = Node::new(store.env());
        let src = node.path("src");
        data::write(&src, "large.data", &large);
        for i in 0..10_000 {
            data::write(&src, &small_name(i), &data::bytes(i as u64, i % 97));
        }
        let report = node.publish(&store, &src, VOLUME, &[]);
        assert_eq!(report["files"], 10_001, "{}: {report}", store.name());
        assert_eq!(
            report["bytesUploaded"].as_u64().unwrap() as usize,
            LARGE + (0..10_000).map(|i| i % 97).sum::<usize>()
        );

        eprintln!("{}: published in {:?}", store.name(), started.elapsed());
        let mount = node.mount(&["--store", &store.url(), "--volume", VOLUME]);
        eprintln!("{}: mounted at {:?}", store.name(), started.elapsed());
        let root = mount.path.join(VOLUME);

        // A 4 KiB read in the middle fetches at most two blocks' worth, counted by the server.
        let file = std::fs::File::open(root.join("large.data")).unwrap();
        let before = store.stats();
        let offset = (LARGE / 2 + 1000) as u64;
        let mut buf = vec![0u8; 4096];
        file.read_exact_at(&mut buf, offset).unwrap();
        drop(file);
        assert!(buf == large[offset as usize..offset as usize + 4096]);
        if let (Some(before), Some(after)) = (before, store.stats()) {
            let fetched = after.get_bytes - before.get_bytes;
            assert!(
                fetched > 0 && fetched <= 2 * BLOCK,
                "a 4 KiB read fetched {fetched} bytes from the store"
            );
            assert!(after.get_requests - before.get_requests <= 2);
        }

        // Then the whole file, sequentially, and every small file.
        let mut got = Vec::with_capacity(LARGE);
        std::fs::File::open(root.join("large.data"))
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert!(got == large, "{}: the 256 MiB file differs", store.name());
        eprintln!("{}: large file read at {:?}", store.name(), started.elapsed());
        for i in 0..10_000 {
            let got = std::fs::read(root.join(small_name(i))).unwrap();
            assert!(
                got == data::bytes(i as u64, i % 97),
                "{}: {} differs",
                store.name(),
                small_name(i)
            );
        }
        eprintln!("{}: small files read at {:?}", store.name(), started.elapsed());
        let listed = walkdir_count(&root);
        assert_eq!(listed, 10_001);
        mount.unmount();
    }
}

fn walkdir_count(dir: &std::path::Path) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            count += walkdir_count(&entry.path());
        } else {
            count += 1;
        }
    }
    count
}
