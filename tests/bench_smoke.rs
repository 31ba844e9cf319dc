//! `lazysnap bench` end to end on a tiny profile: it runs on every built-in store, cleans up after
//! itself, and its size-independent figures hold (timings are not asserted: they vary by machine).

mod support;

use std::process::Command;

use support::node::bin;

#[test]
fn bench_runs_on_every_store_and_its_counts_hold() {
    require_root!();
    let work = tempfile::tempdir().unwrap();
    let (stdout, report) = bench(
        work.path(),
        &[
            "--size",
            "4M",
            "--random-reads",
            "20",
            "--mount-files",
            "50",
            "--readers",
            "4",
            "--stores",
            "file,s3,s3-emulated",
        ],
    );
    assert!(stdout.contains("cold sequential / best raw GET"), "{stdout}");
    assert!(stdout.contains("foreign after restart / published after"), "{stdout}");

    let stores = report["stores"].as_array().unwrap();
    let names: Vec<&str> = stores.iter().map(|s| s["store"].as_str().unwrap()).collect();
    assert_eq!(names, ["file", "s3", "s3-emulated"]);
    for store in stores {
        let name = store["store"].as_str().unwrap();
        let sequential = store["amplificationSequential"].as_f64().unwrap();
        assert!(
            (1.0..=1.05).contains(&sequential),
            "{name}: sequential amplification {sequential}"
        );
        let random = store["amplificationRandom"].as_f64().unwrap();
        assert!(random > 0.0 && random <= 64.0, "{name}: random amplification {random}");
        assert_eq!(store["refetchedBytesWarm"], 0, "{name}: warm reads fetched again");
        assert!(store["peakRssBytes"].as_u64().unwrap() > 0);
        // Hydration's floor: the raw GETs written into a file (removed again, see below).
        assert!(
            store["raw"]["parallelGetIntoFileMbps"].as_f64().unwrap() > 0.0,
            "{name}"
        );
        assert_eq!(store["randomCold"]["samples"], 20);
        // The same file as a foreign object: fetched once cold, not at all after a restart.
        let foreign = &store["foreign"];
        let amplification = foreign["amplification"].as_f64().unwrap();
        assert!(
            (1.0..=1.05).contains(&amplification),
            "{name}: foreign amplification {amplification}"
        );
        assert_eq!(
            foreign["restartFetchedBytes"], 0,
            "{name}: fetched again after a restart"
        );
    }
    for store in stores {
        // Engine-shaped reads went through FUSE and fetched something for it.
        let selective = &store["selective"];
        for key in [
            "columnChunksRead",
            "columnChunksFetched",
            "pointLookupsRead",
            "pointLookupsFetched",
            // SQLite found every key it looked up, with its value (the bench checks each).
            "sqliteLookupsRead",
            "sqliteLookupsFetched",
        ] {
            assert!(selective[key].as_u64().unwrap() > 0, "{key}: {selective}");
        }
        // RocksDB's own lookups (`ldb query`, every answer checked) when ldb is installed.
        if Command::new("ldb").arg("--version").output().is_ok() {
            for key in ["rocksdbLookupsRead", "rocksdbLookupsFetched"] {
                assert!(selective[key].as_u64().unwrap() > 0, "{key}: {selective}");
            }
        }
    }
    let scale = report["mountScale"].as_array().unwrap();
    assert_eq!(scale.len(), 2, "50 files at two sizes");
    assert!(!report["checks"].as_array().unwrap().is_empty());

    nothing_left(work.path());
}

