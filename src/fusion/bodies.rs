//! kv_engine's current Fusion request bodies (opcodes 0x70-0x78), validated as
//! `mcbp_validators.cc` validates them and turned into what lazysnap runs. Error texts are
//! kv_engine's own (`get_fusion_storage_snapshot_validator: Missing bucket_uuid`), so a caller
//! that knows kv_engine knows what went wrong. What kv_engine takes from its bucket rather than
//! the body (the log store, the bucket UUID, the vbucket of the header, the kvstore's folder)
//! comes in the envelope, [`KvEngineRequest`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::FusionError;
use crate::names::VolumeId;

/// One kv_engine request: its opcode, header vbucket and body, with what the bucket knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvEngineRequest {
    /// `0x70` to `0x78`, or the opcode's name (`GetFusionStorageSnapshot`).
    pub opcode: String,
    /// The bucket's log store URL.
    #[serde(alias = "logstore_uri")]
    pub store: String,
    /// The bucket's UUID: volumes are `kv/<bucket>/kvstore-<vb>`. Needed by 0x72-0x76.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// The header's vbucket, for 0x72-0x76.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vbucket: Option<u16>,
    /// The kvstore's local folder, which 0x75's uploader uploads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The request's value, as kv_engine takes it; absent for 0x73 and 0x76.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

/// What a request asks lazysnap to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvCall {
    /// 0x70: snapshot every volume or none, valid until `valid_till_s` (epoch seconds).
    SnapshotCreate {
        volumes: Vec<VolumeId>,
        snapshot_uuid: String,
        valid_till_s: u64,
    },
    /// 0x71: release the snapshot of every volume (one already gone succeeds).
    SnapshotRelease {
        volumes: Vec<VolumeId>,
        snapshot_uuid: String,
    },
    /// 0x72 `FusionGuestVolumes`: the vbucket's folder in the guests already mounted.
    MountFromGuests { volume: VolumeId, mount_paths: Vec<String> },
    /// 0x72 `FusionLogStore`: mount the volume at a snapshot.
    MountFromLogStore { volume: VolumeId, snapshot_uuid: String },
    /// 0x73: unmount the volume's mount, succeeding if there is none.
    Unmount { volume: VolumeId },
    /// 0x74: upload what is pending now; `reset` asks that the next upload send everything.
    Sync { volume: VolumeId, reset: bool },
    /// 0x75: start (or take over with a newer term) the volume's uploader.
    UploaderStart {
        volume: VolumeId,
        source: String,
        term: u64,
    },
    /// 0x76: stop the volume's uploader.
    UploaderStop { volume: VolumeId },
    /// 0x77: delete one namespace, `kv/<bucketUUID>`.
    DeleteNamespace { namespace: String },
    /// 0x78: the store's `kv/<uuid>` namespaces.
    Namespaces,
}

/// The opcodes by number and name.
const OPCODES: [(u8, &str); 9] = [
    (0x70, "GetFusionStorageSnapshot"),
    (0x71, "ReleaseFusionStorageSnapshot"),
    (0x72, "MountFusionVbucket"),
    (0x73, "UnmountFusionVbucket"),
    (0x74, "SyncFusionLogstore"),
    (0x75, "StartFusionUploader"),
    (0x76, "StopFusionUploader"),
    (0x77, "DeleteFusionNamespace"),
    (0x78, "GetFusionNamespaces"),
];

/// The opcode `text` names, by number (`0x70`, `112`) or name.
pub fn opcode(text: &str) -> Result<u8, FusionError> {
    let number = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16).ok(),
        None => text.parse::<u8>().ok(),
    };
    OPCODES
        .iter()
        .find(|(code, name)| Some(*code) == number || name.eq_ignore_ascii_case(text))
        .map(|(code, _)| *code)
        .ok_or_else(|| {
            let known: Vec<String> = OPCODES.iter().map(|(c, n)| format!("{c:#04x} {n}")).collect();
            FusionError::invalid(format!("opcode {text:?} is not a Fusion opcode ({})", known.join(", ")))
        })
}

