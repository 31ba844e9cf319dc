//! Where lazysnap keeps things in a store. Only this file knows the key names.
//!
//! ```text
//! volumes/<volumeID>/files/<relative path>            immutable data objects
//! volumes/<volumeID>/manifests/<term>-<seq>.json      log manifests, written create-only
//! volumes/<volumeID>/snapshots/<snapshotUUID>.json    snapshot records
//! ```
//! Manifest names carry the uploader term and a sequence number, zero-padded so that the
//! lexicographically greatest name is the newest manifest of the newest term: heads are found by
//! listing, never by overwriting a "head" object (LocalFileSystem supports only create-if-absent).

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

pub fn files_dir(volume: &VolumeId) -> Path {
    Path::from_iter(volume_child(volume, "files"))
}

pub fn manifests_dir(volume: &VolumeId) -> Path {
    Path::from_iter(volume_child(volume, "manifests"))
}

pub fn manifest_key(volume: &VolumeId, name: &str) -> Path {
    Path::from_iter(volume_child(volume, "manifests").chain(std::iter::once(name)))
}

pub fn snapshots_dir(volume: &VolumeId) -> Path {
    Path::from_iter(volume_child(volume, "snapshots"))
}

pub fn snapshot_key(volume: &VolumeId, uuid: &str) -> Path {
    let name = format!("{uuid}.json");
    Path::from_iter(volume_child(volume, "snapshots").chain(std::iter::once(name.as_str())))
}

/// `00000000000000000003-00000000000000000017.json` for term 3, sequence 17.
pub fn manifest_name(term: u64, seq: u64) -> String {
    format!("{term:020}-{seq:020}.json")
}

/// The (term, seq) of a manifest name, or `None` when the name is not one of ours.
pub fn parse_manifest_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".json")?;
    let (term, seq) = stem.split_once('-')?;
    if term.len() != 20 || seq.len() != 20 {
        return None;
    }
    Some((term.parse().ok()?, seq.parse().ok()?))
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
            manifest_key(&v, &manifest_name(2, 7)).as_ref(),
            "volumes/kv/b1/kvstore-3/manifests/00000000000000000002-00000000000000000007.json"
        );
        assert_eq!(
            snapshot_key(&v, "s1").as_ref(),
            "volumes/kv/b1/kvstore-3/snapshots/s1.json"
        );
    }

    #[test]
    fn manifest_names_round_trip_and_sort() {
        assert_eq!(parse_manifest_name(&manifest_name(3, 17)), Some((3, 17)));
        assert!(manifest_name(2, 100) < manifest_name(3, 1));
        assert!(manifest_name(3, 9) < manifest_name(3, 10));
        assert_eq!(parse_manifest_name("garbage.json"), None);
        assert_eq!(parse_manifest_name("1-2.json"), None);
    }
}
