//! One request read from the device, decoded into owned values so the read buffer can go back to
//! the pool before the request is served.

use super::abi::{opcode, Fields, IN_HEADER};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Echoed in the answer; carries `FUSE_UNIQUE_RESEND` when the kernel queued it again.
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Init {
        major: u32,
        minor: u32,
        max_readahead: u32,
        flags: u64,
    },
    Destroy,
    Lookup {
        name: Vec<u8>,
    },
    /// FORGET and BATCH_FORGET: inodes live as long as the mount, so there is nothing to forget.
    Forget,
    /// No answer is owed; the interrupted request answers for itself when it completes.
    Interrupt,
    Getattr,
    Open {
        flags: u32,
    },
    Read {
        fh: u64,
        offset: u64,
        size: u32,
    },
    Release {
        fh: u64,
    },
    /// RELEASEDIR: directories hold no state, so this succeeds at once.
    Nothing,
    /// FLUSH, FSYNC, FSYNCDIR: nothing is ever written. Answered ENOSYS, which the kernel takes as
    /// success from then on without asking again, so closing or syncing a file on a mount never
    /// waits on the daemon (not even while it restarts).
    NeverWritten,
    Opendir,
    Readdir {
        offset: u64,
        size: u32,
    },
    Statfs,
    Getxattr {
        name: Vec<u8>,
        size: u32,
    },
    Listxattr {
        size: u32,
    },
    Access,
    /// Anything that would change the tree.
    ReadOnly,
    /// An operation this filesystem does not implement (ENOSYS), named for the log.
    Unsupported(u32),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("request of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("request length {claimed} does not match the {read} bytes read")]
    Length { claimed: u32, read: usize },
    /// The header was whole, so the request can still be answered (with EIO).
    #[error("opcode {opcode} has a malformed body")]
    Body { unique: u64, opcode: u32 },
}

impl Request {
    pub fn parse(buf: &[u8]) -> Result<Request, ParseError> {
        if buf.len() < IN_HEADER {
            return Err(ParseError::Short(buf.len()));
        }
        let mut h = Fields::new(&buf[..IN_HEADER]);
        let field = "header checked above";
        let len = h.u32().expect(field);
        let code = h.u32().expect(field);
        let unique = h.u64().expect(field);
        let nodeid = h.u64().expect(field);
        let (uid, gid, pid) = (h.u32().expect(field), h.u32().expect(field), h.u32().expect(field));
        if len as usize != buf.len() {
            return Err(ParseError::Length {
                claimed: len,
                read: buf.len(),
            });
        }
        let op = parse_op(code, Fields::new(&buf[IN_HEADER..])).ok_or(ParseError::Body { unique, opcode: code })?;
        Ok(Request {
            unique,
            nodeid,
            uid,
            gid,
            pid,
            op,
        })
    }
}

