//! Who may read a mount: the user and group its files show, their modes, and whether users other
//! than that owner are let in at all. A mount is private to the user who asked for it unless it
//! says otherwise; the kernel enforces the modes (`default_permissions`).
//!
//! User and group names are resolved once, when the mount is made, and kept as numbers: a mount a
//! restarted daemon brings back shows the same owner even if the name meanwhile means another user.

use serde::{Deserialize, Serialize};

/// A user or group, by number or by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Principal {
    Id(u32),
    Name(String),
}

impl std::str::FromStr for Principal {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text.parse::<u32>() {
            Ok(id) => Principal::Id(id),
            Err(_) => Principal::Name(text.to_string()),
        })
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Id(id) => write!(f, "{id}"),
            Principal::Name(name) => f.write_str(name),
        }
    }
}

/// Permission bits of files or directories, written in octal (`"0440"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Mode(u16);

impl Mode {
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Octal permission bits, with or without a leading `0` or `0o`; nothing but 0777.
    pub fn parse(text: &str) -> Result<Mode, AccessError> {
        let digits = text.strip_prefix("0o").unwrap_or(text);
        let bits = u32::from_str_radix(digits, 8).map_err(|_| AccessError::Mode(text.to_string()))?;
        match bits & !0o777 {
            0 if !digits.is_empty() => Ok(Mode(bits as u16)),
            _ => Err(AccessError::Mode(text.to_string())),
        }
    }
}

impl TryFrom<String> for Mode {
    type Error = AccessError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Mode::parse(&text)
    }
}

impl From<Mode> for String {
    fn from(mode: Mode) -> String {
        mode.to_string()
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// What a mount request asks for; every field may be left to its default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessRequest {
    /// Owner of every file and folder; default: the user who asked for the mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<Principal>,
    /// Group of every file and folder; default: the owner's primary group (the asking user's
    /// group when the owner is left to its default or has no account here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<Principal>,
    /// Default 0400, or 0444 with `allow_other`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<Mode>,
    /// Default 0500, or 0555 with `allow_other`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir_mode: Option<Mode>,
    /// Let users other than the owner in, as far as the modes allow.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_other: bool,
}

/// A mount's access, resolved to numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u16,
    pub dir_mode: u16,
    pub allow_other: bool,
}

impl Access {
    /// The default for a mount `(uid, gid)` asked for: theirs alone.
    pub const fn private_to(uid: u32, gid: u32) -> Access {
        Access {
            uid,
            gid,
            file_mode: 0o400,
            dir_mode: 0o500,
            allow_other: false,
        }
    }
}

/// Who is asking, and who serves: the serving process can only give files to another user when
/// it runs as root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parties {
    pub requester: (u32, u32),
    pub server: (u32, u32),
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("mode {0:?} is not octal permission bits within 0777 (e.g. 0440)")]
    Mode(String),
    #[error("no user named {0:?} on this node")]
    UnknownUser(String),
    #[error("no group named {0:?} on this node")]
    UnknownGroup(String),
    #[error("cannot look up {0:?} in the user database: {1}")]
    Lookup(String, String),
    #[error("{what} {mode} lets users other than the owner in: add allow_other to open the mount to them")]
    OpenWithoutAllowOther { what: &'static str, mode: Mode },
    #[error("files can only be shown as owned by another user ({uid}:{gid}) by a lazysnap-mountd running as root; this one runs as {server_uid}")]
    NotRoot { uid: u32, gid: u32, server_uid: u32 },
}

impl AccessRequest {
    /// The access this request gives, with names looked up and defaults filled in.
    pub fn resolve(&self, parties: Parties) -> Result<Access, AccessError> {
        let (uid, primary_gid) = match &self.uid {
            None => (parties.requester.0, Some(parties.requester.1)),
            Some(Principal::Id(id)) => (*id, primary_group(*id)?),
            Some(Principal::Name(name)) => user_by_name(name)?,
        };
        let gid = match &self.gid {
            None => primary_gid.unwrap_or(parties.requester.1),
            Some(Principal::Id(id)) => *id,
            Some(Principal::Name(name)) => group_by_name(name)?,
        };
        let (file_default, dir_default) = match self.allow_other {
            true => (0o444, 0o555),
            false => (0o400, 0o500),
        };
        let file_mode = self.file_mode.map_or(file_default, Mode::bits);
        let dir_mode = self.dir_mode.map_or(dir_default, Mode::bits);
        if !self.allow_other {
            for (what, mode) in [("file mode", file_mode), ("dir mode", dir_mode)] {
                if mode & 0o077 != 0 {
                    return Err(AccessError::OpenWithoutAllowOther { what, mode: Mode(mode) });
                }
            }
        }
        if parties.server.0 != 0 && (uid, gid) != parties.server {
            return Err(AccessError::NotRoot {
                uid,
                gid,
                server_uid: parties.server.0,
            });
        }
        Ok(Access {
            uid,
            gid,
            file_mode,
            dir_mode,
            allow_other: self.allow_other,
        })
    }

    /// The request that gives `access` again, in numbers (what a mount's record keeps).
    pub fn of(access: &Access) -> AccessRequest {
        AccessRequest {
            uid: Some(Principal::Id(access.uid)),
            gid: Some(Principal::Id(access.gid)),
            file_mode: Some(Mode(access.file_mode)),
            dir_mode: Some(Mode(access.dir_mode)),
            allow_other: access.allow_other,
        }
    }
}

