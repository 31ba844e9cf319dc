//! Where lazysnap keeps things in a store. Only this file knows the key names.
//!
//! ```text
//! volumes/<volumeID>/files/<relative path>            immutable data objects
//! volumes/<volumeID>/manifests/<seq>.json             log manifests, written create-only
//! volumes/<volumeID>/manifests/<seq>.json.collecting  GC's tombstone: manifest being deleted
//! volumes/<volumeID>/snapshots/<uuid>/<gen>.json      snapshot record (PENDING when alone)
//! volumes/<volumeID>/snapshots/<uuid>/<gen>.outcome   COMMITTED or ABORTED, written once
//! volumes/<volumeID>/snapshots/<uuid>/<gen>.released  released: DELETING, then gone
//! volumes/<volumeID>/profiles/first-touch.json        what the last mount read first (hint)
//! volumes/<volumeID>/profiles/first-touch.pack        those bytes, in that order (hint)
//! ```
//! A UUID used again gets the next generation; the newest generation's `released` marker stays
//! as a tombstone so that numbers never repeat, and a cleaner working from an old view of one
//! generation can never touch the objects of a newer one.
//! ```text
//! ```
//! State changes are objects created once, never overwritten, so they work on every store.
//! Manifests form one chain per volume: manifest `n + 1` can only be created once (create-only),
//! so two writers racing to extend the chain never both win, and the loser reads the winner's term
//! to learn whether it was fenced. Names are the zero-padded sequence number so that the
//! lexicographically greatest name is the newest: heads are found by listing, never by overwriting
//! a "head" object (LocalFileSystem supports only create-if-absent).

use object_store::path::Path;

use crate::names::{RelPath, VolumeId};

pub const VOLUMES: &str = "volumes";

pub fn volume_root(volume: &VolumeId) -> Path {
    Path::from_iter(std::iter::once(VOLUMES).chain(volume.components()))
}

fn volume_child<'a>(volume: &'a VolumeId, folder: &'a str) -> impl Iterator<Item = &'a str> {
    std::iter::once(VOLUMES)
        .chain(volume.components())
        .chain(std::iter::once(folder))
}

pub fn file_key(volume: &VolumeId, path: &RelPath) -> Path {
    Path::from_iter(volume_child(volume, "files").chain(path.components()))
}

/// Where a file's bytes are: the key its manifest names (already validated as a relative path),
/// else where the volume layout puts it.
pub fn object_of(volume: &VolumeId, path: &RelPath, own_key: Option<&str>) -> Path {
    own_key.map_or_else(|| file_key(volume, path), Path::from)
}

pub fn files_dir(volume: &VolumeId) -> Path {
    Path::from_iter(volume_child(volume, "files"))
}

pub fn manifests_dir(volume: &VolumeId) -> Path {
    Path::from_iter(volume_child(volume, "manifests"))
}

/// The volume's first-touch profile (see `warm`): what the last mount read first.
pub fn first_touch_key(volume: &VolumeId) -> Path {
    Path::from_iter(volume_child(volume, "profiles").chain(std::iter::once("first-touch.json")))
}

/// The bytes the volume's first-touch profile names, in its order (see `warm`).
pub fn first_touch_pack_key(volume: &VolumeId) -> Path {
    Path::from_iter(volume_child(volume, "profiles").chain(std::iter::once("first-touch.pack")))
}

pub fn manifest_key(volume: &VolumeId, name: &str) -> Path {
    Path::from_iter(volume_child(volume, "manifests").chain(std::iter::once(name)))
}

pub fn snapshots_dir(volume: &VolumeId) -> Path {
    Path::from_iter(volume_child(volume, "snapshots"))
}

/// Kinds of a snapshot generation's state markers.
pub const OUTCOME: &str = "outcome";
pub const RELEASED: &str = "released";

/// Every object of one snapshot UUID, all its generations.
pub fn snapshot_dir(volume: &VolumeId, uuid: &str) -> Path {
    Path::from_iter(volume_child(volume, "snapshots").chain(std::iter::once(uuid)))
}

/// The record of one generation of a snapshot UUID.
pub fn snapshot_key(volume: &VolumeId, uuid: &str, generation: u64) -> Path {
    snapshot_marker_key(volume, uuid, generation, "json")
}

pub fn snapshot_marker_key(volume: &VolumeId, uuid: &str, generation: u64, marker: &str) -> Path {
    let name = format!("{generation:020}.{marker}");
    Path::from_iter(volume_child(volume, "snapshots").chain([uuid, name.as_str()]))
}

