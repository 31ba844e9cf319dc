//! The peers themselves: how each is pointed at the bench's S3 server, mounted, read and removed.
//! Each runs with its defaults except what reaching a local path-style server needs, as an
//! operator would run it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lazysnap::names::VolumeId;
use lazysnap::store::layout;
use tempfile::TempDir;

use super::super::reads;
use super::super::stats::{self, Latencies};
use super::super::targets::Target;
use super::Work;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    S3fs,
    RcloneVfsOff,
    RcloneVfsFull,
    MountS3,
}

impl Peer {
    pub fn name(&self) -> &'static str {
        match self {
            Peer::S3fs => "s3fs",
            Peer::RcloneVfsOff => "rclone mount (vfs off)",
            Peer::RcloneVfsFull => "rclone mount (vfs full)",
            Peer::MountS3 => "mount-s3",
        }
    }
}

/// The peers on PATH, and a line for each one that is not.
pub fn installed() -> (Vec<Peer>, Vec<String>) {
    let (mut peers, mut skipped) = (Vec::new(), Vec::new());
    let mut take = |program: &str, found: &[Peer]| match on_path(program) {
        true => peers.extend_from_slice(found),
        false => skipped.push(format!("{program}: not on PATH")),
    };
    take("s3fs", &[Peer::S3fs]);
    take("rclone", &[Peer::RcloneVfsOff, Peer::RcloneVfsFull]);
    take("mount-s3", &[Peer::MountS3]);
    (peers, skipped)
}

/// True when `program` is a file in a folder of PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// How a peer reaches the bench's S3 server, and where lazysnap's published files are in it.
pub struct S3Access {
    endpoint: String,
    bucket: String,
    /// The key prefix of the bench's store URL inside the bucket.
    prefix: String,
    access_key: String,
    secret_key: String,
    region: String,
}

impl S3Access {
    pub fn of(target: &Target) -> anyhow::Result<S3Access> {
        let endpoint = target.endpoint().context("peers need the local S3 server")?;
        let env = |key: &str| target.launch.env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        Ok(S3Access {
            endpoint,
            bucket: target.url["s3://".len()..]
                .split('/')
                .next()
                .unwrap_or_default()
                .to_owned(),
            prefix: "bench".into(),
            access_key: env("AWS_ACCESS_KEY_ID").context("no access key")?,
            secret_key: env("AWS_SECRET_ACCESS_KEY").context("no secret key")?,
            region: env("AWS_REGION").context("no region")?,
        })
    }

    /// `bucket/key` of a published file.
    pub fn file_key(&self, volume: &str, file: &str) -> String {
        let volume = VolumeId::parse(volume).expect("the bench's volume names are valid");
        let path = lazysnap::names::RelPath::parse(file).expect("the bench's file names are valid");
        format!("{}/{}/{}", self.bucket, self.prefix, layout::file_key(&volume, &path))
    }

    /// `bucket/prefix` of a published volume's files.
    pub fn files_dir(&self, volume: &str) -> String {
        let volume = VolumeId::parse(volume).expect("the bench's volume names are valid");
        format!("{}/{}/{}", self.bucket, self.prefix, layout::files_dir(&volume))
    }

    /// rclone's remote `bench:` from the environment, no config file needed.
    fn rclone(&self) -> Command {
        let mut command = Command::new("rclone");
        for (key, value) in [
            ("TYPE", "s3"),
            ("PROVIDER", "Other"),
            ("ENDPOINT", &self.endpoint),
            ("ACCESS_KEY_ID", &self.access_key),
            ("SECRET_ACCESS_KEY", &self.secret_key),
            ("REGION", &self.region),
            ("FORCE_PATH_STYLE", "true"),
        ] {
            command.env(format!("RCLONE_CONFIG_BENCH_{key}"), value);
        }
        command.env("RCLONE_CONFIG", "/dev/null");
        without_aws_env(&mut command);
        command
    }
}

