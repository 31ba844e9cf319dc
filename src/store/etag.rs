//! Whole-object reads checked against their ETag. S3 (and servers like it) answer an object
//! written in one part with the MD5 of its bytes as its ETag, so a manifest or record whose body
//! was changed on the way (a flipped bit that still parses) is caught and read again instead of
//! steering a mount. Not every ETag is a digest (SSE-KMS objects, other servers): two reads that
//! agree with each other and not with the ETag show that, and the store stops checking.

use bytes::Bytes;
use md5::{Digest, Md5};

/// The MD5 an ETag states: 32 hex digits, quoted or not. Multipart ETags (`<hex>-<parts>`) and
/// other stores' version tags state none.
pub(super) fn stated_md5(etag: Option<&str>) -> Option<[u8; 16]> {
    let hex = etag?.trim_matches('"');
    if hex.len() != 32 {
        return None;
    }
    let mut digest = [0u8; 16];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(digest)
}

/// What one read of a whole object shows.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The body matches its ETag, or there is nothing to check it against.
    Sound,
    /// The body differs from what its ETag states: changed on the way, or the ETag is no digest.
    Suspect,
    /// The body differs from its ETag exactly as an earlier read did: the ETag is no digest.
    NotADigest,
}

pub(super) fn judge(body: &Bytes, stated: Option<[u8; 16]>, earlier_suspect: Option<&Bytes>) -> Verdict {
    match stated {
        Some(want) if Md5::digest(body).as_slice() != want => match earlier_suspect {
            Some(earlier) if earlier == body => Verdict::NotADigest,
            _ => Verdict::Suspect,
        },
        _ => Verdict::Sound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO_MD5: &str = "5d41402abc4b2a76b9719d911017c592";

    #[test]
    fn only_single_part_md5_etags_state_a_digest() {
        assert!(stated_md5(Some(HELLO_MD5)).is_some());
        assert_eq!(
            stated_md5(Some(&format!("\"{HELLO_MD5}\""))),
            stated_md5(Some(HELLO_MD5))
        );
        for other in [
            None,
            Some("\"5d41402abc4b2a76b9719d911017c592-3\""),
            Some("0x8D9F1A2B3C4D5E6"),
            Some("1a2b-5f3c1e-400"),
            Some("zz41402abc4b2a76b9719d911017c592"),
            Some("5d41402abc4b2a76b9719d911017c5é"),
        ] {
            assert_eq!(stated_md5(other), None, "{other:?}");
        }
    }

    #[test]
    fn a_changed_body_is_suspect_until_two_reads_agree() {
        let stated = stated_md5(Some(HELLO_MD5));
        let (good, flipped) = (Bytes::from_static(b"hello"), Bytes::from_static(b"hellp"));
        assert_eq!(judge(&good, stated, None), Verdict::Sound);
        assert_eq!(judge(&flipped, stated, None), Verdict::Suspect);
        assert_eq!(judge(&good, stated, Some(&flipped)), Verdict::Sound);
        // Another flip on the next read is still suspect; the same bytes twice are no accident.
        assert_eq!(
            judge(&flipped, stated, Some(&Bytes::from_static(b"jello"))),
            Verdict::Suspect
        );
        assert_eq!(judge(&flipped, stated, Some(&flipped)), Verdict::NotADigest);
        assert_eq!(judge(&flipped, None, None), Verdict::Sound);
    }
}
