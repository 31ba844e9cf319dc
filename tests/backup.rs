//! Continuous backup through the real daemon on file:// (hard links) and S3 (uploads): every
//! generation's view holds exactly the folder as of its round, byte-identical, through real
//! mounts and `ls`/`cat`; numbering continues after a restart; point-in-time selection by
//! generation, time and seqno, and what cannot be selected fails clearly with nothing mounted.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use support::data;
use support::node::{is_mounted, Node};
use support::stores::TestStore;

type Files = BTreeMap<String, Vec<u8>>;

/// Writes a file and its seqno sidecar the way an engine would: sidecar first, file renamed in.
fn engine_writes(src: &Path, name: &str, seed: u64, len: usize, seqnos: (u64, u64)) -> (String, Vec<u8>) {
    data::write_complete(
        src,
        &format!("{name}.seqnos"),
        format!("{} {}\n", seqnos.0, seqnos.1).as_bytes(),
    );
    let bytes = data::bytes(seed, len);
    data::write_complete(src, name, &bytes);
    (name.to_string(), bytes)
}

/// `lazysnap backup start` of `src` into `location`, a round a second.
fn start_args<'a>(src: &'a Path, location: &'a str) -> [&'a str; 8] {
    let src = src.to_str().unwrap();
    [
        "backup",
        "start",
        "--source",
        src,
        "--location",
        location,
        "--interval",
        "1s",
    ]
}

/// `lazysnap ls ... --json` and the paths it lists.
fn listed_paths(node: &Node, args: &[&str]) -> (serde_json::Value, Vec<String>) {
    let listed = node.json(args);
    let names = listed["files"]
        .as_array()
        .unwrap_or_else(|| panic!("no files: {listed}"))
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    (listed, names)
}

