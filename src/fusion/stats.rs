//! The `fusion` stats group: `fusion <group> [<vbid>|detail]`, each answering one JSON value with
//! kv_engine's field names. The key is checked as `EPBucket::doFusionStats` checks it; the values
//! are filled by the daemon from what lazysnap knows (uploaders, manifests, guests, mounts).

use serde::{Deserialize, Serialize};

use super::FusionError;

/// `fusion_stats`: one key of the `fusion` group for a bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusionStatsRequest {
    pub key: String,
    pub bucket: String,
    /// The bucket's log store; `sync_info` and `uploader` read it, `detail` lists its vbuckets.
    #[serde(default)]
    pub store: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatGroup {
    /// `{logSeqno, logTerm}` of the newest durable manifest.
    SyncInfo,
    /// The guest paths still mounted and not yet local.
    ActiveGuestVolumes,
    /// The node's uploader of the vbucket.
    Uploader,
    /// `{completed_bytes, total_bytes}` of the vbucket's guest.
    Migration,
    /// `{is_mounted}`.
    IsMounted,
}

/// Which vbuckets a stat answers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatTarget {
    /// No third part: all vbuckets as one value (only `active_guest_volumes`).
    Aggregate,
    Vbucket(u16),
    /// `{"vb_<id>": <value>}` for every vbucket.
    Detail,
}

const GROUPS: [(&str, StatGroup); 5] = [
    ("sync_info", StatGroup::SyncInfo),
    ("active_guest_volumes", StatGroup::ActiveGuestVolumes),
    ("uploader", StatGroup::Uploader),
    ("migration", StatGroup::Migration),
    ("is_mounted", StatGroup::IsMounted),
];

/// Reads `fusion <group> [<vbid>|detail]` (the leading `fusion` may be left out).
pub fn parse_key(key: &str) -> Result<(StatGroup, StatTarget), FusionError> {
    let mut parts: Vec<&str> = key.split_whitespace().collect();
    if parts.first() != Some(&"fusion") {
        parts.insert(0, "fusion");
    }
    if !(2..=3).contains(&parts.len()) {
        return Err(FusionError::invalid(format!(
            "stat key {key:?} is not 'fusion <group> [<vbid>|detail]'"
        )));
    }
    let group = GROUPS
        .iter()
        .find(|(name, _)| *name == parts[1])
        .map(|(_, group)| *group)
        .ok_or_else(|| FusionError::invalid("Fusion STAT command has invalid stat group"))?;
    let target = match parts.get(2) {
        None if group == StatGroup::ActiveGuestVolumes => StatTarget::Aggregate,
        None => return Err(FusionError::invalid("Fusion stat group aggregate is not supported")),
        Some(&"detail") => StatTarget::Detail,
        Some(vb) if vb.bytes().all(|b| b.is_ascii_digit()) => vb
            .parse::<u16>()
            .map(StatTarget::Vbucket)
            .map_err(|_| FusionError::invalid("Fusion STAT command has invalid vbId"))?,
        Some(_) => return Err(FusionError::invalid("Fusion STAT command has invalid argument")),
    };
    Ok((group, target))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncInfo {
    #[serde(rename = "logSeqno")]
    pub log_seqno: u64,
    #[serde(rename = "logTerm")]
    pub log_term: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploaderStat {
    /// `enabled` or `disabled` (lazysnap starts and stops an uploader at once).
    pub state: String,
    /// 0 when stopped.
    pub term: u64,
    /// Bytes in the engine's folder not uploaded yet.
    pub snapshot_pending_bytes: u64,
    pub checkpoint_pending_bytes: u64,
    /// Bytes of the volume's data files in the store.
    pub logstore_data_size: u64,
    /// Of those, bytes no manifest in force names (what GC would delete).
    pub logstore_garbage_size: u64,
    pub logstore_fragmentation_ratio: f64,
    pub logstore_pending_delete_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    pub completed_bytes: u64,
    pub total_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsMounted {
    pub is_mounted: bool,
}

/// The `detail` form: one entry per vbucket, `vb_<id>`.
pub fn detail(values: impl IntoIterator<Item = (u16, serde_json::Value)>) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = values
        .into_iter()
        .map(|(vb, value)| (format!("vb_{vb}"), value))
        .collect();
    serde_json::Value::Object(map)
}

/// The vbucket a volume ID `kv/<bucket>/kvstore-<vb>` of `bucket` names.
pub fn vbucket_of(bucket: &str, volume: &str) -> Option<u16> {
    volume
        .strip_prefix("kv/")?
        .strip_prefix(bucket)?
        .strip_prefix("/kvstore-")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_keys_are_read_as_kv_engine_reads_them() {
        assert_eq!(
            parse_key("fusion migration 12").unwrap(),
            (StatGroup::Migration, StatTarget::Vbucket(12))
        );
        assert_eq!(
            parse_key(" fusion uploader detail ").unwrap(),
            (StatGroup::Uploader, StatTarget::Detail)
        );
        assert_eq!(
            parse_key("active_guest_volumes").unwrap(),
            (StatGroup::ActiveGuestVolumes, StatTarget::Aggregate)
        );
        for (key, expected) in [
            ("fusion", "is not"),
            ("fusion migration 1 2", "is not"),
            ("fusion nothing 1", "invalid stat group"),
            ("fusion migration 65536", "invalid vbId"),
            ("fusion migration -1", "invalid argument"),
            ("fusion migration", "aggregate is not supported"),
        ] {
            let error = parse_key(key).unwrap_err().0;
            assert!(error.contains(expected), "{key}: {error}");
        }
    }

    #[test]
    fn volumes_name_their_vbucket_only_in_their_bucket() {
        assert_eq!(vbucket_of("b1", "kv/b1/kvstore-17"), Some(17));
        assert_eq!(vbucket_of("b1", "kv/b12/kvstore-17"), None);
        assert_eq!(vbucket_of("b1", "kv/b1/other"), None);
        assert_eq!(detail([(3, serde_json::json!(1))]), serde_json::json!({"vb_3": 1}));
    }
}
