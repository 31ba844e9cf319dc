//! ns_server's AccelerationPlan (`prepareRebalance`, `prepareSnapshotRestore`): which volumes each
//! node receives, at which manifest, pinned by which snapshot. A plan is validated whole before
//! anything is mounted, and one node's volumes are split into guest volumes the way
//! `accelerator-cli split-manifest` splits them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::FusionError;
use crate::names::VolumeId;

/// A plan as ns_server writes it. Keys it may add later are ignored, as the accelerator does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    #[serde(rename = "planUUID")]
    pub plan_uuid: String,
    pub nodes: BTreeMap<String, Vec<PlannedVolume>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_size: Option<u64>,
}

/// One volume a node receives: what `0x70` answered for it, with its sizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedVolume {
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    pub log_manifest_name: String,
    #[serde(rename = "snapshotUUID")]
    pub snapshot_uuid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<u64>,
    /// Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_till: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default)]
    pub logical_size: u64,
    pub storage_size: u64,
    /// A restore plan: the volume the data is restored as (`kv/<newBucketUUID>/kvstore-<vb>`).
    #[serde(rename = "dstVolumeID", default, skip_serializing_if = "Option::is_none")]
    pub dst_volume_id: Option<String>,
}

/// Whether the plan moves vbuckets (rebalance) or restores them under new IDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanKind {
    Rebalance,
    Restore,
}

/// A volume of one guest: where its files come from and under which ID they are shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestVolume {
    pub volume: VolumeId,
    pub manifest: String,
    pub snapshot: String,
    pub shown_as: VolumeId,
    pub storage_size: u64,
}

/// How to split a node's volumes: at most `parts` guests, each but the last holding at least
/// `min_part_size` bytes of storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub parts: usize,
    pub min_part_size: u64,
}

