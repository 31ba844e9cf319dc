use super::*;
use crate::store::StoreConfig;

fn store(name: &str) -> Store {
    Store::open(&format!("test://{name}").parse().unwrap(), &StoreConfig::default()).unwrap()
}

fn options() -> PublishOptions {
    PublishOptions {
        block_size: 4096,
        part_size: 16 * 1024,
        ..Default::default()
    }
}

fn write(dir: &std::path::Path, path: &str, bytes: &[u8]) {
    let full = dir.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, bytes).unwrap();
}

#[tokio::test]
async fn publishes_a_tree_and_skips_unchanged_files_next_time() {
    let (store, index) = (store("publish-basic"), Index::open_in_memory().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..50_000u32).map(|i| (i % 241) as u8).collect();
    write(dir.path(), "a.log", b"hello");
    write(dir.path(), "sub/dir/big.data", &big);
    write(dir.path(), "empty", b"");
    let volume = VolumeId::parse("kv/b/kvstore-0").unwrap();

    let first = publish(&store, &index, dir.path(), &volume, &options(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(first.log_manifest_name, layout::manifest_name(1));
    assert_eq!((first.files, first.bytes_uploaded, first.bytes_skipped), (3, 50_005, 0));
    let key = layout::file_key(&volume, &RelPath::parse("sub/dir/big.data").unwrap());
    assert_eq!(
        store.get(&key).await.unwrap(),
        big,
        "multipart upload stored every byte"
    );

    write(dir.path(), "b.log", b"new");
    let second = publish(&store, &index, dir.path(), &volume, &options(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(second.log_manifest_name, layout::manifest_name(2));
    assert_eq!(
        (second.files, second.bytes_uploaded, second.bytes_skipped),
        (4, 3, 50_005)
    );

    let row = index
        .manifest(store.url(), &volume, &second.log_manifest_name)
        .unwrap()
        .unwrap();
    assert_eq!(row.file_count, 4);
    // The manifest in the store parses back to what the index holds.
    let bytes = store
        .get(&layout::manifest_key(&volume, &second.log_manifest_name))
        .await
        .unwrap();
    assert_eq!(
        native::parse(&bytes, &volume, &second.log_manifest_name)
            .unwrap()
            .files
            .len(),
        4
    );
}

#[tokio::test]
async fn refuses_changed_content_under_an_existing_name_and_writes_nothing() {
    let (store, index) = (store("publish-immutable"), Index::open_in_memory().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let volume = VolumeId::parse("v").unwrap();
    write(dir.path(), "a.log", b"first");
    publish(&store, &index, dir.path(), &volume, &options(), &NoProgress)
        .await
        .unwrap();

    write(dir.path(), "a.log", b"other");
    write(dir.path(), "new.log", b"would be uploaded");
    let err = publish(&store, &index, dir.path(), &volume, &options(), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Immutable { .. }), "{err}");
    assert!(err.to_string().contains("a.log"), "{err}");
    let new_key = layout::file_key(&volume, &RelPath::parse("new.log").unwrap());
    assert!(
        store.head(&new_key).await.unwrap().is_none(),
        "nothing uploaded after a refusal"
    );
    assert_eq!(
        chain::latest_manifest_name(&store, &volume).await.unwrap(),
        Some(layout::manifest_name(1))
    );
}

#[tokio::test]
async fn an_orphan_object_from_an_interrupted_publish_is_compared_by_content() {
    let (store, index) = (store("publish-orphan"), Index::open_in_memory().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let volume = VolumeId::parse("v").unwrap();
    write(dir.path(), "a.log", b"same bytes");
    let key = layout::file_key(&volume, &RelPath::parse("a.log").unwrap());
    store.put(&key, Bytes::from_static(b"same bytes").into()).await.unwrap();
    let report = publish(&store, &index, dir.path(), &volume, &options(), &NoProgress)
        .await
        .unwrap();
    assert_eq!((report.bytes_uploaded, report.bytes_skipped), (0, 10));

    store
        .put(
            &layout::file_key(&volume, &RelPath::parse("b.log").unwrap()),
            Bytes::from_static(b"xxxx").into(),
        )
        .await
        .unwrap();
    write(dir.path(), "b.log", b"yyyy");
    let err = publish(&store, &index, dir.path(), &volume, &options(), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Immutable { .. }), "{err}");
}

#[tokio::test]
async fn an_older_term_is_fenced_and_a_missing_directory_is_named() {
    let (store, index) = (store("publish-fenced"), Index::open_in_memory().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let volume = VolumeId::parse("v").unwrap();
    write(dir.path(), "a", b"1");
    let opts = PublishOptions {
        term: Some(5),
        ..options()
    };
    assert_eq!(
        publish(&store, &index, dir.path(), &volume, &opts, &NoProgress)
            .await
            .unwrap()
            .log_manifest_name,
        layout::manifest_name(1)
    );
    let old = PublishOptions {
        term: Some(4),
        ..options()
    };
    let err = publish(&store, &index, dir.path(), &volume, &old, &NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PublishError::Fenced {
                requested: 4,
                current: 5
            }
        ),
        "{err}"
    );

    let missing = dir.path().join("nope");
    let err = publish(&store, &index, &missing, &volume, &options(), &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[tokio::test]
async fn a_lost_answer_to_our_own_manifest_write_is_success_and_a_rival_is_a_conflict() {
    let store = store("publish-conflict");
    let manifest = Manifest {
        volume: VolumeId::parse("v").unwrap(),
        name: layout::manifest_name(1),
        term: 0,
        seq: 1,
        created_at_ms: 1,
        block_size: 4096,
        files: vec![],
    };
    write_manifest(&store, &manifest).await.unwrap();
    let err = write_manifest(&store, &manifest).await.unwrap_err();
    assert!(matches!(err, PublishError::Conflict { .. }), "{err}");
}

#[test]
fn streaming_checksums_match_whole_file_checksums_for_any_chunking() {
    let data: Vec<u8> = (0..20_000u32).map(|i| (i * 31 % 256) as u8).collect();
    let (expected, _) = BlockChecksums::compute(&data[..], 4096).unwrap();
    for chunk in [1, 7, 4096, 5000, 20_000] {
        let mut s = StreamingChecksums::new(4096);
        for piece in data.chunks(chunk) {
            s.update(piece);
        }
        assert_eq!(s.finish(), expected, "chunk {chunk}");
    }
}
