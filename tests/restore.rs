//! Restore jobs through the real daemon on file:// and S3: a byte-identical copy of a snapshot and
//! of a backup generation, the same request answering the same job, a job cut by a daemon crash
//! resuming by itself without fetching completed blocks again (counted at the S3 server and by
//! the job), and cancel leaving no partial file under a final name.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::data;
use support::node::Node;
use support::stores::TestStore;

const VOLUME: &str = "kv/restore/kvstore-0";

/// Starts a restore of `from` into `dest` with `extra` flags; answers the job id.
fn start_restore(node: &Node, from: &str, dest: &Path, extra: &[&str]) -> String {
    let mut args = vec!["restore", "start", "--from", from, "--dest", dest.to_str().unwrap()];
    args.extend_from_slice(extra);
    let job = node.json(&args);
    job["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job id: {job}"))
        .to_string()
}

#[test]
fn a_restore_copies_a_snapshot_byte_identical_and_the_same_request_is_the_same_job() {
    require_root!();
    for store in TestStore::all() {
        let what = store.name();
        let node = Node::new(store.env());
        let src = node.path("src");
        data::write(&src, "a.log", &data::bytes(1, 5 << 20));
        data::write(&src, "dir/b.log", &data::bytes(2, 123_457));
        data::write(&src, "empty", b"");
        node.publish(&store, &src, VOLUME, &[]);
        let url = store.url();
        node.snapshot(&store, VOLUME, "s1");
        // The volume moves on after the snapshot: the restore copies the snapshot's files.
        data::write(&src, "later.log", b"not in the snapshot");
        node.publish(&store, &src, VOLUME, &[]);

        let dest = node.path("dest");
        let from = format!("{url}#{VOLUME}");
        let args = [
            "restore",
            "start",
            "--from",
            &from,
            "--snapshot",
            "s1",
            "--dest",
            dest.to_str().unwrap(),
        ];
        let done = node.json(&[&args[..], &["--wait"]].concat());
        assert_eq!(done["state"], "COMPLETED", "{what}: {done}");
        assert_eq!(
            (done["filesDone"].as_u64(), done["filesTotal"].as_u64()),
            (Some(3), Some(3)),
            "{done}"
        );
        assert_eq!(done["bytesDone"], done["bytesTotal"], "{done}");
        let mut expected = data::tree(&src);
        expected.remove("later.log");
        assert!(
            data::tree(&dest) == expected,
            "{what}: the copy differs from the snapshot (or holds temporary files)"
        );

        let again = node.json(&args);
        assert_eq!(again["id"], done["id"], "{what}: {again}");
        assert_eq!(again["state"], "COMPLETED", "{again}");
        let list = node.json(&["restore", "list"]);
        assert_eq!(list["jobs"].as_array().unwrap().len(), 1, "{list}");

        // A different file under a final name is never overwritten.
        let other = node.path("other");
        data::write(&other, "a.log", b"someone else's file");
        let err = node.fails(&[
            "restore",
            "start",
            "--from",
            &from,
            "--dest",
            other.to_str().unwrap(),
            "--wait",
        ]);
        assert!(err.contains("already holds a different file"), "{what}: {err}");
        assert_eq!(std::fs::read(other.join("a.log")).unwrap(), b"someone else's file");
        let nowhere = node.path("nowhere");
        let err = node.fails(&[
            "restore",
            "start",
            "--from",
            &format!("{url}#no/such/volume"),
            "--dest",
            nowhere.to_str().unwrap(),
        ]);
        assert!(err.contains("not found"), "{what}: {err}");
        assert!(
            !nowhere.exists(),
            "{what}: a refused restore left its destination folder"
        );
    }
}

#[test]
fn a_restore_of_a_backup_generation_is_the_folder_as_it_was() {
    require_root!();
    let store = TestStore::s3();
    let node = Node::new(store.env());
    let src = node.path("src");
    data::write_complete(&src, "a.log", &data::bytes(3, 2 << 20));
    let location = store.url();
    let start = [
        "backup",
        "start",
        "--source",
        src.to_str().unwrap(),
        "--location",
        &location,
    ];
    node.ok(&start);
    let gen1 = data::tree(&src);
    data::write_complete(&src, "b.log", &data::bytes(4, 1 << 20));
    node.ok(&["backup", "stop", "--location", &location]);
    let dest = node.path("dest");
    let done = node.json(&[
        "restore",
        "start",
        "--from",
        &location,
        "--generation",
        "1",
        "--dest",
        dest.to_str().unwrap(),
        "--wait",
    ]);
    assert_eq!(done["manifest"], "metadata.1.dat", "{done}");
    assert!(
        data::tree(&dest) == gen1,
        "generation 1 restored with a file it did not have, or different bytes"
    );
}

