use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::chain::{generations, read_generation};
use crate::store::StoreConfig;

fn options() -> BackupOptions {
    BackupOptions {
        interval: Duration::from_secs(3600),
        block_size: 4096,
        volume: VolumeId::parse("kvstore-0").unwrap(),
    }
}

fn write(dir: &std::path::Path, path: &str, bytes: &[u8]) {
    let full = dir.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, bytes).unwrap();
}

type Calls = Arc<Mutex<Vec<Vec<BackupFile>>>>;

/// A callback that records what it was given and writes one generation per call.
fn recording() -> (Calls, Callback) {
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    let callback: Callback = Box::new(move |files, writer| {
        seen.lock().unwrap().push(files.to_vec());
        writer.write(&format!("call {}", seen.lock().unwrap().len()));
    });
    (calls, callback)
}

async fn view(location: &Store, generation: u64) -> Vec<(String, Vec<u8>)> {
    let g = read_generation(location, generation).await.unwrap();
    let mut out = Vec::new();
    for f in g.manifest.files {
        let key = object_store::path::Path::from(f.object_key.unwrap().as_str());
        out.push((f.path.to_string(), location.get(&key).await.unwrap().to_vec()));
    }
    out
}

fn local(dir: &std::path::Path) -> Store {
    let url = format!("file://{}", dir.display()).parse().unwrap();
    Store::open(&url, &StoreConfig::default()).unwrap()
}

#[tokio::test]
async fn each_generation_holds_the_folder_as_of_its_round_and_numbering_continues() {
    let source = tempfile::tempdir().unwrap();
    let loc_dir = tempfile::tempdir().unwrap();
    let location = local(loc_dir.path());
    write(source.path(), "a.log", b"first");
    write(source.path(), "seqIndex/b.log", &[7u8; 10_000]);
    write(source.path(), "seqIndex/b.log.seqnos", b"10 20\n");
    let (calls, callback) = recording();
    let handle = start(source.path().to_path_buf(), location.clone(), options(), callback)
        .await
        .unwrap();
    assert_eq!(handle.status().last_generation, Some(1));
    // Hard links on a local location: the backup shares the source's inode.
    let linked = std::fs::metadata(loc_dir.path().join("files/a.log")).unwrap();
    assert_eq!(
        linked.ino(),
        std::fs::metadata(source.path().join("a.log")).unwrap().ino()
    );

    write(source.path(), "c.log", b"third");
    std::fs::remove_file(source.path().join("a.log")).unwrap();
    let status = handle.stop().await;
    assert_eq!(
        (status.generations_written, status.files_linked, status.files_uploaded),
        (2, 3, 0)
    );
    assert_eq!(status.state, BackupState::Stopped);

    let first_call = calls.lock().unwrap()[0].clone();
    assert_eq!(first_call.len(), 2);
    assert_eq!(
        first_call[1],
        BackupFile {
            name: "seqIndex/b.log".into(),
            len: 10_000,
            low_seqno: Some(10),
            high_seqno: Some(20)
        }
    );
    assert_eq!(
        calls.lock().unwrap()[1]
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        ["c.log"]
    );
    assert_eq!(
        view(&location, 1).await,
        [
            ("a.log".into(), b"first".to_vec()),
            ("seqIndex/b.log".into(), vec![7u8; 10_000])
        ]
    );
    assert_eq!(
        view(&location, 2).await,
        [
            ("c.log".into(), b"third".to_vec()),
            ("seqIndex/b.log".into(), vec![7u8; 10_000])
        ]
    );
    assert_eq!(read_generation(&location, 2).await.unwrap().metadata, "call 2");

    // A restart continues after generation 2, places nothing twice, and a file of an old name
    // with new content gets an object of its own: generation 1 still reads "first".
    write(source.path(), "a.log", b"reborn");
    let (calls, callback) = recording();
    let handle = start(source.path().to_path_buf(), location.clone(), options(), callback)
        .await
        .unwrap();
    let status = handle.stop().await;
    assert_eq!(status.last_generation, Some(3));
    assert_eq!(status.files_linked, 1, "only the new a.log is placed");
    assert_eq!(
        calls.lock().unwrap()[0]
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        ["a.log"]
    );
    assert_eq!(view(&location, 1).await[0].1, b"first");
    assert_eq!(view(&location, 3).await[0], ("a.log".into(), b"reborn".to_vec()));
    assert_eq!(generations(&location).await.unwrap(), [1, 2, 3]);
}

#[tokio::test]
async fn a_remote_location_gets_uploads_and_a_quiet_round_writes_nothing() {
    let source = tempfile::tempdir().unwrap();
    let location = Store::open(&"test://backup-remote".parse().unwrap(), &StoreConfig::default()).unwrap();
    write(source.path(), "x", &[1u8; 5000]);
    write(source.path(), "x.seqnos", b"garbage");
    let (calls, callback) = recording();
    let handle = start(source.path().to_path_buf(), location.clone(), options(), callback)
        .await
        .unwrap();
    let status = handle.stop().await;
    // The final round found nothing new: no callback, no generation.
    assert_eq!(calls.lock().unwrap().len(), 1);
    assert_eq!((status.generations_written, status.files_uploaded), (1, 1));
    let g = read_generation(&location, 1).await.unwrap();
    assert_eq!(g.manifest.files[0].low_seqno, None, "a bad sidecar records no range");
    assert_eq!(view(&location, 1).await, [("x".into(), vec![1u8; 5000])]);
}

#[tokio::test]
async fn a_callback_that_does_not_write_records_no_generation() {
    let source = tempfile::tempdir().unwrap();
    let location = Store::open(&"test://backup-silent".parse().unwrap(), &StoreConfig::default()).unwrap();
    write(source.path(), "x", b"1");
    let handle = start(
        source.path().to_path_buf(),
        location.clone(),
        options(),
        Box::new(|_, _| {}),
    )
    .await
    .unwrap();
    assert_eq!(handle.stop().await.last_generation, None);
    assert!(generations(&location).await.unwrap().is_empty());
    assert!(matches!(
        read_generation(&location, 1).await,
        Err(crate::chain::ChainError::UnknownGeneration { generation: 1, .. })
    ));
    let odd = BackupOptions {
        block_size: 5000,
        ..options()
    };
    let refused = start(source.path().to_path_buf(), location.clone(), odd, Box::new(|_, _| {})).await;
    assert!(matches!(refused, Err(BackupError::BlockSize(5000))));
    let missing = std::path::PathBuf::from("/nonexistent/lazysnap-src");
    assert!(matches!(
        start(missing, location, options(), Box::new(|_, _| {})).await,
        Err(BackupError::NotAFolder(_))
    ));
}
