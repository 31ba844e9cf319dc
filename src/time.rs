//! Time as lazysnap writes it: Unix milliseconds in records, RFC 3339 for people.

/// Milliseconds since the Unix epoch, the unit of every timestamp lazysnap writes.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// RFC 3339 in UTC to the millisecond: typed back into `--at`, it selects that very generation.
pub fn format_time(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}
