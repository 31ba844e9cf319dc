//! A throwaway lazysnap node for one measurement: its own home (index, cache, socket) and daemon,
//! stopped (which unmounts everything) and deleted when dropped, also when a measurement fails.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lazysnap::catalog::Selector;
use lazysnap::control::answers::DaemonStatus;
use lazysnap::control::{MountRequest, Request};
use lazysnap::paths::Paths;
use tempfile::TempDir;

use super::targets::Target;
use crate::daemon;

pub struct Mounted {
    pub path: PathBuf,
    /// Where the volume's files are: `<path>/<volume id>`.
    pub volume_dir: PathBuf,
}

pub struct BenchNode {
    pub paths: Paths,
    store_url: String,
    _dir: TempDir,
}

impl BenchNode {
    /// A node whose daemon runs with `daemon_args` (e.g. cache sizes). Warm starts are off unless
    /// the arguments set `--first-touch`: a mount replaying what an earlier measurement's mount
    /// of the same volume read first would not be cold.
    pub fn start(target: &Target, work: &Path, daemon_args: &[String]) -> anyhow::Result<BenchNode> {
        let mut daemon_args = daemon_args.to_vec();
        if !daemon_args.iter().any(|a| a.starts_with("--first-touch")) {
            daemon_args.push("--first-touch=0".into());
        }
        let daemon_args = daemon_args.as_slice();
        let dir = tempfile::Builder::new().prefix("node-").tempdir_in(work)?;
        let node = BenchNode {
            paths: Paths::new(dir.path().join("home")),
            store_url: target.url.clone(),
            _dir: dir,
        };
        daemon::ensure_running_with(&node.paths, &target.with_daemon_args(daemon_args))?;
        Ok(node)
    }

    /// Mounts `volume` at `manifest` (or its latest): the mount and the time it took.
    pub fn mount(&self, volume: &str, manifest: Option<&str>) -> anyhow::Result<(Mounted, Duration)> {
        let request = Request::Mount(MountRequest::of_volumes(
            self.store_url.clone(),
            vec![volume.to_owned()],
            manifest.map_or(Selector::Latest, |m| Selector::Manifest(m.to_owned())),
        ));
        let started = Instant::now();
        let answer = daemon::call(&self.paths, &request)?;
        let took = started.elapsed();
        let path = answer["mountPaths"][0].as_str().context("mount answered no path")?;
        let mounted = Mounted {
            path: PathBuf::from(path),
            volume_dir: Path::new(path).join(volume),
        };
        Ok((mounted, took))
    }

    pub fn unmount(&self, mounted: &Mounted) -> anyhow::Result<()> {
        let request = Request::Umount {
            mount_path: mounted.path.display().to_string(),
            lazy: false,
        };
        daemon::call(&self.paths, &request)?;
        Ok(())
    }

    /// Starts hydrating a mount, or asks how it goes (`start` false).
    pub fn hydrate(&self, mounted: &Mounted, start: bool) -> anyhow::Result<serde_json::Value> {
        use lazysnap::control::{HydrateAction, HydrateRequest};
        let request = Request::Hydrate(HydrateRequest {
            mount_path: mounted.path.display().to_string(),
            action: if start {
                HydrateAction::Start
            } else {
                HydrateAction::Status
            },
            bandwidth: None,
            deadline_ms: None,
        });
        daemon::call(&self.paths, &request)
    }

    /// Waits for the hydration of a mount to end; its final status, which must say COMPLETED.
    pub fn hydration_end(&self, mounted: &Mounted) -> anyhow::Result<serde_json::Value> {
        loop {
            let status = self.hydrate(mounted, false)?;
            match status["state"].as_str() {
                Some("RUNNING") => std::thread::sleep(Duration::from_millis(20)),
                Some("COMPLETED") => return Ok(status),
                _ => bail!("hydration of {} did not complete: {status}", mounted.path.display()),
            }
        }
    }

    /// The daemon's status answer.
    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        daemon::call(&self.paths, &Request::Status)
    }

    /// Bytes this node's mounts fetched from the store so far.
    /// Bytes the mount at `path` fetched from the store.
    pub fn bytes_fetched_by(&self, path: &str) -> anyhow::Result<u64> {
        let status: DaemonStatus = daemon::call_as(&self.paths, &Request::Status)?;
        let mount = status
            .mounts
            .iter()
            .find(|m| m.mount_path == path)
            .with_context(|| format!("no mount at {path}"))?;
        Ok(mount.stats.store.bytes_fetched)
    }

    /// Bytes read through the mount at `path` (FUSE reads) and bytes it fetched from the store.
    pub fn read_and_fetched(&self, path: &Path) -> anyhow::Result<(u64, u64)> {
        let status: DaemonStatus = daemon::call_as(&self.paths, &Request::Status)?;
        let mount = status
            .mounts
            .iter()
            .find(|m| Path::new(&m.mount_path) == path)
            .with_context(|| format!("no mount at {}", path.display()))?;
        Ok((mount.stats.bytes_read, mount.stats.store.bytes_fetched))
    }

    pub fn bytes_fetched(&self) -> anyhow::Result<u64> {
        let status = self.status()?;
        let mounts = status["mounts"].as_array().context("status lists no mounts")?;
        Ok(mounts
            .iter()
            .map(|m| m["stats"]["store"]["bytesFetched"].as_u64().unwrap_or(0))
            .sum())
    }

    /// CPU time the daemon has used so far (user + system).
    pub fn daemon_cpu(&self) -> anyhow::Result<Duration> {
        let pid = self.status()?["pid"].as_u64().context("status has no pid")?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces) start at ") ".
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .map(|(_, f)| f)
            .unwrap_or("")
            .split(' ')
            .collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
        // utime and stime are fields 14 and 15 of /proc/<pid>/stat, 12 and 13 after the name.
        let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
            bail!("cannot parse /proc/{pid}/stat");
        };
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Ok(Duration::from_secs_f64((user + system) as f64 / hz))
    }

    /// Peak resident memory of the daemon since it started (VmHWM), in bytes.
    pub fn daemon_peak_rss(&self) -> anyhow::Result<u64> {
        let pid = self.status()?["pid"].as_u64().context("status has no pid")?;
        let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib = text
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
        match kib {
            Some(kib) => Ok(kib * 1024),
            None => bail!("no VmHWM in /proc/{pid}/status"),
        }
    }
}

impl Drop for BenchNode {
    fn drop(&mut self) {
        if let Err(e) = daemon::stop(&self.paths) {
            eprintln!(
                "lazysnap bench: stopping the daemon of {}: {e:#}",
                self.paths.home().display()
            );
        }
        // To look into a figure: LAZYSNAP_BENCH_LOGS=DIR keeps each node's daemon log there
        // (with --daemon-arg=--log=lazysnap=debug for the details), as the node's folder goes.
        if let Some(dir) = std::env::var_os("LAZYSNAP_BENCH_LOGS") {
            let name = self._dir.path().file_name().unwrap_or_default();
            let kept = Path::new(&dir).join(name).with_extension("log");
            let _ = std::fs::create_dir_all(&dir);
            if let Err(e) = std::fs::copy(self.paths.home().join("mountd.log"), &kept) {
                eprintln!("lazysnap bench: keeping the daemon log as {}: {e}", kept.display());
            }
        }
    }
}
