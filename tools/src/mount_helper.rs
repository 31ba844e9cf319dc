//! `mount.fuse.lazysnap`: the helper mount(8) runs for `-t fuse.lazysnap` and for fstab lines of
//! that type. It turns `SOURCE TARGET -o OPTIONS` into a `lazysnap mount` command line, so that
//! both take the same options and check them the same way, and mounts through the daemon
//! (starting it if needed). Plain `umount` undoes it; the daemon notices and forgets the mount.
//!
//! SOURCE is `STORE_URL#VOLUME_ID[,VOLUME_ID...]` for volumes, or a backup location's URL.

use std::ffi::OsString;
use std::process::ExitCode;

/// The name mount(8) looks for (`/sbin/mount.<type>`).
pub const NAME: &str = "mount.fuse.lazysnap";

/// mount(8)'s exit statuses: bad usage, and a mount that failed.
const USAGE: u8 = 1;
const MOUNT_FAILURE: u8 = 32;

/// Options mount(8) and fstab carry for every filesystem: lazysnap mounts are always read-only,
/// nosuid, nodev and noatime, and the rest is for mount(8), systemd or fstab readers.
const GENERIC: &[&str] = &[
    "ro",
    "rw",
    "defaults",
    "auto",
    "noauto",
    "nofail",
    "_netdev",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "nosuid",
    "suid",
    "nodev",
    "dev",
    "noexec",
    "exec",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "lazytime",
    "nolazytime",
    "sync",
    "async",
    "dirsync",
    "silent",
    "loud",
];

/// Whether this process was started under the helper's name.
pub fn invoked() -> bool {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n == NAME))
        .unwrap_or(false)
}

/// What mount(8) passes: `SOURCE TARGET [-sfnv] [-N NS] [-o OPTIONS] [-t TYPE]`.
#[derive(clap::Parser, Debug)]
#[command(
    name = NAME,
    about = "mount(8) helper for lazysnap: mount -t fuse.lazysnap 'STORE_URL#VOLUME_ID' DIR -o snapshot=UUID,uid=couchbase",
    after_help = "Options (comma-separated, after -o): snapshot=UUID, manifest=NAME, generation=N, at=TIME, \
seqno=N, uid=USER, gid=GROUP, file_mode=MODE, dir_mode=MODE, allow_other, hydrate, bandwidth=RATE, \
home=DIR; and the generic ones (ro, rw, _netdev, nofail, noauto, x-systemd.*, ...), which are accepted \
and ignored. SOURCE without '#' is a backup location."
)]
struct HelperArgs {
    source: String,
    target: std::path::PathBuf,
    /// Mount options, comma-separated (repeatable).
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Sloppy: ignore options lazysnap does not know instead of refusing them.
    #[arg(short = 's')]
    sloppy: bool,
    /// Fake: check everything, mount nothing.
    #[arg(short = 'f')]
    fake: bool,
    /// Do not write /etc/mtab (there is none to write; accepted for mount(8)).
    #[arg(short = 'n')]
    no_mtab: bool,
    /// Print what is mounted.
    #[arg(short = 'v')]
    verbose: bool,
    /// Mount namespace (not supported; accepted so the error is clear).
    #[arg(short = 'N', value_name = "NS")]
    namespace: Option<String>,
    /// Filesystem type, as mount(8) passes it.
    #[arg(short = 't', value_name = "TYPE")]
    fstype: Option<String>,
}

/// The helper's command line, for its man page.
pub fn command() -> clap::Command {
    <HelperArgs as clap::CommandFactory>::command()
}

/// Runs the helper: `parse` turns mount(8)'s arguments into a `lazysnap` command line, which
/// `mount` carries out with the same checks as the command.
pub fn main(mount: impl FnOnce(Vec<OsString>, bool) -> anyhow::Result<serde_json::Value>) -> ExitCode {
    use clap::Parser;
    let args = match HelperArgs::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { USAGE } else { 0 });
        }
    };
    let command = match command_line(&args) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            return ExitCode::from(USAGE);
        }
    };
    if args.fake {
        return ExitCode::SUCCESS;
    }
    match mount(command, args.verbose) {
        Ok(answer) => {
            if args.verbose {
                println!("{NAME}: mounted {} at {}: {answer}", args.source, args.target.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "{NAME}: cannot mount {} at {}: {e:#}",
                args.source,
                args.target.display()
            );
            ExitCode::from(MOUNT_FAILURE)
        }
    }
}

