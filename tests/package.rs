//! The Debian package `make deb` builds: what it installs, what it depends on, its scripts, and a
//! unit and binaries that work as installed. `make test` runs this after `make deb`; on its own it
//! is ignored (the package takes a release build).

use std::path::PathBuf;
use std::process::Command;

fn package() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/debian");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{} ({e}): run `make deb` first", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "deb")
                && p.file_name().unwrap().to_string_lossy().starts_with("lazysnap_")
        })
        .collect();
    debs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    debs.pop().expect("a lazysnap_*.deb: run `make deb` first")
}

fn dpkg_deb(args: &[&str]) -> String {
    let out = Command::new("dpkg-deb").args(args).output().expect("dpkg-deb");
    assert!(
        out.status.success(),
        "dpkg-deb {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
#[ignore = "needs `make deb` (make test runs it, then this)"]
fn the_package_installs_binaries_unit_helper_docs_and_depends_on_fuse3() {
    let deb = package();
    let deb = deb.to_str().unwrap();
    let listing = dpkg_deb(&["-c", deb]);
    // `dpkg-deb -c` lines end with the path (and ` -> target` for links).
    let paths: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.'))
        .collect();
    for expected in [
        "/usr/bin/lazysnap",
        "/usr/bin/lazysnap-mountd",
        "/usr/sbin/mount.fuse.lazysnap",
        "/etc/lazysnap/config.toml",
        "/usr/share/bash-completion/completions/lazysnap",
        "/usr/share/zsh/vendor-completions/_lazysnap",
        "/usr/share/fish/vendor_completions.d/lazysnap.fish",
        "/usr/share/doc/lazysnap/README.md",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from the package:\n{listing}"
        );
    }
    let link = listing
        .lines()
        .find(|l| l.contains("/usr/sbin/mount.fuse.lazysnap"))
        .unwrap();
    assert!(
        link.starts_with('l') && link.contains("-> ") && link.ends_with("bin/lazysnap"),
        "{link}"
    );
    assert!(
        paths
            .iter()
            .any(|p| p.ends_with("systemd/system/lazysnap-mountd.service")),
        "the unit is missing:\n{listing}"
    );
    for page in [
        "man1/lazysnap.1",
        "man1/lazysnap-mount.1",
        "man8/lazysnap-mountd.8",
        "man8/mount.fuse.lazysnap.8",
    ] {
        assert!(paths.iter().any(|p| p.contains(page)), "{page} missing:\n{listing}");
    }

    let control = dpkg_deb(&["-f", deb, "Depends"]);
    assert!(control.contains("fuse3"), "Depends: {control}");
    let scripts = tempfile::tempdir().unwrap();
    dpkg_deb(&["-e", deb, scripts.path().to_str().unwrap()]);
    let conffiles = std::fs::read_to_string(scripts.path().join("conffiles")).unwrap_or_default();
    assert!(
        conffiles.contains("/etc/lazysnap/config.toml"),
        "conffiles: {conffiles}"
    );
    let postinst = std::fs::read_to_string(scripts.path().join("postinst")).unwrap();
    assert!(
        postinst.contains("enable") && postinst.contains("lazysnap-mountd"),
        "{postinst}"
    );
    assert!(
        postinst.contains("daemon restart"),
        "an upgrade hands the mounts over: {postinst}"
    );

    // As installed: the binaries run, the example configuration is valid, the unit verifies.
    let root = tempfile::tempdir().unwrap();
    dpkg_deb(&["-x", deb, root.path().to_str().unwrap()]);
    let bin = root.path().join("usr/bin");
    let version = Command::new(bin.join("lazysnap")).arg("--version").output().unwrap();
    assert!(version.status.success());
    let example = std::fs::read_to_string(root.path().join("etc/lazysnap/config.toml")).unwrap();
    let every_key: String = example
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| l.contains(" = "))
        .map(|l| format!("{l}\n"))
        .collect();
    let config = root.path().join("all.toml");
    std::fs::write(&config, &every_key).unwrap();
    let shown = Command::new(bin.join("lazysnap-mountd"))
        .arg("--config")
        .arg(&config)
        .arg("--print-config")
        .env_remove("LAZYSNAP_HOME")
        .output()
        .unwrap();
    let shown_text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    for line in shown_text.lines().filter(|l| l.contains(" = ") && !l.starts_with('#')) {
        assert!(line.contains("all.toml line"), "the example does not set {line}");
    }
    let unit_dir = ["usr/lib/systemd/system", "lib/systemd/system"]
        .iter()
        .map(|d| root.path().join(d))
        .find(|d| d.join("lazysnap-mountd.service").exists())
        .expect("the unit");
    let unit = std::fs::read_to_string(unit_dir.join("lazysnap-mountd.service")).unwrap();
    let here = root.path().join("lazysnap-mountd.service");
    std::fs::write(&here, unit.replace("/usr/bin/", &format!("{}/", bin.display()))).unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&here)
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}
