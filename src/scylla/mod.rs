//! ScyllaDB backups as lazy views: manifests are ingested into the index (one row per sstable,
//! like ScyllaDB's `snapshot_sstables`, plus each table's tablet layout), and a view picks the
//! sstables of a snapshot's table by datacenter, rack, node, tablet or token range. A view is an
//! ordinary manifest of pinned foreign objects, so mounts and restore jobs show it unchanged.

pub mod tablets;