#[test]
fn a_restore_cut_by_a_daemon_crash_resumes_by_itself_without_refetching() {
    require_root!();
    for store in TestStore::all() {
        let what = store.name();
        let node = Node::new(store.env());
        let src = node.path("src");
        let sizes = [("a.log", 20usize << 20), ("b.log", 20 << 20)];
        for (i, (name, size)) in sizes.iter().enumerate() {
            data::write(&src, name, &data::bytes(10 + i as u64, *size));
        }
        let total: u64 = sizes.iter().map(|(_, s)| *s as u64).sum();
        node.publish(&store, &src, VOLUME, &[]);
        let dest = node.path("dest");
        let from = format!("{}#{VOLUME}", store.url());
        let id = start_restore(&node, &from, &dest, &["--bandwidth", "16M"]);
        let before = node.wait_for_restore(&id, "a third done", |s| s["bytesDone"].as_u64().unwrap() >= 14 << 20);
        node.kill_daemon();
        let done_before = before["bytesDone"].as_u64().unwrap();
        assert!(done_before < total, "{what}: {before}");
        // Whatever the crash cut, no file is under its final name unless complete.
        for (name, bytes) in data::tree(&dest) {
            if !name.contains(".lazysnap-restore-") {
                assert!(
                    bytes == data::bytes(10 + (name == "b.log") as u64, bytes.len()) && bytes.len() == 20 << 20,
                    "{what}: torn {name}"
                );
            }
        }
        if let Some(server) = store.server() {
            server.reset_stats();
        }

        node.ok(&["daemon", "start"]);
        let after = node.wait_for_restore(&id, "completion after the restart", |s| s["state"] == "COMPLETED");
        let fetched_again = after["bytesFetchedThisRun"].as_u64().unwrap();
        support::assert_fetched_only_what_was_left(&store, fetched_again, total, done_before);
        assert!(
            data::tree(&dest) == data::tree(&src),
            "{what}: the restored folder differs"
        );
    }
}

/// A job started while a new daemon still recovers what its predecessor left runs once: the
/// recovery that follows finds it recorded as running and must not start it a second time
/// (two copies writing one destination).
#[test]
fn a_restore_started_while_a_new_daemon_recovers_runs_once() {
    require_root!();
    let store = TestStore::file();
    let node = Node::new(store.env());
    let src = node.path("src");
    data::write(&src, "a.log", &data::bytes(7, 32 << 20));
    node.publish(&store, &src, VOLUME, &[]);
    let started = Instant::now();
    node.start_daemon_armed(lazysnap::failpoint::MOUNTS_RECOVERY_STARTED);
    // 32 MiB at 8 MiB/s (granted a chunk of 8 MiB at a time): running when the recovery's
    // 2 s delay ends.
    let dest = node.path("dest");
    let from = format!("{}#{VOLUME}", store.url());
    let id = start_restore(&node, &from, &dest, &["--bandwidth", "8M"]);
    node.wait_for_restore(&id, "completion", |s| s["state"] == "COMPLETED");
    assert!(
        started.elapsed() > Duration::from_millis(2500),
        "the job ended before the recovery"
    );
    let log = node.daemon_log();
    assert!(log.contains("failpoint reached"), "{log}");
    assert!(
        !log.contains("restore job resumed"),
        "the running job was started again: {log}"
    );
    assert!(data::tree(&dest) == data::tree(&src), "the restored folder differs");
}

#[test]
fn cancel_leaves_no_partial_file_and_resume_finishes_the_job() {
    require_root!();
    let store = TestStore::file();
    let node = Node::new(store.env());
    let src = node.path("src");
    data::write(&src, "big.log", &data::bytes(7, 24 << 20));
    node.publish(&store, &src, VOLUME, &[]);
    let dest = node.path("dest");
    let from = format!("{}#{VOLUME}", store.url());
    let id = start_restore(&node, &from, &dest, &["--bandwidth", "4M"]);
    node.wait_for_restore(&id, "some bytes done", |s| s["bytesDone"].as_u64().unwrap() > 0);
    let cancelled = node.json(&["restore", "cancel", &id]);
    assert_eq!(cancelled["state"], "CANCELLED", "{cancelled}");
    assert!(
        data::tree(&dest).is_empty(),
        "cancel left {:?}",
        data::tree(&dest).keys().collect::<Vec<_>>()
    );
    let err = node.fails(&["restore", "status", "r-nosuchjob"]);
    assert!(err.contains("no restore job r-nosuchjob"), "{err}");

    let resumed = node.json(&["restore", "resume", &id]);
    assert_eq!(resumed["state"], "RUNNING", "{resumed}");
    let done = node.wait_for_restore(&id, "completion", |s| s["state"] == "COMPLETED");
    assert_eq!(done["bytesDone"], 24 << 20, "{done}");
    assert!(data::tree(&dest) == data::tree(&src));
    let err = node.fails(&["restore", "cancel", &id]);
    assert!(err.contains("already completed"), "{err}");
}

