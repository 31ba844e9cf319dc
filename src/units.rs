//! Sizes as operators write them: `256M`, `10G`, `4096`.

/// Parses a byte count with an optional binary suffix (K, M, G, T; `KiB`-style and `B` accepted).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let upper = trimmed.to_ascii_uppercase();
    let digits_end = upper.find(|c: char| !c.is_ascii_digit()).unwrap_or(upper.len());
    let (number, suffix) = upper.split_at(digits_end);
    let shift = match suffix.trim_end_matches('B').trim_end_matches('I') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => {
            return Err(format!(
                "invalid size {text:?}: use a number with an optional K, M, G or T suffix"
            ))
        }
    };
    let value: u64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}: use a number with an optional K, M, G or T suffix"))?;
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("256K"), Ok(256 << 10));
        assert_eq!(parse_size("256KiB"), Ok(256 << 10));
        assert_eq!(parse_size("10g"), Ok(10 << 30));
        assert_eq!(parse_size("1MB"), Ok(1 << 20));
        for bad in ["", "x", "1X", "-1", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }
}