impl Plan {
    /// Reads a plan, naming the first thing wrong in it.
    pub fn parse(text: &str) -> Result<Plan, FusionError> {
        // The path names the key at fault (`nodes.ns_1@a[31].storageSize`), not just its type.
        let plan: Plan =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(text)).map_err(|e| {
                FusionError::invalid(format!(
                    "the plan is not an AccelerationPlan: {}: {}",
                    e.path(),
                    e.inner()
                ))
            })?;
        plan.check_uuid()?;
        Ok(plan)
    }

    fn check_uuid(&self) -> Result<(), FusionError> {
        // It names a folder (`<root>/<planUUID>/guest<i>`): nothing that could leave it.
        let ok = !self.plan_uuid.is_empty()
            && self.plan_uuid.len() <= 128
            && self
                .plan_uuid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        match ok {
            true => Ok(()),
            false => Err(FusionError::invalid(format!(
                "planUUID {:?} must be 1 to 128 letters, digits, '-' or '_'",
                self.plan_uuid
            ))),
        }
    }

    /// The volumes `node` receives, each checked: IDs well formed and named once, sizes given,
    /// snapshots not expired at `now_ms`, and `dstVolumeID` on every volume of a restore plan and
    /// on none of a rebalance plan.
    pub fn volumes_of(&self, node: &str, kind: PlanKind, now_ms: u64) -> Result<Vec<GuestVolume>, FusionError> {
        let Some(planned) = self.nodes.get(node) else {
            let known: Vec<&str> = self.nodes.keys().map(String::as_str).collect();
            return Err(FusionError::invalid(format!(
                "node {node} receives nothing in plan {} (its nodes: {})",
                self.plan_uuid,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        };
        if planned.is_empty() {
            return Err(FusionError::invalid(format!(
                "node {node} has an empty volume list in plan {}",
                self.plan_uuid
            )));
        }
        let mut sources = BTreeSet::new();
        let mut shown = BTreeSet::new();
        planned
            .iter()
            .map(|v| {
                let volume = VolumeId::parse(&v.volume_id)
                    .map_err(|e| FusionError::invalid(format!("plan {}: volumeID: {e}", self.plan_uuid)))?;
                let shown_as = match (kind, &v.dst_volume_id) {
                    (PlanKind::Restore, Some(dst)) => VolumeId::parse(dst)
                        .map_err(|e| FusionError::invalid(format!("plan {}: dstVolumeID: {e}", self.plan_uuid)))?,
                    (PlanKind::Restore, None) => {
                        return Err(FusionError::invalid(format!(
                            "volume {volume} of a restore plan has no dstVolumeID"
                        )))
                    }
                    (PlanKind::Rebalance, Some(_)) => {
                        return Err(FusionError::invalid(format!(
                        "volume {volume} has a dstVolumeID: plan {} restores a snapshot (mount it as a restore plan)",
                        self.plan_uuid
                    )))
                    }
                    (PlanKind::Rebalance, None) => volume.clone(),
                };
                if !sources.insert(volume.clone()) {
                    return Err(FusionError::invalid(format!(
                        "volume {volume} is named twice for node {node}"
                    )));
                }
                if !shown.insert(shown_as.clone()) {
                    return Err(FusionError::invalid(format!(
                        "dstVolumeID {shown_as} is named twice for node {node}"
                    )));
                }
                if let Some(till) = v.valid_till.filter(|till| *till <= now_ms) {
                    return Err(FusionError::invalid(format!(
                        "the snapshot {} of volume {volume} expired at {} (validTill)",
                        v.snapshot_uuid,
                        crate::time::format_time(till)
                    )));
                }
                Ok(GuestVolume {
                    volume,
                    manifest: v.log_manifest_name.clone(),
                    snapshot: v.snapshot_uuid.clone(),
                    shown_as,
                    storage_size: v.storage_size,
                })
            })
            .collect()
    }
}

/// Splits `volumes`, in plan order, into at most `split.parts` guests of about equal storage
/// size: a guest is closed once it reaches the larger of an even share and the minimum, and the
/// last takes what is left. Every volume is in exactly one guest.
pub fn split(volumes: Vec<GuestVolume>, split: Split) -> Result<Vec<Vec<GuestVolume>>, FusionError> {
    if split.parts == 0 {
        return Err(FusionError::invalid("--parts must be at least 1"));
    }
    let total: u64 = volumes.iter().map(|v| v.storage_size).sum();
    let share = total.div_ceil(split.parts as u64).max(split.min_part_size).max(1);
    let mut guests: Vec<Vec<GuestVolume>> = vec![Vec::new()];
    let mut filled = 0u64;
    for volume in volumes {
        if filled >= share && guests.len() < split.parts {
            guests.push(Vec::new());
            filled = 0;
        }
        filled += volume.storage_size;
        guests.last_mut().expect("one guest at least").push(volume);
    }
    Ok(guests)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(volumes: &[(&str, u64)], restore: bool) -> String {
        let volumes: Vec<serde_json::Value> = volumes
            .iter()
            .map(|(vb, size)| {
                let mut v = serde_json::json!({
                    "volumeID": format!("kv/b1/kvstore-{vb}"),
                    "logManifestName": "00000000000000000001.json",
                    "snapshotUUID": "p1:b1",
                    "createdAt": 1, "validTill": 4_000_000_000_000u64, "version": 1,
                    "logicalSize": size, "storageSize": size,
                    "futureKey": true,
                });
                if restore {
                    v["dstVolumeID"] = format!("kv/b2/kvstore-{vb}").into();
                }
                v
            })
            .collect();
        serde_json::json!({"planUUID": "p1", "nodes": {"ns_1@a": volumes, "ns_1@b": []}, "storageSize": 1}).to_string()
    }

    #[test]
    fn a_node_gets_its_volumes_and_every_mistake_is_named() {
        let text = plan(&[("0", 10), ("1", 20)], false);
        let volumes = Plan::parse(&text)
            .unwrap()
            .volumes_of("ns_1@a", PlanKind::Rebalance, 5)
            .unwrap();
        assert_eq!(volumes.len(), 2);
        assert_eq!(volumes[1].shown_as.as_str(), "kv/b1/kvstore-1");
        let plan_of = |text: &str| Plan::parse(text).unwrap();
        let error = |r: Result<Vec<GuestVolume>, FusionError>| r.unwrap_err().to_string();
        assert!(error(plan_of(&text).volumes_of("ns_1@z", PlanKind::Rebalance, 5)).contains("ns_1@a, ns_1@b"));
        assert!(error(plan_of(&text).volumes_of("ns_1@b", PlanKind::Rebalance, 5)).contains("empty"));
        assert!(error(plan_of(&text).volumes_of("ns_1@a", PlanKind::Restore, 5)).contains("no dstVolumeID"));
        assert!(error(plan_of(&text).volumes_of("ns_1@a", PlanKind::Rebalance, 4_000_000_000_000)).contains("expired"));
        let restore = plan(&[("0", 10)], true);
        let shown = plan_of(&restore).volumes_of("ns_1@a", PlanKind::Restore, 5).unwrap();
        assert_eq!(shown[0].shown_as.as_str(), "kv/b2/kvstore-0");
        assert!(error(plan_of(&restore).volumes_of("ns_1@a", PlanKind::Rebalance, 5)).contains("dstVolumeID"));
        let twice = plan(&[("0", 10), ("0", 10)], false);
        assert!(error(plan_of(&twice).volumes_of("ns_1@a", PlanKind::Rebalance, 5)).contains("twice"));
        let bad_id = text.replace("kv/b1/kvstore-0", "kv/../x");
        assert!(error(plan_of(&bad_id).volumes_of("ns_1@a", PlanKind::Rebalance, 5)).contains("volumeID"));
        for bad in [
            text.replace("\"planUUID\":\"p1\"", "\"planUUID\":\"../p\""),
            text.replace("\"storageSize\":10", "\"storageSize\":\"10\""),
            text.replace("logManifestName", "manifest"),
            "[]".to_string(),
        ] {
            assert!(Plan::parse(&bad).is_err(), "{bad}");
        }
    }

    fn sized(sizes: &[u64]) -> Vec<GuestVolume> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, size)| GuestVolume {
                volume: VolumeId::parse(&format!("kv/b/kvstore-{i}")).unwrap(),
                manifest: "m".into(),
                snapshot: "s".into(),
                shown_as: VolumeId::parse(&format!("kv/b/kvstore-{i}")).unwrap(),
                storage_size: *size,
            })
            .collect()
    }

    fn shape(guests: &[Vec<GuestVolume>]) -> Vec<u64> {
        guests.iter().map(|g| g.iter().map(|v| v.storage_size).sum()).collect()
    }

    #[test]
    fn volumes_split_into_at_most_n_guests_each_but_the_last_at_least_the_minimum() {
        let even = split(
            sized(&[4; 16]),
            Split {
                parts: 4,
                min_part_size: 0,
            },
        )
        .unwrap();
        assert_eq!(shape(&even), vec![16, 16, 16, 16]);
        let floor = split(
            sized(&[4; 16]),
            Split {
                parts: 4,
                min_part_size: 24,
            },
        )
        .unwrap();
        assert_eq!(shape(&floor), vec![24, 24, 16]);
        let one = split(
            sized(&[4; 3]),
            Split {
                parts: 8,
                min_part_size: 0,
            },
        )
        .unwrap();
        assert_eq!(one.len(), 3, "no empty guests");
        assert!(split(
            sized(&[1]),
            Split {
                parts: 0,
                min_part_size: 0
            }
        )
        .is_err());
        proptest::proptest!(|(sizes in proptest::collection::vec(0u64..1000, 1..200), parts in 1usize..10, min in 0u64..5000)| {
            let volumes = sized(&sizes);
            let guests = split(volumes.clone(), Split { parts, min_part_size: min }).unwrap();
            proptest::prop_assert!(guests.len() <= parts);
            proptest::prop_assert!(guests.iter().all(|g| !g.is_empty()));
            let sizes = shape(&guests);
            proptest::prop_assert!(sizes[..sizes.len() - 1].iter().all(|s| *s >= min));
            let flat: Vec<GuestVolume> = guests.into_iter().flatten().collect();
            proptest::prop_assert_eq!(flat, volumes, "every volume once, in plan order");
        });
    }
}
