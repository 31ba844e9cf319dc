//! mountd's control API: one JSON request and one JSON answer per connection on a Unix socket that
//! only the daemon's owner (and root) may use. Operations and errors follow Fusion's protocol:
//! every failure carries a status (`Einval` bad input, `NotMyVbucket` unknown or foreign volume,
//! `Einternal` internal) and a message that names the input.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::catalog::Selector;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Mount volumes of one store; answers `{"mountPaths": [path]}`.
    Mount(MountRequest),
    /// Unmount a mount made by this daemon. `lazy` detaches it at once even while files are open;
    /// it goes away when they are closed.
    Umount {
        #[serde(rename = "mountPath")]
        mount_path: String,
        #[serde(default)]
        lazy: bool,
    },
    /// Start, pause, resume, cancel or ask about the hydration of a mount; answers its status.
    Hydrate(HydrateRequest),
    /// Every mount with its volumes and counters.
    Mounts,
    /// The daemon's pid, home, mounts and cache figures.
    Status,
    /// Unmount everything and exit.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountRequest {
    pub store: String,
    pub volumes: Vec<String>,
    #[serde(default = "latest")]
    pub selector: Selector,
    #[serde(default, rename = "mountPath", skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    /// Start hydrating the mount as soon as it is mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hydrate: Option<HydrateParams>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HydrateParams {
    /// Bytes per second at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<u64>,
    /// Unix milliseconds to finish by; default for snapshot mounts: the snapshot's validTill.
    #[serde(default, rename = "deadlineMs", skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HydrateAction {
    /// Start (or, when one runs, change its cap and deadline and resume it).
    Start,
    Pause,
    Resume,
    Cancel,
    #[default]
    Status,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HydrateRequest {
    #[serde(rename = "mountPath")]
    pub mount_path: String,
    #[serde(default)]
    pub action: HydrateAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<u64>,
    #[serde(default, rename = "deadlineMs", skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

fn latest() -> Selector {
    Selector::Latest
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Success,
    Einval,
    NotMyVbucket,
    Einternal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn ok(result: serde_json::Value) -> Response {
        Response {
            status: Status::Success,
            result: Some(result),
            error: None,
        }
    }

    pub fn err(status: Status, message: impl Into<String>) -> Response {
        Response {
            status,
            result: None,
            error: Some(message.into()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot reach lazysnap-mountd at {socket}: {source}")]
    Unavailable {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    #[error("lazysnap-mountd answered something that is not a control response: {0}")]
    Protocol(String),
    #[error("{message}")]
    Remote { status: Status, message: String },
}

/// Sends one request and waits up to `timeout` for its answer.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<serde_json::Value, ControlError> {
    let unavailable = |source| ControlError::Unavailable {
        socket: socket.display().to_string(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(unavailable)?;
    stream.set_read_timeout(Some(timeout)).map_err(unavailable)?;
    let mut line = serde_json::to_vec(request).expect("requests serialise");
    line.push(b'\n');
    stream.write_all(&line).map_err(unavailable)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(unavailable)?;
    let response: Response =
        serde_json::from_str(&answer).map_err(|e| ControlError::Protocol(format!("{e}: {answer:?}")))?;
    match response.status {
        Status::Success => Ok(response.result.unwrap_or(serde_json::Value::Null)),
        status => Err(ControlError::Remote {
            status,
            message: response.error.unwrap_or_default(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_use_the_documented_json() {
        let req: Request = serde_json::from_str(
            r#"{"op":"mount","store":"file:///s","volumes":["v"],"selector":{"snapshot":"u1"},"mountPath":"/m"}"#,
        )
        .unwrap();
        assert_eq!(
            req,
            Request::Mount(MountRequest {
                store: "file:///s".into(),
                volumes: vec!["v".into()],
                selector: Selector::Snapshot("u1".into()),
                mount_path: Some("/m".into()),
                hydrate: None,
            })
        );
        let latest: Request = serde_json::from_str(r#"{"op":"mount","store":"s","volumes":[]}"#).unwrap();
        assert!(matches!(
            latest,
            Request::Mount(MountRequest {
                selector: Selector::Latest,
                ..
            })
        ));
        assert!(serde_json::from_str::<Request>(r#"{"op":"mount","store":"s","volumes":[],"bogus":1}"#).is_err());
        let err = serde_json::to_value(Response::err(Status::NotMyVbucket, "volume v not found")).unwrap();
        assert_eq!(
            err,
            serde_json::json!({"status": "NotMyVbucket", "error": "volume v not found"})
        );
    }
}
