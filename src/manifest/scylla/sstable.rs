//! How an sstable's components are named and what its `Digest.crc32` holds: what a copy of a
//! ScyllaDB view needs to group components and check `Data.db` (see `view::SstableRules`).

/// What the components of one sstable share: `me-<generation>-big-` of `me-<generation>-big-Data.db`.
pub fn component_prefix(name: &str) -> &str {
    name.rfind('-').map_or(name, |i| &name[..=i])
}

/// The digest component that states the CRC32 of a `Data.db` component (`None` for any other).
pub fn digest_of(data: &str) -> Option<String> {
    data.ends_with("-Data.db")
        .then(|| format!("{}Digest.crc32", component_prefix(data)))
}

/// The CRC32 a `Digest.crc32` states (decimal text). One that is not a number checks nothing:
/// ScyllaDB would refuse it itself.
pub fn parse_digest(content: &[u8]) -> Option<u32> {
    std::str::from_utf8(content).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_group_and_data_has_a_digest() {
        assert_eq!(component_prefix("me-3gw7_0ndy-big-Data.db"), "me-3gw7_0ndy-big-");
        assert_eq!(digest_of("me-1-big-Data.db").as_deref(), Some("me-1-big-Digest.crc32"));
        assert_eq!(digest_of("me-1-big-Index.db"), None);
        assert_eq!(parse_digest(b"3735928559\n"), Some(0xdead_beef));
        assert_eq!(parse_digest(b"not a number"), None);
    }
}
