//! Deterministic test data: the same seed always gives the same bytes, so a test can recompute
//! what a file must contain instead of keeping a copy.

use std::path::Path;

/// `len` pseudo-random bytes from `seed` (xorshift: fast, and every byte depends on the seed).
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn write(dir: &Path, path: &str, contents: &[u8]) {
    let full = dir.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, contents).unwrap();
}

/// Writes a file the way an engine hands a finished file to an uploader: written beside the
/// folder, then renamed in, so a scan never sees it half-written.
pub fn write_complete(dir: &Path, path: &str, contents: &[u8]) {
    let staging = dir.with_extension("staging");
    write(&staging, path, contents);
    let full = dir.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::rename(staging.join(path), full).unwrap();
}

/// Every file under `dir` (hidden ones too), by relative path, with its bytes. A file gone between
/// the listing and its read (a restore renaming a finished file while a test watches) is left out.
pub fn tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let name = e.path().strip_prefix(dir).unwrap().display().to_string();
            match std::fs::read(e.path()) {
                Ok(bytes) => Some((name, bytes)),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
                Err(err) => panic!("reading {}: {err}", e.path().display()),
            }
        })
        .collect()
}