fn wait_for_generation(node: &Node, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = node.json(&["backup", "list"]);
        if list[0]["lastGeneration"].as_u64() >= Some(n) {
            return;
        }
        assert!(Instant::now() < deadline, "no generation {n}: {list}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_view(node: &Node, location: &str, selector: &[&str], expected: &Files, what: &str) {
    let mountpoint = node.path(&format!("mnt-{}", selector.join("-").replace(':', "")));
    let mut args = vec!["--backup", location, "--mountpoint", mountpoint.to_str().unwrap()];
    args.extend_from_slice(selector);
    let mount = node.mount(&args);
    let shown = data::tree(&mount.path.join("src"));
    assert_eq!(
        shown.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{what}: files of {selector:?}"
    );
    assert!(shown == *expected, "{what}: bytes of {selector:?} differ");
    mount.unmount();
}

#[test]
fn each_generation_shows_the_folder_as_of_its_round_and_numbering_survives_a_restart() {
    require_root!();
    for store in TestStore::all() {
        let what = store.name();
        let node = Node::new(store.env());
        let location = store.url();
        let src = node.path("src");
        let mut live = Files::new();
        live.extend([engine_writes(&src, "a.log", 1, 3 << 20, (1, 100))]);
        live.extend([engine_writes(&src, "seq/b.log", 2, 700_000, (101, 200))]);
        let start = start_args(&src, &location);
        let started = node.json(&start);
        assert_eq!(
            started["lastGeneration"], 1,
            "{what}: the first round runs before start answers: {started}"
        );
        let gen1 = live.clone();

        // Later rounds, on the timer: a file deleted locally, then a new file.
        std::fs::remove_file(src.join("a.log")).unwrap();
        live.remove("a.log");
        wait_for_generation(&node, 2);
        let gen2 = live.clone();
        live.extend([engine_writes(&src, "c.log", 3, 1 << 20, (201, 300))]);
        wait_for_generation(&node, 3);
        let gen3 = live.clone();
        let stopped = node.json(&["backup", "stop", "--location", &location]);
        assert_eq!(
            (stopped["state"].as_str(), stopped["lastGeneration"].as_u64()),
            (Some("STOPPED"), Some(3)),
            "{what}: the final round had nothing new: {stopped}"
        );
        match &store {
            TestStore::File(dir) => {
                // Hard links: the location shares the engine's inodes, and a.log outlived its deletion.
                let inode = |p: &Path| std::fs::metadata(p).unwrap().ino();
                assert_eq!(
                    inode(&dir.path().join("files/seq/b.log")),
                    inode(&src.join("seq/b.log")),
                    "{what}"
                );
                assert_eq!(std::fs::read(dir.path().join("files/a.log")).unwrap(), gen1["a.log"]);
                assert_eq!(stopped["filesLinked"], 3, "{stopped}");
            }
            TestStore::S3(_) => assert_eq!(stopped["filesUploaded"], 3, "{what}: {stopped}"),
        }
        let before_restart = store.objects();

        // A restart continues the numbering and rewrites nothing.
        live.extend([engine_writes(&src, "d.log", 4, 500_000, (301, 400))]);
        let restarted = node.json(&start);
        assert_eq!(restarted["lastGeneration"], 4, "{what}: {restarted}");
        let placed = restarted["filesLinked"].as_u64().unwrap() + restarted["filesUploaded"].as_u64().unwrap();
        assert_eq!(placed, 1, "{what}: only d.log is new: {restarted}");
        node.ok(&["backup", "stop", "--location", &location]);
        let gen4 = live.clone();
        let after_restart = store.objects();
        for (key, token) in &before_restart {
            assert_eq!(after_restart.get(key), Some(token), "{what}: {key} was rewritten");
        }
        assert!(
            after_restart.contains_key("metadata.4.dat"),
            "{what}: {after_restart:?}"
        );

        let info = node.json(&["backup", "info", "--location", &location, "--json"]);
        let gens = info["generations"].as_array().unwrap();
        let figures: Vec<_> = gens
            .iter()
            .map(|g| {
                (
                    g["generation"].as_u64().unwrap(),
                    g["files"].as_u64().unwrap(),
                    g["newFiles"].as_u64().unwrap(),
                    g["lowSeqno"].as_u64(),
                    g["highSeqno"].as_u64(),
                )
            })
            .collect();
        let expected = [
            (1, 2, 2, Some(1), Some(200)),
            (2, 1, 0, Some(101), Some(200)),
            (3, 2, 1, Some(101), Some(300)),
            (4, 3, 1, Some(101), Some(400)),
        ];
        assert_eq!(figures, expected, "{what}: {info}");
        assert_eq!(gens[2]["bytes"], 700_000 + (1 << 20), "{info}");

        // Point-in-time views through real mounts.
        for (selector, expected) in [
            (vec!["--generation", "1"], &gen1),
            (vec!["--generation", "3"], &gen3),
            (vec![], &gen4),
            (vec!["--at", gens[1]["createdAt"].as_str().unwrap()], &gen2),
            (vec!["--seqno", "50"], &gen1),
            (vec!["--seqno", "150"], &gen1),
            (vec!["--seqno", "250"], &gen3),
            (vec!["--seqno", "350"], &gen4),
        ] {
            assert_view(&node, &location, &selector, expected, what);
        }
        // ls and cat read backup locations too.
        let (listed, names) = listed_paths(&node, &["ls", &location, "--generation", "3", "--json"]);
        assert_eq!(names, ["c.log", "seq/b.log"], "{what}: {listed}");
        assert_eq!(listed["files"][1]["low_seqno"], 101, "{listed}");
        let cat = node
            .command()
            .args(["cat", &format!("{location}#src:a.log"), "--generation", "1"])
            .output()
            .unwrap();
        assert!(
            cat.status.success() && cat.stdout == gen1["a.log"],
            "{what}: cat of a.log at generation 1"
        );

        // What cannot be selected fails clearly, and nothing is mounted.
        let bad = node.path("mnt-bad");
        let bad_str = bad.to_str().unwrap();
        for (selector, needle) in [
            (["--generation", "9"], "has no generation 9"),
            (["--at", "2001-01-01T00:00:00Z"], "is before the first generation"),
            (["--seqno", "401"], "seqno 401 is covered by no generation"),
        ] {
            let mut args = vec!["mount", "--backup", &location, "--mountpoint", bad_str];
            args.extend_from_slice(&selector);
            let err = node.fails(&args);
            assert!(err.contains(needle), "{what}: {selector:?}: {err}");
            assert!(!is_mounted(&bad), "{what}: {selector:?} mounted something");
        }
        let out = node.run(&["mount", "--backup", &location, "--at", "yesterday"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("is not an RFC 3339 time"),
            "{err}"
        );
        assert_eq!(node.json(&["mounts"]), serde_json::json!([]), "{what}");
    }
}

#[test]
fn a_backup_cut_by_a_daemon_crash_starts_again_and_a_clean_stop_forgets_it() {
    require_root!();
    let store = TestStore::file();
    let node = Node::new(store.env());
    let location = store.url();
    let src = node.path("src");
    engine_writes(&src, "a.log", 1, 100_000, (1, 10));
    let start = start_args(&src, &location);
    node.ok(&start);
    node.kill_daemon();
    engine_writes(&src, "b.log", 2, 100_000, (11, 20));
    node.ok(&["daemon", "start"]);
    wait_for_generation(&node, 2);
    let (listed, names) = listed_paths(&node, &["ls", &location, "--json"]);
    assert_eq!(names, ["a.log", "b.log"], "{listed}");

    node.ok(&["daemon", "stop"]);
    node.ok(&["daemon", "start"]);
    assert_eq!(
        node.json(&["backup", "list"]),
        serde_json::json!([]),
        "a clean stop ends the backup"
    );
    let err = node.fails(&["backup", "stop", "--location", &location]);
    assert!(err.contains("runs no backup into"), "{err}");
    let err = node.fails(&[
        "backup",
        "start",
        "--source",
        "/nonexistent/src",
        "--location",
        &location,
    ]);
    assert!(err.contains("is not an absolute path to a folder"), "{err}");
}