/// Checks `req` as kv_engine would and says what to run.
pub fn translate(req: &KvEngineRequest) -> Result<KvCall, FusionError> {
    let code = opcode(&req.opcode)?;
    let takes_value = !matches!(code, 0x73 | 0x76);
    let body = match (&req.body, takes_value) {
        (Some(body), true) => Some(body),
        (None, true) => return Err(FusionError::invalid("Request must include value")),
        (Some(_), false) => return Err(FusionError::invalid("Request must not include value")),
        (None, false) => None,
    };
    match code {
        0x70 | 0x71 => {
            let v = Keys::of(body, validator(code))?;
            let snapshot_uuid = v.string("snapshot_uuid")?;
            let bucket = v.string("bucket_uuid")?;
            v.string("metadatastore_uri")?;
            v.string("metadatastore_auth_token")?;
            let vbuckets = v.vbucket_list()?;
            let valid_till_s = match code {
                0x70 => Some(v.unsigned("valid_till", "not positive integer")?),
                _ => None,
            };
            let volumes = vbuckets
                .iter()
                .map(|vb| volume_of(&bucket, *vb))
                .collect::<Result<Vec<_>, _>>()?;
            match valid_till_s {
                Some(valid_till_s) => Ok(KvCall::SnapshotCreate {
                    volumes,
                    snapshot_uuid,
                    valid_till_s,
                }),
                None => Ok(KvCall::SnapshotRelease { volumes, snapshot_uuid }),
            }
        }
        0x72 => mount(req, body.expect("0x72 takes a value")),
        0x73 => Ok(KvCall::Unmount {
            volume: header_volume(req)?,
        }),
        0x74 => {
            let v = Keys::of(body, validator(code))?;
            let reset = v.boolean("reset")?;
            Ok(KvCall::Sync {
                volume: header_volume(req)?,
                reset,
            })
        }
        0x75 => {
            let v = Keys::of(body, validator(code))?;
            let term = v.string("term")?;
            let term = term
                .parse::<u64>()
                .ok()
                .filter(|_| term.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| v.error("term is not a valid number"))?;
            let source = req.source.clone().ok_or_else(|| {
                FusionError::invalid("StartFusionUploader needs the kvstore's folder: give `source` beside the body")
            })?;
            Ok(KvCall::UploaderStart {
                volume: header_volume(req)?,
                source,
                term,
            })
        }
        0x76 => Ok(KvCall::UploaderStop {
            volume: header_volume(req)?,
        }),
        0x77 => {
            let v = Keys::of_format(body, validator(code))?;
            v.string("logstore_uri")?;
            v.string("metadatastore_uri")?;
            v.string("metadatastore_auth_token")?;
            let namespace = v.string("namespace")?;
            match namespace.split('/').collect::<Vec<_>>().as_slice() {
                ["kv", uuid] if VolumeId::parse(&namespace).is_ok() && !uuid.is_empty() => {
                    Ok(KvCall::DeleteNamespace { namespace })
                }
                _ => Err(v.error("namespace must be in format 'kv/bucketUUID'")),
            }
        }
        0x78 => {
            let v = Keys::of_format(body, validator(code))?;
            v.string("metadatastore_uri")?;
            v.string("metadatastore_auth_token")?;
            Ok(KvCall::Namespaces)
        }
        _ => unreachable!("opcode() knows only these"),
    }
}

fn validator(code: u8) -> &'static str {
    match code {
        0x70 => "get_fusion_storage_snapshot_validator",
        0x71 => "release_fusion_storage_snapshot_validator",
        0x74 => "sync_fusion_logstore_validator",
        0x75 => "start_fusion_uploader_validator",
        0x77 => "delete_fusion_namespace_validator",
        0x78 => "get_fusion_namespaces_validator",
        _ => "",
    }
}

