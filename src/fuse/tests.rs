//! The wire layer against a scripted kernel: a `SOCK_SEQPACKET` socket pair keeps message
//! boundaries as `/dev/fuse` does, so a session can be driven request by request without a mount.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use tokio::sync::oneshot;

use super::abi::{opcode, OUT_HEADER};
use super::device::Device;
use super::journal::{Journal, OpenEntry};
use super::request::tests::encode;
use super::session::{Negotiated, Session};
use super::{FuseOptions, Server};
use crate::fs::testing;

/// The kernel's end: writes requests, reads answers.
struct Kernel {
    fd: OwnedFd,
    unique: u64,
}

impl Kernel {
    /// Sends a request; answers (error, payload). A request the server does not answer (FORGET)
    /// must not be sent through here.
    fn call(&mut self, code: u32, nodeid: u64, body: &[u8]) -> (i32, Vec<u8>) {
        self.unique += 2;
        let request = encode(code, self.unique, nodeid, body);
        // SAFETY: writing and reading buffers we own on a socket we own.
        unsafe {
            assert_eq!(
                libc::write(self.fd.as_raw_fd(), request.as_ptr().cast(), request.len()),
                request.len() as isize
            );
        }
        let mut buf = vec![0u8; 1 << 20];
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        assert!(n >= OUT_HEADER as isize, "answer of {n} bytes");
        buf.truncate(n as usize);
        let len = u32::from_ne_bytes(buf[..4].try_into().unwrap()) as usize;
        let error = i32::from_ne_bytes(buf[4..8].try_into().unwrap());
        let unique = u64::from_ne_bytes(buf[8..16].try_into().unwrap());
        assert_eq!((len, unique), (buf.len(), self.unique), "answer header");
        (error, buf[OUT_HEADER..].to_vec())
    }

    fn lookup(&mut self, parent: u64, name: &str) -> (u64, u64) {
        let (error, entry) = self.call(opcode::LOOKUP, parent, &[name.as_bytes(), b"\0"].concat());
        assert_eq!(error, 0, "lookup {name}");
        (u64_at(&entry, 0), u64_at(&entry, 48))
    }
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn read_body(fh: u64, offset: u64, size: u32) -> Vec<u8> {
    [
        fh.to_ne_bytes().as_slice(),
        &offset.to_ne_bytes(),
        &size.to_ne_bytes(),
        &[0u8; 20],
    ]
    .concat()
}

fn pair() -> (OwnedFd, OwnedFd) {
    socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).unwrap()
}

fn server() -> Arc<Server> {
    Server::new(FuseOptions {
        passthrough: false,
        ..FuseOptions::default()
    })
}

const FILE: &str = "f";

