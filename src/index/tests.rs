use super::*;
use crate::manifest::ManifestFile;
use crate::store::layout::manifest_name;

fn manifest(seq: u64, files: &[(&str, u64)]) -> Manifest {
    Manifest {
        volume: VolumeId::parse("kv/b/kvstore-0").unwrap(),
        name: manifest_name(seq),
        term: 0,
        seq,
        created_at_ms: 1000 + seq,
        block_size: 4096,
        files: files
            .iter()
            .map(|(path, size)| ManifestFile {
                path: RelPath::parse(path).unwrap(),
                size: *size,
                checksums: BlockChecksums::new(vec![7; crate::checksum::block_count(*size, 4096) as usize]),
                low_seqno: Some(seq),
                high_seqno: None,
                object_key: None,
                etag: None,
            })
            .collect(),
    }
}

fn store() -> StoreUrl {
    "test://index-test".parse().unwrap()
}

#[test]
fn manifests_round_trip_and_insert_is_idempotent() {
    let index = Index::open_in_memory().unwrap();
    let m = manifest(1, &[("b/x", 5000), ("a", 0)]);
    let row = index.insert_manifest(&store(), &m).unwrap();
    assert_eq!((row.file_count, row.total_bytes, row.block_size), (2, 5000, 4096));
    assert_eq!(index.insert_manifest(&store(), &m).unwrap(), row);

    let files = index.manifest_files(row.id).unwrap();
    let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["a", "b/x"]);
    assert_eq!(files[1].low_seqno, Some(1));
    assert_eq!(index.file_checksums(files[1].id).unwrap().len(), 2);
    let found = index.file_by_path(row.id, &RelPath::parse("b/x").unwrap()).unwrap();
    assert_eq!(found.unwrap().size, 5000);
    assert!(index
        .file_by_path(row.id, &RelPath::parse("nope").unwrap())
        .unwrap()
        .is_none());
}

#[test]
fn lookups_are_scoped_by_store_and_volume() {
    let index = Index::open_in_memory().unwrap();
    let m = manifest(1, &[("a", 1)]);
    index.insert_manifest(&store(), &m).unwrap();
    let other: StoreUrl = "test://other".parse().unwrap();
    assert!(index.manifest(&other, &m.volume, &m.name).unwrap().is_none());
    let v2 = VolumeId::parse("kv/b/kvstore-1").unwrap();
    assert!(index.manifest(&store(), &v2, &m.name).unwrap().is_none());
    assert!(index.manifest(&store(), &m.volume, &m.name).unwrap().is_some());
}

#[test]
fn snapshots_and_mounts() {
    let index = Index::open_in_memory().unwrap();
    let snap = SnapshotRow {
        volume: VolumeId::parse("v").unwrap(),
        uuid: "s1".into(),
        manifest_name: manifest_name(1),
        created_at_ms: 1,
        valid_till_ms: 2,
        state: "COMMITTED".into(),
    };
    index.put_snapshot(&store(), &snap).unwrap();
    assert_eq!(
        index.snapshot(&store(), &snap.volume, "s1").unwrap(),
        Some(snap.clone())
    );
    assert_eq!(index.snapshot(&store(), &snap.volume, "s2").unwrap(), None);

    index.record_mount("/mnt/x", &vec![1u32, 2]).unwrap();
    let kept = index.mounts::<Vec<u32>>().unwrap();
    assert_eq!(
        (kept[0].key.as_str(), kept[0].record.clone()),
        ("/mnt/x", Ok(vec![1, 2]))
    );
    let other = index.mounts::<String>().unwrap();
    assert!(
        other[0].record.is_err(),
        "a record of another shape is reported, not guessed at"
    );
    index.remove_mount("/mnt/x").unwrap();
    assert!(index.mounts::<Vec<u32>>().unwrap().is_empty());

    let job = index.insert_restore_job("r-1", &"request a", &7u64).unwrap();
    assert_eq!(job, "r-1");
    assert_eq!(
        index.insert_restore_job("r-2", &"request a", &8u64).unwrap(),
        "r-1",
        "the same request, the same job"
    );
    index.update_restore_job("r-1", &9u64).unwrap();
    let found = index.restore_job_by_request::<_, u64>(&"request a").unwrap().unwrap();
    assert_eq!((found.key.as_str(), found.record), ("r-1", Ok(9)));
}

#[test]
fn reopening_a_file_keeps_rows_and_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    {
        let index = Index::open(&path).unwrap();
        index.insert_manifest(&store(), &manifest(1, &[("a", 1)])).unwrap();
    }
    let m = manifest(1, &[("a", 1)]);
    assert!(Index::open(&path)
        .unwrap()
        .manifest(&store(), &m.volume, &m.name)
        .unwrap()
        .is_some());

    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    assert!(matches!(Index::open(&path), Err(IndexError::TooNew { found: 99, .. })));
}

#[test]
fn learned_checksums_merge_across_chunks_keep_the_first_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let url = store();
    let pin = Integrity::Pinned(Pinned::new("e1"));
    let object = crate::cache::ObjectId::new(&url, "k", 1 << 30, &pin);
    let other = crate::cache::ObjectId::new(&url, "k2", 1 << 30, &pin);
    {
        let index = Index::open(&path).unwrap();
        index.remember_checksums(&object, 4096, &[(3, 30), (1500, 1)]).unwrap();
        // A block learned again keeps its first checksum; the same object read in other blocks
        // and another object are apart.
        index
            .remember_checksums(&object, 4096, &[(3, 99), (0, 7), (2047, 8)])
            .unwrap();
        index.remember_checksums(&object, 8192, &[(5, 5)]).unwrap();
        index.remember_checksums(&other, 4096, &[(3, 33)]).unwrap();
    }
    let index = Index::open(&path).unwrap();
    assert_eq!(
        index.learned_checksums(&object, 4096).unwrap(),
        vec![(0, 7), (3, 30), (1500, 1), (2047, 8)]
    );
    assert_eq!(index.learned_checksums(&object, 8192).unwrap(), vec![(5, 5)]);
    assert_eq!(index.learned_checksums(&other, 4096).unwrap(), vec![(3, 33)]);
    assert!(index.learned_checksums(&other, 8192).unwrap().is_empty());
}