/// 0x72: keys allowed by `source` (anything else is refused before missing keys are looked for).
fn mount(req: &KvEngineRequest, body: &Value) -> Result<KvCall, FusionError> {
    let v = Keys::of(Some(body), "")?;
    let source = match v.object.get("source") {
        None => "FusionGuestVolumes",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(FusionError::invalid("VBucketSnapshotSource: not a string")),
    };
    let allowed: &[&str] = match (source, v.object.contains_key("source")) {
        ("FusionGuestVolumes", false) => &["mountPaths"],
        ("FusionGuestVolumes", true) => &["source", "mountPaths"],
        ("FusionLogStore", _) => &["source", "snapshotUUID"],
        ("Local", _) => return Err(FusionError::invalid("Local source not supported")),
        (other, _) => return Err(FusionError::invalid(format!("VBucketSnapshotSource: unknown: {other}"))),
    };
    if let Some(key) = v.object.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(FusionError::invalid(format!("Unexpected key: {key}")));
    }
    let volume = header_volume(req)?;
    if source == "FusionLogStore" {
        let snapshot_uuid = match v.object.get("snapshotUUID") {
            None => return Err(FusionError::invalid("Missing snapshotUUID")),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(FusionError::invalid("snapshotUUID not a string")),
        };
        return Ok(KvCall::MountFromLogStore { volume, snapshot_uuid });
    }
    let paths = match v.object.get("mountPaths") {
        None => return Err(FusionError::invalid("Missing mountPaths")),
        Some(Value::Array(paths)) => paths,
        Some(_) => return Err(FusionError::invalid("mountPaths not an array")),
    };
    let mount_paths = paths
        .iter()
        .map(|p| {
            p.as_str().map(str::to_string).ok_or_else(|| {
                FusionError::invalid(format!("Invalid json '{body}' mountPaths holds {p}, not a string"))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(KvCall::MountFromGuests { volume, mount_paths })
}

/// The volume of the header's vbucket in the envelope's bucket.
fn header_volume(req: &KvEngineRequest) -> Result<VolumeId, FusionError> {
    let bucket = req.bucket.as_deref().ok_or_else(|| {
        FusionError::invalid(format!(
            "opcode {} acts on one vbucket of a bucket: give `bucket`",
            req.opcode
        ))
    })?;
    let vbucket = req
        .vbucket
        .ok_or_else(|| FusionError::invalid(format!("opcode {} acts on one vbucket: give `vbucket`", req.opcode)))?;
    volume_of(bucket, vbucket)
}

/// `kv/<bucketUUID>/kvstore-<vb>`.
pub fn volume_of(bucket: &str, vbucket: u16) -> Result<VolumeId, FusionError> {
    VolumeId::parse(&format!("kv/{bucket}/kvstore-{vbucket}"))
        .map_err(|e| FusionError::invalid(format!("bucket UUID {bucket:?} cannot name a volume: {e}")))
}

/// A body's keys, looked up in kv_engine's order with its messages.
struct Keys<'a> {
    object: &'a Map<String, Value>,
    prefix: &'static str,
}

impl<'a> Keys<'a> {
    /// A body that must be a JSON object (`Invalid json '<value>' <what>` otherwise).
    fn of(body: Option<&'a Value>, prefix: &'static str) -> Result<Keys<'a>, FusionError> {
        Self::object(body, prefix, |body| format!("Invalid json '{body}' not an object"))
    }

    /// The same, for the validators that say `Invalid json format <what>`.
    fn of_format(body: Option<&'a Value>, prefix: &'static str) -> Result<Keys<'a>, FusionError> {
        Self::object(body, prefix, |_| "Invalid json format: not an object".to_string())
    }

    fn object(
        body: Option<&'a Value>,
        prefix: &'static str,
        invalid: impl Fn(&Value) -> String,
    ) -> Result<Keys<'a>, FusionError> {
        let body = body.expect("checked by translate");
        match body.as_object() {
            Some(object) => Ok(Keys { object, prefix }),
            None => Err(prefixed(prefix, &invalid(body))),
        }
    }

    fn error(&self, message: &str) -> FusionError {
        prefixed(self.prefix, message)
    }

    fn get(&self, key: &str) -> Result<&'a Value, FusionError> {
        self.object
            .get(key)
            .ok_or_else(|| self.error(&format!("Missing {key}")))
    }

    fn string(&self, key: &str) -> Result<String, FusionError> {
        match self.get(key)? {
            Value::String(s) => Ok(s.clone()),
            _ => Err(self.error(&format!("{key} not string"))),
        }
    }

    fn boolean(&self, key: &str) -> Result<bool, FusionError> {
        self.get(key)?
            .as_bool()
            .ok_or_else(|| self.error(&format!("{key} not boolean")))
    }

    fn unsigned(&self, key: &str, wrong: &str) -> Result<u64, FusionError> {
        self.get(key)?
            .as_u64()
            .ok_or_else(|| self.error(&format!("{key} {wrong}")))
    }

    fn vbucket_list(&self) -> Result<Vec<u16>, FusionError> {
        let Value::Array(list) = self.get("vbucket_list")? else {
            return Err(self.error("vbucket_list must be an array"));
        };
        if list.is_empty() {
            return Err(self.error("vbucket_list must not be empty"));
        }
        list.iter()
            .map(|vb| {
                let vb = vb
                    .as_u64()
                    .ok_or_else(|| self.error("vbucket_list must only contain unsigned integer values"))?;
                u16::try_from(vb).map_err(|_| self.error("vbucket_list contains vbucket outside valid range"))
            })
            .collect()
    }
}

/// A validator's message, led by its name as kv_engine leads it (0x72's have none).
fn prefixed(prefix: &str, message: &str) -> FusionError {
    match prefix {
        "" => FusionError::invalid(message),
        prefix => FusionError::invalid(format!("{prefix}: {message}")),
    }
}

#[cfg(test)]
mod tests;