async fn session(dir: &std::path::Path, bytes: &[u8], journal: Journal) -> (Arc<Session>, OwnedFd) {
    let (fs, _store) = testing::published("fuse-session", &[("kv/v", &[(FILE, bytes)])], dir).await;
    let (kernel, ours) = pair();
    let session = Session::new(
        Device::new(ours).unwrap(),
        Arc::new(fs),
        journal,
        server(),
        "/test".into(),
    );
    (Arc::new(session), kernel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_answers_what_a_read_only_tree_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = crate::fs::testing::BLOCK_SIZE as usize * 3 + 123;
    let bytes: Vec<u8> = (0..bytes).map(|i| (i * 7 % 251) as u8).collect();
    let journal = Journal::create(&dir.path().join("j.opens"), 16).unwrap();
    let (session, kernel) = session(dir.path(), &bytes, journal).await;
    let (initialized, negotiated) = oneshot::channel();
    let (_stop, stopped) = oneshot::channel();
    let task = tokio::spawn(session.clone().run(Some(initialized), stopped));
    let expected = bytes.clone();
    let journal_len = {
        let session = session.clone();
        move || session.journal.len()
    };
    tokio::task::spawn_blocking(move || {
        let mut k = Kernel { fd: kernel, unique: 0 };
        let init: Vec<u8> = [7u32, 45, 1 << 17, 1 | (1 << 30), 0]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .chain([0u8; 44])
            .collect();
        let (error, out) = k.call(opcode::INIT, 0, &init);
        assert_eq!((error, out.len()), (0, 64));
        assert_eq!(u32::from_ne_bytes(out[4..8].try_into().unwrap()), 45, "minor agreed");

        let (kv, _) = k.lookup(1, "kv");
        let (v, _) = k.lookup(kv, "v");
        let (f, size) = k.lookup(v, FILE);
        assert_eq!(size, expected.len() as u64);
        let (error, entry) = k.call(opcode::LOOKUP, 1, b"nope\0");
        assert_eq!(
            (error, u64_at(&entry, 0)),
            (0, 0),
            "a missing name is a cached negative entry"
        );
        let (error, attr) = k.call(opcode::GETATTR, f, &[0u8; 16]);
        assert_eq!((error, attr.len(), u64_at(&attr, 24)), (0, 104, expected.len() as u64));

        let (error, open) = k.call(opcode::OPEN, f, &[0u8; 8]);
        assert_eq!(error, 0);
        let fh = u64_at(&open, 0);
        assert_eq!(journal_len(), 1, "the open is journaled before it is answered");
        let (error, data) = k.call(opcode::READ, f, &read_body(fh, 5000, 7000));
        assert_eq!(error, 0);
        assert!(data == expected[5000..12000], "a read across blocks, in one answer");
        let (error, data) = k.call(opcode::READ, f, &read_body(fh, expected.len() as u64, 10));
        assert_eq!((error, data.len()), (0, 0), "nothing past the end");
        let (error, data) = k.call(opcode::READ, f, &read_body(fh + 1000, 100, 10));
        assert_eq!(
            (error, &data[..]),
            (0, &expected[100..110]),
            "an unknown handle reads its inode"
        );

        let (error, names) = k.call(opcode::READDIR, v, &read_body(0, 0, 4096));
        assert_eq!(error, 0);
        let name = |at: usize| {
            let len = u32::from_ne_bytes(names[at + 16..at + 20].try_into().unwrap()) as usize;
            String::from_utf8(names[at + 24..at + 24 + len].to_vec()).unwrap()
        };
        assert_eq!(
            (name(0), name(32), name(64)),
            (".".into(), "..".into(), FILE.to_string())
        );

        let xattr = [0u32.to_ne_bytes().as_slice(), &[0u8; 4], b"user.lazysnap.volume\0"].concat();
        let (error, size) = k.call(opcode::GETXATTR, f, &xattr);
        assert_eq!((error, u32::from_ne_bytes(size[..4].try_into().unwrap())), (0, 4));
        let xattr = [64u32.to_ne_bytes().as_slice(), &[0u8; 4], b"user.lazysnap.volume\0"].concat();
        assert_eq!(k.call(opcode::GETXATTR, f, &xattr), (0, b"kv/v".to_vec()));

        assert_eq!(
            k.call(opcode::FLUSH, f, &[0u8; 24]).0,
            -libc::ENOSYS,
            "nothing to flush, ever"
        );
        assert_eq!(k.call(opcode::WRITE, f, &[0u8; 48]).0, -libc::EROFS);
        assert_eq!(
            k.call(opcode::OPEN, f, &(libc::O_WRONLY as u32).to_ne_bytes()).0,
            -libc::EROFS
        );
        assert_eq!(k.call(9999, f, &[]).0, -libc::ENOSYS);
        assert_eq!(k.call(opcode::LOOKUP, 1, b"no-terminator").0, -libc::EIO);
        let (error, _) = k.call(opcode::RELEASE, f, &[fh.to_ne_bytes().as_slice(), &[0u8; 16]].concat());
        assert_eq!(error, 0);
        assert_eq!(journal_len(), 0, "a released open leaves the journal");
    })
    .await
    .unwrap();
    assert!(negotiated.await.unwrap().max_write >= 4096);
    drop(task);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_serves_the_handles_its_predecessor_journaled() {
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..20_000).map(|i| (i % 239) as u8).collect();
    let path = dir.path().join("j.opens");
    let (fs, _store) = testing::published("fuse-adopt", &[("kv/v", &[(FILE, &bytes[..])])], dir.path()).await;
    let f = fs
        .lookup(fs.lookup(fs.lookup(1, "kv").unwrap().ino, "v").unwrap().ino, FILE)
        .unwrap()
        .ino;
    {
        let journal = Journal::create(&path, 16).unwrap();
        journal
            .record(OpenEntry {
                fh: 77,
                ino: f,
                backing: None,
            })
            .unwrap();
    }
    let (journal, opens) = Journal::open(&path, 16).unwrap();
    let (kernel, ours) = pair();
    let session = Arc::new(Session::new(
        Device::new(ours).unwrap(),
        Arc::new(fs),
        journal,
        server(),
        "/t".into(),
    ));
    let negotiated = Negotiated {
        minor: 45,
        passthrough: false,
        max_write: 4096,
        resend: true,
        uring: false,
    };
    session.adopt(negotiated, &opens);
    let (_stop, stopped) = oneshot::channel();
    let task = tokio::spawn(session.clone().run(None, stopped));
    tokio::task::spawn_blocking(move || {
        let mut k = Kernel {
            fd: kernel,
            unique: 100,
        };
        // No INIT: the connection was set up by the predecessor.
        let (error, data) = k.call(opcode::READ, f, &read_body(77, 1000, 50));
        assert_eq!((error, &data[..]), (0, &bytes[1000..1050]));
        let (error, open) = k.call(opcode::OPEN, f, &[0u8; 8]);
        assert_eq!(error, 0);
        assert!(u64_at(&open, 0) > 77, "new handles are numbered after the adopted ones");
    })
    .await
    .unwrap();
    assert_eq!(session.journal.len(), 2);
    drop(task);
}

#[test]
fn a_connection_served_through_io_uring_is_never_taken_over() {
    let mut negotiated = Negotiated {
        minor: 45,
        passthrough: true,
        max_write: 4096,
        resend: true,
        uring: false,
    };
    assert!(Session::can_serve(&negotiated));
    negotiated.uring = true;
    // The kernel would neither resend what the old ring held nor give queued requests to ours.
    assert!(!Session::can_serve(&negotiated));
    // State written before the field existed reads as a device-served connection.
    let old: Negotiated =
        serde_json::from_str(r#"{"minor":45,"passthrough":true,"maxWrite":4096,"resend":true}"#).unwrap();
    assert!(!old.uring && Session::can_serve(&old));
}