#[test]
fn bench_peers_copy_and_read_through_each_installed_peer_on_loopback_and_with_latency() {
    require_root!();
    let work = tempfile::tempdir().unwrap();
    let peers = ["--stores", "", "--peers", "--size", "8M", "--random-reads", "10"];
    let (_, report) = bench(
        work.path(),
        &[&peers[..], &["--peer-runs", "1", "--peer-rtt", "10"]].concat(),
    );
    let passes = report["peers"].as_array().unwrap();
    let networks: Vec<&str> = passes.iter().map(|p| p["network"].as_str().unwrap()).collect();
    assert_eq!(networks, ["loopback", "+10ms"]);
    let installed = |program: &str| Command::new("which").arg(program).output().unwrap().status.success();
    for pass in passes {
        let rows = pass["rows"].as_array().unwrap();
        let median = |work: &str, tool: &str| {
            rows.iter()
                .find(|r| r["work"].as_str().unwrap().starts_with(work) && r["tool"] == tool)
                .and_then(|r| r["median"].as_f64())
        };
        for work in ["copy one object", "copy 100 files", "cold sequential", "cold random"] {
            assert!(median(work, "lazysnap").is_some_and(|v| v > 0.0), "{work}: {pass}");
        }
        let skipped = pass["skipped"].to_string();
        for (program, tool) in [
            ("rclone", "rclone copy"),
            ("rclone", "rclone mount (vfs off)"),
            ("s3fs", "s3fs"),
        ] {
            let measured = median("cold", tool).is_some() || median("copy", tool).is_some();
            assert_eq!(measured, installed(program), "{tool}: {pass}");
            assert_eq!(skipped.contains(program), !installed(program), "{skipped}");
        }
        // Through the delaying proxy a cold 4 KiB read waits at least one round trip, and a
        // RocksDB database opens through the mount with and without a first-touch profile.
        if pass["network"] == "+10ms" {
            for tool in [
                "lazysnap, no profile",
                "lazysnap, first-touch profile",
                "download first (restore)",
            ] {
                let measured = median("mount to first ldb get", tool);
                assert_eq!(measured.is_some_and(|ms| ms > 10.0), installed("ldb"), "{tool}: {pass}");
            }
            let p50 = median("cold random", "lazysnap").unwrap();
            assert!(p50 >= 10_000.0, "cold random p50 {p50} us at +10 ms");
        }
    }
    let checks = report["checks"].to_string();
    assert!(
        checks.contains("copy one object / rclone copy") == installed("rclone"),
        "{checks}"
    );

    nothing_left(work.path());
}

/// Runs `lazysnap bench ARGS` with its work folder in `work`: what it printed and its JSON report.
fn bench(work: &std::path::Path, args: &[&str]) -> (String, serde_json::Value) {
    let json = work.join("bench.json");
    let out = Command::new(bin("lazysnap"))
        .arg("bench")
        .args(args)
        .arg("--work-dir")
        .arg(work)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let report = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    (String::from_utf8_lossy(&out.stdout).into_owned(), report)
}

/// Everything a run made is gone: no mounts, no daemons, only the JSON left in the work folder.
fn nothing_left(work: &std::path::Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(&work.display().to_string()), "{mounts}");
    let left: Vec<_> = std::fs::read_dir(work)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from("bench.json")]);
}

/// The soak's short mode (the long one is `make reliability`): a minute of 64 random and 4
/// sequential readers over 16 mounts while mounts hydrate, a restore and GC run and 1% of GETs
/// fail: no failed or wrong read, no FUSE request stuck, the daemon within its memory cap.
#[test]
fn bench_soak_for_a_minute_with_faults_fails_no_read_and_stays_within_its_memory() {
    require_root!();
    let work = tempfile::tempdir().unwrap();
    let (stdout, report) = bench(
        work.path(),
        &["--profile", "soak", "--soak-seconds", "60", "--size", "64M"],
    );
    let soak = &report["soak"];
    assert!(soak["randomReads"].as_u64().unwrap() > 1000, "{soak}");
    assert!(soak["sequentialReads"].as_u64().unwrap() > 10, "{soak}");
    assert!(soak["faults"].as_u64().unwrap() > 0, "faults were injected: {soak}");
    for check in report["checks"].as_array().unwrap() {
        assert_eq!(check["met"], true, "{check}\n{stdout}");
    }
    nothing_left(work.path());
}
