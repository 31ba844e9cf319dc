//! Messages between a daemon and its holder. The first byte says what a message is:
//!
//! | daemon -> holder | meaning | answer |
//! |---|---|---|
//! | `P` name state + fd | keep this connection (replacing one of the same name) | `K` |
//! | `D` name | let it go | `K` |
//! | `L` | send everything held | one `I` name state + fd each, then `Z` |
//! | `S` | status | `K` + JSON `{"pid", "held"}` |
//! | `X` | let everything go and exit | `K` |
//!
//! A name is a mount path (UTF-8, prefixed by its length as a little-endian u16); the state is
//! opaque to the holder. An answer `E` + text is a refusal.

use std::io;

pub const PUT: u8 = b'P';
pub const DROP: u8 = b'D';
pub const LIST: u8 = b'L';
pub const STATUS: u8 = b'S';
pub const EXIT: u8 = b'X';
pub const OK: u8 = b'K';
pub const ITEM: u8 = b'I';
pub const END: u8 = b'Z';
pub const REFUSED: u8 = b'E';

/// Largest message: a path and a few hundred bytes of state fit many times over.
pub const MAX_MESSAGE: usize = 64 << 10;

pub fn encode(kind: u8, name: &str, state: &[u8]) -> io::Result<Vec<u8>> {
    let len = u16::try_from(name.len()).map_err(|_| invalid("name too long"))?;
    let mut out = Vec::with_capacity(3 + name.len() + state.len());
    out.push(kind);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(state);
    if out.len() > MAX_MESSAGE {
        return Err(invalid("message too long"));
    }
    Ok(out)
}

/// Splits a message encoded by [`encode`] into kind, name and state.
pub fn decode(message: &[u8]) -> io::Result<(u8, &str, &[u8])> {
    let (&kind, rest) = message.split_first().ok_or_else(|| invalid("empty message"))?;
    let (len, rest) = rest.split_first_chunk::<2>().ok_or_else(|| invalid("no name length"))?;
    let len = u16::from_le_bytes(*len) as usize;
    if rest.len() < len {
        return Err(invalid("name cut short"));
    }
    let (name, state) = rest.split_at(len);
    let name = std::str::from_utf8(name).map_err(|_| invalid("name is not UTF-8"))?;
    Ok((kind, name, state))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("handover message: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_bad_ones_are_refused() {
        let message = encode(PUT, "/mnt/kv0", b"{\"state\":1}").unwrap();
        assert_eq!(decode(&message).unwrap(), (PUT, "/mnt/kv0", &b"{\"state\":1}"[..]));
        assert_eq!(decode(&encode(LIST, "", b"").unwrap()).unwrap(), (LIST, "", &b""[..]));
        assert!(decode(&[]).is_err());
        assert!(decode(&[PUT, 9, 0, b'a']).is_err(), "name shorter than its length");
        assert!(decode(&[PUT, 1, 0, 0xff]).is_err(), "name not UTF-8");
        assert!(encode(PUT, "x", &vec![0u8; MAX_MESSAGE]).is_err());
    }
}