fn parse_op(code: u32, mut body: Fields<'_>) -> Option<Op> {
    use opcode::*;
    Some(match code {
        INIT => {
            let (major, minor, max_readahead, flags) = (body.u32()?, body.u32()?, body.u32()?, body.u32()?);
            // flags2 follows when the kernel sets FUSE_INIT_EXT (older kernels send 16 bytes).
            let flags2 = body.u32().unwrap_or(0);
            let flags = u64::from(flags) | u64::from(flags2) << 32;
            Op::Init {
                major,
                minor,
                max_readahead,
                flags,
            }
        }
        DESTROY => Op::Destroy,
        LOOKUP => Op::Lookup { name: body.name()? },
        FORGET | BATCH_FORGET => Op::Forget,
        INTERRUPT => Op::Interrupt,
        GETATTR => Op::Getattr,
        OPEN => Op::Open { flags: body.u32()? },
        READ => {
            let fh = body.u64()?;
            let offset = body.u64()?;
            let size = body.u32()?;
            Op::Read { fh, offset, size }
        }
        RELEASE => Op::Release { fh: body.u64()? },
        RELEASEDIR => Op::Nothing,
        FLUSH | FSYNC | FSYNCDIR => Op::NeverWritten,
        OPENDIR => Op::Opendir,
        READDIR => {
            body.skip(8)?; // fh: directories need no handle state
            let offset = body.u64()?;
            let size = body.u32()?;
            Op::Readdir { offset, size }
        }
        STATFS => Op::Statfs,
        GETXATTR => {
            let size = body.u32()?;
            body.skip(4)?;
            Op::Getxattr {
                size,
                name: body.name()?,
            }
        }
        LISTXATTR => Op::Listxattr { size: body.u32()? },
        ACCESS => Op::Access,
        SETATTR | SYMLINK | MKNOD | MKDIR | UNLINK | RMDIR | RENAME | LINK | WRITE | SETXATTR | REMOVEXATTR
        | CREATE | FALLOCATE | RENAME2 | COPY_FILE_RANGE | TMPFILE => Op::ReadOnly,
        READLINK => Op::Unsupported(code),
        other => Op::Unsupported(other),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A request as the kernel would write it.
    pub(crate) fn encode(code: u32, unique: u64, nodeid: u64, body: &[u8]) -> Vec<u8> {
        let len = (IN_HEADER + body.len()) as u32;
        let mut buf = Vec::new();
        for v in [len, code] {
            buf.extend_from_slice(&v.to_ne_bytes());
        }
        for v in [unique, nodeid] {
            buf.extend_from_slice(&v.to_ne_bytes());
        }
        for v in [1000u32, 1000, 42, 0] {
            buf.extend_from_slice(&v.to_ne_bytes());
        }
        buf.extend_from_slice(body);
        buf
    }

    #[test]
    fn decodes_the_operations_a_read_only_mount_serves() {
        let read_body: Vec<u8> = [7u64.to_ne_bytes(), 4096u64.to_ne_bytes()]
            .concat()
            .into_iter()
            .chain(131072u32.to_ne_bytes())
            .chain([0u8; 20])
            .collect();
        let read = Request::parse(&encode(opcode::READ, 9, 3, &read_body)).unwrap();
        assert_eq!((read.unique, read.nodeid, read.pid), (9, 3, 42));
        assert_eq!(
            read.op,
            Op::Read {
                fh: 7,
                offset: 4096,
                size: 131072
            }
        );
        let lookup = Request::parse(&encode(opcode::LOOKUP, 1, 1, b"kvstore-0\0")).unwrap();
        assert_eq!(
            lookup.op,
            Op::Lookup {
                name: b"kvstore-0".to_vec()
            }
        );
        let xattr_body: Vec<u8> = 0u32
            .to_ne_bytes()
            .into_iter()
            .chain([0u8; 4])
            .chain(*b"user.lazysnap.volume\0")
            .collect();
        let xattr = Request::parse(&encode(opcode::GETXATTR, 2, 2, &xattr_body)).unwrap();
        assert_eq!(
            xattr.op,
            Op::Getxattr {
                name: b"user.lazysnap.volume".to_vec(),
                size: 0
            }
        );
        let write = Request::parse(&encode(opcode::WRITE, 3, 2, &[0u8; 48])).unwrap();
        assert_eq!(write.op, Op::ReadOnly);
        assert_eq!(
            Request::parse(&encode(opcode::FORGET, 4, 2, &[0u8; 8])).unwrap().op,
            Op::Forget
        );
    }

    #[test]
    fn malformed_requests_are_errors_that_keep_what_can_be_answered() {
        assert_eq!(Request::parse(&[0u8; 10]), Err(ParseError::Short(10)));
        let mut lying = encode(opcode::GETATTR, 5, 1, &[0u8; 16]);
        lying[0] = 99;
        assert!(matches!(Request::parse(&lying), Err(ParseError::Length { .. })));
        // A name without its terminating NUL.
        assert_eq!(
            Request::parse(&encode(opcode::LOOKUP, 6, 1, b"abc")),
            Err(ParseError::Body {
                unique: 6,
                opcode: opcode::LOOKUP
            })
        );
        let short_read = encode(opcode::READ, 7, 1, &[0u8; 4]);
        assert!(matches!(
            Request::parse(&short_read),
            Err(ParseError::Body { unique: 7, .. })
        ));
    }

    /// Any bytes, and well-formed headers with any opcode and body: a request the kernel could
    /// never send is an error (or an op answered as unsupported), never a panic; a request whose
    /// header was whole keeps its `unique`, so it can still be answered. `LAZYSNAP_FUZZ_CASES`
    /// inputs of each kind (a million in `make reliability`).
    #[test]
    fn fuzzed_requests_never_panic_and_keep_what_can_be_answered() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};

        let cases = std::env::var("LAZYSNAP_FUZZ_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(2000);
        let config = || Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        };
        let started = std::time::Instant::now();
        let raw = prop::collection::vec(any::<u8>(), 0..256);
        TestRunner::new(config())
            .run(&raw, |buf| {
                let _ = Request::parse(&buf);
                Ok(())
            })
            .unwrap();
        let codes = prop_oneof![0u32..60, any::<u32>()];
        let framed = (codes, any::<u64>(), prop::collection::vec(any::<u8>(), 0..96));
        TestRunner::new(config())
            .run(&framed, |(code, unique, body)| {
                match Request::parse(&encode(code, unique, 1, &body)) {
                    Ok(request) => prop_assert_eq!(request.unique, unique),
                    Err(ParseError::Body { unique: kept, opcode }) => {
                        prop_assert_eq!((kept, opcode), (unique, code))
                    }
                    Err(e) => prop_assert!(false, "a whole header was refused: {e}"),
                }
                Ok(())
            })
            .unwrap();
        let took = started.elapsed().as_secs_f64();
        eprintln!(
            "| fuzz: FUSE requests, bytes and framed | 1 thread, {took:.1} s | - | {} | 0 | - |",
            2 * cases
        );
    }
}