/// The `lazysnap [--home DIR] mount ...` command line the helper's arguments stand for.
fn command_line(args: &HelperArgs) -> Result<Vec<OsString>, String> {
    if let Some(ns) = &args.namespace {
        return Err(format!("-N {ns}: mounting into another namespace is not supported"));
    }
    if let Some(fstype) = args.fstype.as_deref().filter(|t| *t != "fuse.lazysnap") {
        return Err(format!("type {fstype:?} is not fuse.lazysnap"));
    }
    let mut global: Vec<OsString> = vec!["lazysnap".into()];
    let mut mount: Vec<OsString> = vec!["mount".into()];
    match args.source.split_once('#') {
        Some((store, volumes)) => {
            mount.extend(["--store".into(), store.into()]);
            for volume in volumes.split(',').filter(|v| !v.is_empty()) {
                mount.extend(["--volume".into(), volume.into()]);
            }
        }
        None => mount.extend(["--backup".into(), args.source.clone().into()]),
    }
    mount.extend(["--mountpoint".into(), args.target.clone().into_os_string()]);
    for option in args.options.iter().flat_map(|o| o.split(',')).filter(|o| !o.is_empty()) {
        let (key, value) = match option.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (option, None),
        };
        let flag = match (key, value) {
            ("snapshot" | "manifest" | "generation" | "at" | "seqno" | "uid" | "gid" | "bandwidth", Some(_)) => key,
            ("file_mode", Some(_)) => "file-mode",
            ("dir_mode", Some(_)) => "dir-mode",
            ("allow_other", None) => "allow-other",
            ("hydrate", None) => "hydrate",
            ("home", Some(dir)) => {
                global.extend(["--home".into(), dir.into()]);
                continue;
            }
            _ if GENERIC.contains(&option) || key.starts_with("x-") || key == "comment" => continue,
            (
                "snapshot" | "manifest" | "generation" | "at" | "seqno" | "uid" | "gid" | "bandwidth" | "file_mode"
                | "dir_mode" | "home",
                None,
            ) => return Err(format!("option {key} needs a value ({key}=...)")),
            ("allow_other" | "hydrate", Some(_)) => return Err(format!("option {key} takes no value")),
            _ if args.sloppy => continue,
            _ => return Err(format!("unknown mount option {option:?} (see {NAME} --help)")),
        };
        mount.push(format!("--{flag}").into());
        if let Some(value) = value {
            mount.push(value.into());
        }
    }
    global.extend(mount);
    Ok(global)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn line(argv: &[&str]) -> Result<Vec<String>, String> {
        let mut full = vec![NAME];
        full.extend_from_slice(argv);
        let args = HelperArgs::try_parse_from(full).map_err(|e| e.to_string())?;
        command_line(&args).map(|v| v.into_iter().map(|s| s.into_string().unwrap()).collect())
    }

    #[test]
    fn an_fstab_line_becomes_a_mount_command() {
        let got = line(&[
            "file:///srv/store#kv/b/kvstore-0,kv/b/kvstore-1",
            "/mnt/kv0",
            "-o",
            "rw,_netdev,x-systemd.requires=lazysnap-mountd.service,snapshot=u1,uid=couchbase,file_mode=0400,allow_other,home=/h",
        ])
        .unwrap();
        assert_eq!(
            got.join(" "),
            "lazysnap --home /h mount --store file:///srv/store --volume kv/b/kvstore-0 --volume kv/b/kvstore-1 \
--mountpoint /mnt/kv0 --snapshot u1 --uid couchbase --file-mode 0400 --allow-other"
        );
        let backup = line(&[
            "s3://b/loc?region=r",
            "/mnt/b",
            "-o",
            "generation=3,hydrate",
            "-t",
            "fuse.lazysnap",
        ])
        .unwrap();
        assert_eq!(
            backup.join(" "),
            "lazysnap mount --backup s3://b/loc?region=r --mountpoint /mnt/b --generation 3 --hydrate"
        );
    }

    #[test]
    fn unknown_or_malformed_options_are_refused_by_name() {
        let error = line(&["f#v", "/m", "-o", "ro,snapshto=u1"]).unwrap_err();
        assert!(error.contains("\"snapshto=u1\""), "{error}");
        assert!(
            line(&["f#v", "/m", "-s", "-o", "snapshto=u1"]).is_ok(),
            "sloppy ignores it"
        );
        assert!(line(&["f#v", "/m", "-o", "uid"])
            .unwrap_err()
            .contains("uid needs a value"));
        assert!(line(&["f#v", "/m", "-o", "allow_other=1"])
            .unwrap_err()
            .contains("takes no value"));
        assert!(line(&["f#v", "/m", "-t", "fuse.sshfs"])
            .unwrap_err()
            .contains("fuse.sshfs"));
        assert!(line(&["f#v", "/m", "-N", "/proc/1/ns/mnt"]).is_err());
    }

    /// mount(8) hands the helper whatever an fstab line says: any option list is a mount command
    /// or an error naming what is wrong, never a panic. `LAZYSNAP_FUZZ_CASES` lists (a million in
    /// `make reliability`).
    #[test]
    fn fuzzed_option_lists_are_commands_or_named_errors() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};

        let started = std::time::Instant::now();
        let cases = std::env::var("LAZYSNAP_FUZZ_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(2000);
        let token = prop_oneof![
            prop::sample::select(vec![
                "ro",
                "rw",
                "snapshot=u1",
                "uid=0",
                "file_mode=0400",
                "allow_other",
                "allow_other=1",
                "hydrate",
                "home=/h",
                "home",
                "generation",
                "x-systemd.automount",
                "comment=x",
                "=",
                ",,",
                "at=2026-11-22T10:00:00Z",
                "seqno=-1",
                "bandwidth=1G",
            ])
            .prop_map(str::to_string),
            "\\PC{0,12}",
        ];
        let options = prop::collection::vec(token, 0..6).prop_map(|t| t.join(","));
        let source = prop_oneof![Just("f#v".to_string()), Just("s3://b/l".to_string()), "\\PC{0,16}"];
        TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        })
        .run(&(source, options, any::<bool>()), |(source, options, sloppy)| {
            let mut argv = vec![source.as_str(), "/m", "-o", options.as_str()];
            if sloppy {
                argv.push("-s");
            }
            match line(&argv) {
                Ok(command) => prop_assert!(command[0] == "lazysnap" && command.contains(&"mount".to_string())),
                Err(e) => prop_assert!(!e.trim().is_empty()),
            }
            Ok(())
        })
        .unwrap();
        let took = started.elapsed().as_secs_f64();
        eprintln!("| fuzz: mount(8) helper options | 1 thread, {took:.1} s | - | {cases} | 0 | - |");
    }
}
