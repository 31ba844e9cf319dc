//! The daemon's configuration: a TOML file, LAZYSNAP_* environment variables over it and flags
//! over both, shown with their origins by --print-config and used by the running daemon; a bad
//! file names its line; the log level changes while the daemon runs.

mod support;

use std::process::Command;

use support::data;
use support::node::{bin, Node};
use support::stores::TestStore;

fn mountd(node: &Node) -> Command {
    let mut command = Command::new(bin("lazysnap-mountd"));
    command.arg("--home").arg(node.home()).env_remove("LAZYSNAP_LOG");
    for (key, _) in std::env::vars() {
        if key.starts_with("LAZYSNAP_") {
            command.env_remove(key);
        }
    }
    command
}

#[test]
fn flags_beat_the_environment_which_beats_the_config_file() {
    require_root!();
    let node = Node::new(Vec::new());
    std::fs::create_dir_all(node.home()).unwrap();
    std::fs::write(
        node.home().join("config.toml"),
        "# node settings\ncache-memory = \"64M\"\nfetch-concurrency = 8\nmax-mounts = 50\nno-passthrough = true\n",
    )
    .unwrap();
    let out = mountd(&node)
        .env("LAZYSNAP_FETCH_CONCURRENCY", "12")
        .args(["--max-mounts", "70", "--print-config"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = String::from_utf8(out.stdout).unwrap();
    let file = node.home().join("config.toml");
    for line in [
        format!("cache-memory = \"64M\"  # {} line 2", file.display()),
        "fetch-concurrency = 12  # environment LAZYSNAP_FETCH_CONCURRENCY".to_string(),
        "max-mounts = 70  # command line".to_string(),
        format!("no-passthrough = true  # {} line 5", file.display()),
        "cache-disk = \"10G\"  # default".to_string(),
    ] {
        assert!(shown.lines().any(|l| l == line), "missing {line:?} in:\n{shown}");
    }

    // The running daemon uses the same: started by the CLI with the environment and a flag.
    node.command()
        .env("LAZYSNAP_FETCH_CONCURRENCY", "12")
        .args(["daemon", "start", "--", "--max-mounts", "70"])
        .status()
        .unwrap();
    let status = node.json(&["daemon", "status"]);
    assert_eq!(status["limits"]["maxMounts"], 70, "{status}");
    assert_eq!(status["limits"]["maxGets"], 12, "{status}");
    node.ok(&["daemon", "stop"]);
}

#[test]
fn a_bad_config_file_is_refused_naming_its_line() {
    require_root!();
    let node = Node::new(Vec::new());
    std::fs::create_dir_all(node.home()).unwrap();
    let file = node.path("bad.toml");
    for (text, expected) in [
        (
            "cache-memory = \"64M\"\ncache-memroy = \"1G\"\n",
            "line 2: unknown key \"cache-memroy\"",
        ),
        ("\n\nfetch-concurrency = \"many\"\n", "line 3: fetch-concurrency"),
        ("cache-disk = \n", "line 1"),
        ("no-passthrough = \"yes\"\n", "line 1: no-passthrough is true or false"),
    ] {
        std::fs::write(&file, text).unwrap();
        let out = mountd(&node)
            .arg("--config")
            .arg(&file)
            .arg("--print-config")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text:?} was accepted");
        assert!(
            stderr.contains(&format!("{} {expected}", file.display())),
            "{text:?}: {stderr}"
        );
    }
    // A daemon started with it does not start, and says why.
    std::fs::write(node.home().join("config.toml"), "bogus = 1\n").unwrap();
    let error = node.fails(&["daemon", "start"]);
    assert!(
        error.contains("config.toml line 1") && error.contains("bogus"),
        "{error}"
    );
    assert!(!node.home().join("mountd.sock").exists());
}

#[test]
fn the_log_level_changes_while_the_daemon_runs() {
    require_root!();
    let store = TestStore::file();
    let node = Node::new(store.env());
    let src = node.path("src");
    data::write(&src, "log.0001", &data::bytes(1, 1000));
    let volume = "kv/b/kvstore-1";
    node.publish(&store, &src, volume, &[]);
    node.ok(&["daemon", "start"]);
    let set = node.json(&["daemon", "log-level", "warn"]);
    assert_eq!(
        (set["level"].as_str(), set["previous"].as_str()),
        (Some("warn"), Some("info"))
    );
    assert_eq!(node.json(&["daemon", "status"])["logLevel"], "warn");
    let url = store.url();
    let quiet = node.mount(&["--store", &url, "--volume", volume]);
    let mounted_lines = || node.daemon_log().lines().filter(|l| l.contains(" mounted")).count();
    assert_eq!(mounted_lines(), 0, "an info line at warn: {}", node.daemon_log());
    node.json(&["daemon", "log-level", "info"]);
    let loud = node.mount(&["--store", &url, "--volume", volume]);
    assert_eq!(mounted_lines(), 1, "{}", node.daemon_log());
    let error = node.fails(&["daemon", "log-level", "lou=d=x"]);
    assert!(error.contains("lou=d=x"), "{error}");
    assert_eq!(node.json(&["daemon", "status"])["logLevel"], "info");
    loud.unmount();
    quiet.unmount();
}
