use serde_json::json;

use super::*;

fn request(opcode: &str, body: Option<Value>) -> KvEngineRequest {
    KvEngineRequest {
        opcode: opcode.into(),
        store: "file:///s".into(),
        bucket: Some("b1".into()),
        vbucket: Some(7),
        source: Some("/data/kvstore-7".into()),
        body,
    }
}

fn call(opcode: &str, body: Value) -> Result<KvCall, FusionError> {
    translate(&request(opcode, Some(body)))
}

fn error(opcode: &str, body: Value) -> String {
    call(opcode, body).unwrap_err().0
}

fn snapshot_body() -> Value {
    json!({"snapshot_uuid": "u1", "bucket_uuid": "b1", "metadatastore_uri": "chronicle://x",
           "metadatastore_auth_token": "t", "vbucket_list": [0, 3], "valid_till": 2_000_000_000u64,
           "ignored": true})
}

fn volumes(vbs: &[u16]) -> Vec<VolumeId> {
    vbs.iter().map(|vb| volume_of("b1", *vb).unwrap()).collect()
}

#[test]
fn bulk_snapshot_bodies_name_every_vbucket_of_the_bucket() {
    assert_eq!(
        call("0x70", snapshot_body()).unwrap(),
        KvCall::SnapshotCreate {
            volumes: volumes(&[0, 3]),
            snapshot_uuid: "u1".into(),
            valid_till_s: 2_000_000_000,
        }
    );
    let mut release = snapshot_body();
    release.as_object_mut().unwrap().remove("valid_till");
    assert_eq!(
        call("ReleaseFusionStorageSnapshot", release).unwrap(),
        KvCall::SnapshotRelease {
            volumes: volumes(&[0, 3]),
            snapshot_uuid: "u1".into()
        }
    );
}

#[test]
fn a_bad_snapshot_body_is_refused_with_kv_engines_words_for_the_first_bad_key() {
    let with = |key: &str, value: Option<Value>| {
        let mut body = snapshot_body();
        match value {
            Some(v) => body[key] = v,
            None => {
                body.as_object_mut().unwrap().remove(key);
            }
        }
        body
    };
    let p = "get_fusion_storage_snapshot_validator";
    for (body, expected) in [
        (with("snapshot_uuid", None), format!("{p}: Missing snapshot_uuid")),
        (
            with("snapshot_uuid", Some(json!(1))),
            format!("{p}: snapshot_uuid not string"),
        ),
        (with("bucket_uuid", None), format!("{p}: Missing bucket_uuid")),
        (
            with("metadatastore_uri", Some(json!([]))),
            format!("{p}: metadatastore_uri not string"),
        ),
        (
            with("metadatastore_auth_token", None),
            format!("{p}: Missing metadatastore_auth_token"),
        ),
        (with("vbucket_list", None), format!("{p}: Missing vbucket_list")),
        (
            with("vbucket_list", Some(json!(3))),
            format!("{p}: vbucket_list must be an array"),
        ),
        (
            with("vbucket_list", Some(json!([]))),
            format!("{p}: vbucket_list must not be empty"),
        ),
        (
            with("vbucket_list", Some(json!([1, -1]))),
            format!("{p}: vbucket_list must only contain unsigned integer values"),
        ),
        (
            with("vbucket_list", Some(json!([65536]))),
            format!("{p}: vbucket_list contains vbucket outside valid range"),
        ),
        (with("valid_till", None), format!("{p}: Missing valid_till")),
        (
            with("valid_till", Some(json!(-5))),
            format!("{p}: valid_till not positive integer"),
        ),
        (
            with("valid_till", Some(json!("5"))),
            format!("{p}: valid_till not positive integer"),
        ),
        (json!([1]), format!("{p}: Invalid json '[1]' not an object")),
    ] {
        assert_eq!(error("0x70", body), expected);
    }
    assert_eq!(
        error("0x71", json!({})),
        "release_fusion_storage_snapshot_validator: Missing snapshot_uuid"
    );
    assert!(error("0x70", with("bucket_uuid", Some(json!("../x")))).contains("cannot name a volume"));
}