#[test]
fn a_waiting_status_request_is_answered_when_the_job_ends() {
    require_root!();
    let store = TestStore::file();
    let node = Node::new(store.env());
    let src = node.path("src");
    data::write(&src, "slow.log", &data::bytes(8, 12 << 20));
    node.publish(&store, &src, VOLUME, &[]);
    let from = format!("{}#{VOLUME}", store.url());
    // About 1.5 s at 8 MB/s.
    let id = start_restore(&node, &from, &node.path("dest"), &["--bandwidth", "8M"]);
    let line = |wait_ms: u64| format!(r#"{{"op":"restore_status","id":"{id}","waitMs":{wait_ms}}}"#);
    // While it runs, a short wait answers the running job once the wait is over.
    let asked = Instant::now();
    let running = node.request(&line(200));
    assert_eq!(running["result"]["state"], "RUNNING", "{running}");
    assert!(
        asked.elapsed() >= Duration::from_millis(150),
        "answered before its wait"
    );
    // A long wait is answered as the job ends, not when the wait is over.
    let asked = Instant::now();
    let done = node.request(&line(60_000));
    let waited = asked.elapsed();
    assert_eq!(done["result"]["state"], "COMPLETED", "{done}");
    assert!(
        waited < Duration::from_secs(30),
        "answered after {waited:?}, not at the job's end"
    );
    let finished = done["result"]["finishedAtMs"].as_u64().expect("an end time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        now.saturating_sub(finished) < 2_000,
        "answered {} ms after the end",
        now - finished
    );
    // `--wait` follows the same way and exits with the job.
    let started = Instant::now();
    node.json(&[
        "restore",
        "start",
        "--from",
        &from,
        "--dest",
        node.path("dest2").to_str().unwrap(),
        "--wait",
    ]);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(data::tree(&node.path("dest2")) == data::tree(&src));
}

#[test]
fn an_in_place_restore_is_a_mount_at_once_and_completes_when_every_block_is_local() {
    require_root!();
    for store in TestStore::all() {
        let what = store.name();
        let node = Node::new(store.env());
        let src = node.path("src");
        data::write(&src, "a.log", &data::bytes(21, 12 << 20));
        data::write(&src, "dir/b.log", &data::bytes(22, 300_000));
        node.publish(&store, &src, VOLUME, &[]);
        let dest = node.path("engine");
        let from = format!("{}#{VOLUME}", store.url());
        let id = start_restore(&node, &from, &dest, &["--in-place", "--bandwidth", "8M"]);
        assert!(
            support::node::is_mounted(&dest),
            "{what}: the destination is a mount at once"
        );
        // The engine reads before the hydration is done: lazily, the right bytes.
        assert!(std::fs::read(dest.join(VOLUME).join("dir/b.log")).unwrap() == data::bytes(22, 300_000));
        let done = node.wait_for_restore(&id, "in-place completion", |s| s["state"] == "COMPLETED");
        assert_eq!(done["bytesDone"], (12 << 20) + 300_000, "{what}: {done}");
        if let Some(server) = store.server() {
            server.reset_stats();
        }
        assert!(std::fs::read(dest.join(VOLUME).join("a.log")).unwrap() == data::bytes(21, 12 << 20));
        if let Some(server) = store.server() {
            assert_eq!(
                server.stats().get_requests,
                0,
                "{what}: reads after completion went to the store"
            );
        }
        let again = node.json(&[
            "restore",
            "start",
            "--from",
            &from,
            "--dest",
            dest.to_str().unwrap(),
            "--in-place",
            "--bandwidth",
            "8M",
        ]);
        assert_eq!(
            (again["id"].as_str(), again["state"].as_str()),
            (Some(id.as_str()), Some("COMPLETED")),
            "{again}"
        );
        node.ok(&["umount", dest.to_str().unwrap()]);
    }
}