fn user_by_name(name: &str) -> Result<(u32, Option<u32>), AccessError> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Ok((user.uid.as_raw(), Some(user.gid.as_raw()))),
        Ok(None) => Err(AccessError::UnknownUser(name.to_string())),
        Err(e) => Err(AccessError::Lookup(name.to_string(), e.to_string())),
    }
}

/// A user number need not have an account; then it has no primary group.
fn primary_group(uid: u32) -> Result<Option<u32>, AccessError> {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(user) => Ok(user.map(|u| u.gid.as_raw())),
        Err(e) => Err(AccessError::Lookup(uid.to_string(), e.to_string())),
    }
}

fn group_by_name(name: &str) -> Result<u32, AccessError> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(AccessError::UnknownGroup(name.to_string())),
        Err(e) => Err(AccessError::Lookup(name.to_string(), e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT_ASKS: Parties = Parties {
        requester: (0, 0),
        server: (0, 0),
    };

    #[test]
    fn modes_are_octal_permission_bits_only() {
        assert_eq!(Mode::parse("0440").unwrap().bits(), 0o440);
        assert_eq!(Mode::parse("440").unwrap().bits(), 0o440);
        assert_eq!(Mode::parse("0o755").unwrap().bits(), 0o755);
        for bad in ["", "0o", "1777", "4755", "0800", "rw", "-1", "0x1ff"] {
            let error = Mode::parse(bad).unwrap_err().to_string();
            assert!(error.contains(&format!("{bad:?}")), "{bad}: {error}");
        }
        let json: AccessRequest = serde_json::from_str(r#"{"fileMode":"0400"}"#).unwrap();
        assert_eq!(json.file_mode, Some(Mode(0o400)));
        assert!(serde_json::from_str::<AccessRequest>(r#"{"fileMode":"01777"}"#).is_err());
        assert!(serde_json::from_str::<AccessRequest>(r#"{"mode":"0400"}"#).is_err());
    }

    #[test]
    fn a_mount_is_private_to_its_requester_by_default() {
        let asking = Parties {
            requester: (1000, 1001),
            server: (0, 0),
        };
        let access = AccessRequest::default().resolve(asking).unwrap();
        assert_eq!(
            access,
            Access {
                uid: 1000,
                gid: 1001,
                file_mode: 0o400,
                dir_mode: 0o500,
                allow_other: false
            }
        );
        let open = AccessRequest {
            allow_other: true,
            ..AccessRequest::default()
        };
        let access = open.resolve(asking).unwrap();
        assert_eq!((access.file_mode, access.dir_mode), (0o444, 0o555));
    }

    #[test]
    fn group_or_other_bits_need_allow_other() {
        let request = AccessRequest {
            file_mode: Some(Mode(0o440)),
            ..AccessRequest::default()
        };
        let error = request.resolve(ROOT_ASKS).unwrap_err().to_string();
        assert!(
            error.contains("file mode 0440") && error.contains("allow_other"),
            "{error}"
        );
        let opened = AccessRequest {
            allow_other: true,
            ..request
        };
        assert_eq!(opened.resolve(ROOT_ASKS).unwrap().file_mode, 0o440);
    }

    #[test]
    fn names_resolve_to_numbers_and_unknown_ones_are_named() {
        let root = AccessRequest {
            uid: Some("root".parse().unwrap()),
            ..AccessRequest::default()
        };
        let access = root
            .resolve(Parties {
                requester: (5, 5),
                server: (0, 0),
            })
            .unwrap();
        assert_eq!((access.uid, access.gid), (0, 0), "root's primary group is 0");
        let unknown = AccessRequest {
            uid: Some("no-such-user-lazysnap".parse().unwrap()),
            ..AccessRequest::default()
        };
        let error = unknown.resolve(ROOT_ASKS).unwrap_err().to_string();
        assert!(error.contains("no-such-user-lazysnap"), "{error}");
        let unknown_group = AccessRequest {
            gid: Some("no-such-group-lazysnap".parse().unwrap()),
            ..AccessRequest::default()
        };
        assert!(matches!(
            unknown_group.resolve(ROOT_ASKS),
            Err(AccessError::UnknownGroup(_))
        ));
        // A number with no account keeps the requester's group.
        let numbered = AccessRequest {
            uid: Some(Principal::Id(3_999_999)),
            ..AccessRequest::default()
        };
        let access = numbered
            .resolve(Parties {
                requester: (0, 7),
                server: (0, 0),
            })
            .unwrap();
        assert_eq!((access.uid, access.gid), (3_999_999, 7));
    }

    #[test]
    fn only_root_gives_files_away() {
        let request = AccessRequest {
            uid: Some(Principal::Id(4242)),
            gid: Some(Principal::Id(4242)),
            ..AccessRequest::default()
        };
        let user_daemon = Parties {
            requester: (1000, 1000),
            server: (1000, 1000),
        };
        assert!(matches!(request.resolve(user_daemon), Err(AccessError::NotRoot { .. })));
        assert!(AccessRequest::default().resolve(user_daemon).is_ok());
    }

    #[test]
    fn a_resolved_access_round_trips_through_its_record() {
        let access = Access {
            uid: 65534,
            gid: 65534,
            file_mode: 0o440,
            dir_mode: 0o550,
            allow_other: true,
        };
        let record = serde_json::to_string(&AccessRequest::of(&access)).unwrap();
        assert!(record.contains("\"fileMode\":\"0440\""), "{record}");
        let back: AccessRequest = serde_json::from_str(&record).unwrap();
        assert_eq!(back.resolve(ROOT_ASKS).unwrap(), access);
    }
}