#[test]
fn mount_bodies_take_a_source_and_refuse_keys_it_does_not_take() {
    assert_eq!(
        call("0x72", json!({"mountPaths": ["/g/0", "/g/1"]})).unwrap(),
        KvCall::MountFromGuests {
            volume: volume_of("b1", 7).unwrap(),
            mount_paths: vec!["/g/0".into(), "/g/1".into()]
        }
    );
    assert_eq!(
        call("0x72", json!({"source": "FusionGuestVolumes", "mountPaths": []})).unwrap(),
        KvCall::MountFromGuests {
            volume: volume_of("b1", 7).unwrap(),
            mount_paths: vec![]
        }
    );
    assert_eq!(
        call("0x72", json!({"source": "FusionLogStore", "snapshotUUID": "s1"})).unwrap(),
        KvCall::MountFromLogStore {
            volume: volume_of("b1", 7).unwrap(),
            snapshot_uuid: "s1".into()
        }
    );
    for (body, expected) in [
        (json!({"mountPaths": [], "x": 1}), "Unexpected key: x"),
        (
            json!({"source": "FusionLogStore", "mountPaths": []}),
            "Unexpected key: mountPaths",
        ),
        (json!({"snapshotUUID": "s"}), "Unexpected key: snapshotUUID"),
        (json!({"source": 3}), "VBucketSnapshotSource: not a string"),
        (json!({"source": "Nowhere"}), "VBucketSnapshotSource: unknown: Nowhere"),
        (json!({"source": "Local"}), "Local source not supported"),
        (json!({}), "Missing mountPaths"),
        (json!({"mountPaths": "/g"}), "mountPaths not an array"),
        (json!({"source": "FusionLogStore"}), "Missing snapshotUUID"),
        (
            json!({"source": "FusionLogStore", "snapshotUUID": 1}),
            "snapshotUUID not a string",
        ),
    ] {
        assert_eq!(error("0x72", body.clone()), expected, "{body}");
    }
    assert!(error("0x72", json!({"mountPaths": [1]})).starts_with("Invalid json"));
    let mut no_vbucket = request("0x72", Some(json!({"mountPaths": []})));
    no_vbucket.vbucket = None;
    assert!(translate(&no_vbucket).unwrap_err().0.contains("`vbucket`"));
}

#[test]
fn per_vbucket_opcodes_act_on_the_headers_vbucket() {
    let volume = volume_of("b1", 7).unwrap();
    assert_eq!(
        translate(&request("0x73", None)).unwrap(),
        KvCall::Unmount { volume: volume.clone() }
    );
    assert_eq!(
        translate(&request("0x73", Some(json!({})))).unwrap_err().0,
        "Request must not include value"
    );
    assert_eq!(
        call("0x74", json!({"reset": true})).unwrap(),
        KvCall::Sync {
            volume: volume.clone(),
            reset: true
        }
    );
    assert_eq!(
        translate(&request("0x74", None)).unwrap_err().0,
        "Request must include value"
    );
    assert_eq!(
        error("0x74", json!({})),
        "sync_fusion_logstore_validator: Missing reset"
    );
    assert_eq!(
        error("0x74", json!({"reset": "yes"})),
        "sync_fusion_logstore_validator: reset not boolean"
    );
    assert_eq!(
        call("0x75", json!({"term": "12"})).unwrap(),
        KvCall::UploaderStart {
            volume: volume.clone(),
            source: "/data/kvstore-7".into(),
            term: 12
        }
    );
    for (term, expected) in [
        (json!(12), "term not string"),
        (json!("abc123"), "term is not a valid number"),
        (json!("-1"), "term is not a valid number"),
        (json!("1".repeat(100)), "term is not a valid number"),
    ] {
        assert_eq!(
            error("0x75", json!({ "term": term })),
            format!("start_fusion_uploader_validator: {expected}")
        );
    }
    assert_eq!(
        translate(&request("StopFusionUploader", None)).unwrap(),
        KvCall::UploaderStop { volume }
    );
}

#[test]
fn namespace_bodies_delete_one_kv_namespace_and_list_them() {
    let delete = json!({"logstore_uri": "s3://b", "metadatastore_uri": "m", "metadatastore_auth_token": "t",
                        "namespace": "kv/b1"});
    assert_eq!(
        call("0x77", delete.clone()).unwrap(),
        KvCall::DeleteNamespace {
            namespace: "kv/b1".into()
        }
    );
    let p = "delete_fusion_namespace_validator";
    for (namespace, expected) in [
        (json!("kv"), format!("{p}: namespace must be in format 'kv/bucketUUID'")),
        (
            json!("kv/b1/x"),
            format!("{p}: namespace must be in format 'kv/bucketUUID'"),
        ),
        (
            json!("ks/b1"),
            format!("{p}: namespace must be in format 'kv/bucketUUID'"),
        ),
        (
            json!("kv/.."),
            format!("{p}: namespace must be in format 'kv/bucketUUID'"),
        ),
        (json!(["kv/b1"]), format!("{p}: namespace not string")),
    ] {
        let mut body = delete.clone();
        body["namespace"] = namespace;
        assert_eq!(error("0x77", body), expected);
    }
    assert_eq!(
        error("0x77", json!(1)),
        format!("{p}: Invalid json format: not an object")
    );
    assert_eq!(
        call(
            "0x78",
            json!({"metadatastore_uri": "m", "metadatastore_auth_token": "t"})
        )
        .unwrap(),
        KvCall::Namespaces
    );
    assert_eq!(
        error("0x78", json!({"metadatastore_uri": "m"})),
        "get_fusion_namespaces_validator: Missing metadatastore_auth_token"
    );
}

#[test]
fn opcodes_are_known_by_number_or_name() {
    assert_eq!(opcode("0x70").unwrap(), 0x70);
    assert_eq!(opcode("114").unwrap(), 0x72);
    assert_eq!(opcode("syncfusionlogstore").unwrap(), 0x74);
    let unknown = opcode("0x79").unwrap_err().0;
    assert!(unknown.contains("0x70 GetFusionStorageSnapshot"), "{unknown}");
}