/// `rclone copy bench:<path> <fresh folder>`: its time, after checking every byte arrived.
pub fn rclone_copy(s3: &S3Access, path: &str, work: &Path, expected: u64) -> anyhow::Result<Duration> {
    let dest = tempfile::Builder::new().prefix("rclone-copy-").tempdir_in(work)?;
    let started = Instant::now();
    let out = s3
        .rclone()
        .args(["copy", &format!("bench:{path}")])
        .arg(dest.path())
        .output()
        .context("cannot run rclone")?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!("rclone copy {path}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let got: u64 = walkdir::WalkDir::new(dest.path())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum();
    anyhow::ensure!(got == expected, "rclone copied {got} of {expected} bytes of {path}");
    Ok(took)
}

/// A cold sequential read of the big file, then cold random reads, each through a fresh mount.
pub fn mount_reads(peer: &Peer, s3: &S3Access, w: &Work) -> anyhow::Result<(f64, Latencies)> {
    let dir = s3.files_dir(w.big.0);
    let mount = PeerMount::start(*peer, s3, &dir, w.work)?;
    let (n, took) = reads::sequential(&mount.point.path().join(w.big_file))?;
    anyhow::ensure!(
        n == w.big_size,
        "read {n} of {} bytes through {}",
        w.big_size,
        peer.name()
    );
    drop(mount);
    let mount = PeerMount::start(*peer, s3, &dir, w.work)?;
    let random = reads::random_4k(&mount.point.path().join(w.big_file), w.offsets)?;
    Ok((stats::mbps(n, took), random))
}

/// One peer mount with its own empty cache folder; unmounted and stopped when dropped.
struct PeerMount {
    point: TempDir,
    child: Child,
    _cache: TempDir,
    _passwd: Option<tempfile::NamedTempFile>,
}

impl PeerMount {
    fn start(peer: Peer, s3: &S3Access, dir: &str, work: &Path) -> anyhow::Result<PeerMount> {
        let point = tempfile::Builder::new().prefix("peer-mnt-").tempdir_in(work)?;
        let cache = tempfile::Builder::new().prefix("peer-cache-").tempdir_in(work)?;
        let mut passwd = None;
        let mut command = match peer {
            Peer::S3fs => {
                use std::io::Write;
                let mut file = tempfile::NamedTempFile::new_in(work)?;
                writeln!(file, "{}:{}", s3.access_key, s3.secret_key)?;
                let (bucket, prefix) = dir.split_once('/').expect("a folder in a bucket");
                let mut command = Command::new("s3fs");
                command.arg(format!("{bucket}:/{prefix}")).arg(point.path()).arg("-f");
                for option in [
                    "ro".to_owned(),
                    format!("url={}", s3.endpoint),
                    "use_path_request_style".into(),
                    format!("endpoint={}", s3.region),
                    format!("passwd_file={}", file.path().display()),
                ] {
                    command.args(["-o", &option]);
                }
                passwd = Some(file);
                command
            }
            Peer::RcloneVfsOff | Peer::RcloneVfsFull => {
                let mode = if peer == Peer::RcloneVfsOff { "off" } else { "full" };
                let mut command = s3.rclone();
                command
                    .args(["mount", &format!("bench:{dir}")])
                    .arg(point.path())
                    .args(["--read-only", "--vfs-cache-mode", mode, "--cache-dir"])
                    .arg(cache.path());
                command
            }
            Peer::MountS3 => {
                let (bucket, prefix) = dir.split_once('/').expect("a folder in a bucket");
                let mut command = Command::new("mount-s3");
                without_aws_env(&mut command)
                    .arg(bucket)
                    .arg(point.path())
                    .args(["--prefix", &format!("{prefix}/"), "--endpoint-url", &s3.endpoint])
                    .args(["--region", &s3.region, "--force-path-style", "--read-only", "-f"])
                    .env("AWS_ACCESS_KEY_ID", &s3.access_key)
                    .env("AWS_SECRET_ACCESS_KEY", &s3.secret_key);
                command
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", peer.name()))?;
        let mut mount = PeerMount {
            point,
            child,
            _cache: cache,
            _passwd: passwd,
        };
        mount.wait_mounted(peer)?;
        Ok(mount)
    }

    /// Waits until the kernel shows the mount, or fails with what the peer said.
    fn wait_mounted(&mut self, peer: Peer) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if is_mounted(self.point.path()) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited {status} before mounting: {}", peer.name(), self.said());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let said = self.said();
        bail!(
            "{} did not mount {} within 20 s: {said}",
            peer.name(),
            self.point.path().display()
        )
    }

    /// What the peer wrote to stderr (once it has exited).
    fn said(&mut self) -> String {
        let mut said = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            use std::io::Read;
            let _ = err.read_to_string(&mut said);
        }
        said.trim().to_owned()
    }
}

impl Drop for PeerMount {
    fn drop(&mut self) {
        if is_mounted(self.point.path()) {
            if let Err(e) = lazysnap::fuse::detach_path(self.point.path()) {
                eprintln!("lazysnap bench: cannot detach {}: {e}", self.point.path().display());
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server is plain http on 127.0.0.1: the machine's AWS settings (a CA bundle, a profile)
/// would only get in the way, and rclone refuses to start with a CA bundle set.
fn without_aws_env(command: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_") {
            command.env_remove(key);
        }
    }
    command
}

fn is_mounted(point: &Path) -> bool {
    let point: PathBuf = point.to_path_buf();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|line| line.split_whitespace().nth(1).map(Path::new) == Some(point.as_path()))
}
