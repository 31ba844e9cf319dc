//! Other processes of the node, as lazysnap's binaries and tests watch them.

/// True once process `pid` has exited: gone, or a zombie its parent has not reaped yet (it holds
/// nothing then: no lock, no socket, no mount connection). Init may take a while to reap an orphan.
pub fn exited(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return true;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // "pid (comm) S ...": the state follows the last parenthesis, as comm may hold any.
    let leader_gone = stat
        .rsplit_once(')')
        .is_none_or(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']));
    // A killed process with many threads shows its first thread as a zombie while the others are
    // still exiting and still hold its files (a daemon's lock among them, and with thousands of
    // mounts that takes a while): it is gone once no other thread is left.
    leader_gone && std::fs::read_dir(format!("/proc/{pid}/task")).map_or(true, |tasks| tasks.count() <= 1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_child_is_running_until_it_exits() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let pid = child.id() as libc::pid_t;
        assert!(!super::exited(pid));
        child.kill().unwrap();
        // A zombie until reaped: exited already.
        let started = std::time::Instant::now();
        while !super::exited(pid) {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "a killed child never counted as exited"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.wait().unwrap();
        assert!(super::exited(pid));
    }
}