/// The (generation, kind) of an object in a snapshot UUID's folder.
pub fn parse_snapshot_object(name: &str) -> Option<(u64, &str)> {
    let (generation, kind) = name.split_once('.')?;
    if generation.len() != 20 {
        return None;
    }
    Some((generation.parse().ok()?, kind))
}

/// GC's tombstone for a manifest it is about to delete; snapshot creation backs off from it.
pub const COLLECTING_SUFFIX: &str = ".collecting";

pub fn collecting_key(volume: &VolumeId, manifest_name: &str) -> Path {
    let name = format!("{manifest_name}{COLLECTING_SUFFIX}");
    Path::from_iter(volume_child(volume, "manifests").chain(std::iter::once(name.as_str())))
}

/// `00000000000000000017.json` for sequence 17.
pub fn manifest_name(seq: u64) -> String {
    format!("{seq:020}.json")
}

/// The sequence number of a manifest name, or `None` when the name is not one of ours.
pub fn parse_manifest_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".json")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// A continuous backup location is a store of its own, laid out as the engine's seed says:
/// ```text
/// files/<relative path>          the engine's files, hard-linked or uploaded, never rewritten
/// metadata.<n>.dat               generation n (n = 1, 2, ...), written create-only
/// ```
pub const BACKUP_FILES: &str = "files";

/// Where a backed-up file's bytes go, as the relative path a generation records (see
/// [`object_of`]): `files/<path>`, or `files/<path>.g<generation>` when a different file of that
/// name was backed up before (names can be reused, objects are never rewritten).
pub fn backup_object(path: &RelPath, replaces_older: Option<u64>) -> String {
    match replaces_older {
        None => format!("{BACKUP_FILES}/{path}"),
        Some(generation) => format!("{BACKUP_FILES}/{path}.g{generation}"),
    }
}

/// `metadata.7.dat` for generation 7, the name Magma's continuous backup gives its metadata.
pub fn generation_name(generation: u64) -> String {
    format!("metadata.{generation}.dat")
}

/// The generation of a `metadata.<n>.dat` name (canonical digits only, so no two names alias).
pub fn parse_generation_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("metadata.")?.strip_suffix(".dat")?;
    let canonical = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
    canonical.then(|| digits.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_nest_under_the_volume() {
        let v = VolumeId::parse("kv/b1/kvstore-3").unwrap();
        let p = RelPath::parse("dir/log.0001").unwrap();
        assert_eq!(file_key(&v, &p).as_ref(), "volumes/kv/b1/kvstore-3/files/dir/log.0001");
        assert_eq!(
            manifest_key(&v, &manifest_name(7)).as_ref(),
            "volumes/kv/b1/kvstore-3/manifests/00000000000000000007.json"
        );
        assert_eq!(
            snapshot_key(&v, "s1", 2).as_ref(),
            "volumes/kv/b1/kvstore-3/snapshots/s1/00000000000000000002.json"
        );
        assert_eq!(
            parse_snapshot_object("00000000000000000002.released"),
            Some((2, "released"))
        );
    }

    #[test]
    fn generation_names_are_canonical() {
        assert_eq!(parse_generation_name(&generation_name(12)), Some(12));
        for bad in [
            "metadata.012.dat",
            "metadata.0.dat",
            "metadata..dat",
            "metadata.1x.dat",
            "metadata.1.json",
        ] {
            assert_eq!(parse_generation_name(bad), None, "{bad}");
        }
        let p = RelPath::parse("seqIndex/log.1").unwrap();
        assert_eq!(backup_object(&p, None), "files/seqIndex/log.1");
        assert_eq!(
            object_of(&VolumeId::parse("v").unwrap(), &p, Some(&backup_object(&p, Some(3)))).as_ref(),
            "files/seqIndex/log.1.g3"
        );
    }

    #[test]
    fn manifest_names_round_trip_and_sort() {
        assert_eq!(parse_manifest_name(&manifest_name(17)), Some(17));
        assert!(manifest_name(9) < manifest_name(10));
        assert!(manifest_name(99) < manifest_name(100));
        assert_eq!(parse_manifest_name("garbage.json"), None);
        assert_eq!(parse_manifest_name("17.json"), None);
        assert_eq!(parse_manifest_name("+0000000000000000017.json"), None);
    }
}
