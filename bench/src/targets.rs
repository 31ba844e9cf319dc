//! The stores a benchmark runs against: a local directory, the S3 server of `lazysnap-s3dev` on
//! 127.0.0.1 as it is and with S3's latency and bandwidth emulated, or a store the operator names.

use anyhow::{bail, Context};
use lazysnap::store::{Store, StoreConfig, StoreUrl};
use lazysnap_s3dev::{Emulation, S3Server};
use tempfile::TempDir;

use crate::daemon::Launch;

pub struct Target {
    pub name: String,
    pub url: String,
    /// Credentials of the local S3 server for this process's own store client.
    settings: Vec<(String, String)>,
    /// How to start a daemon that can reach the store.
    pub launch: Launch,
    /// `http://host:port` of the local S3 server (or the proxy in front of it).
    endpoint: Option<String>,
    /// The local S3 server, kept running as long as the target.
    _server: Option<S3Server>,
    _dir: Option<TempDir>,
    /// In an operator's store: the run's namespace, deleted when the target is dropped.
    leftovers: Option<String>,
}

/// The built-in profiles, by name.
pub const PROFILES: &[&str] = &["file", "s3", "s3-emulated"];

impl Target {
    pub fn builtin(name: &str, work: &std::path::Path) -> anyhow::Result<Target> {
        match name {
            "file" => {
                let dir = tempfile::Builder::new().prefix("store-").tempdir_in(work)?;
                Ok(Target {
                    name: name.into(),
                    url: format!("file://{}", dir.path().display()),
                    settings: Vec::new(),
                    launch: Launch::default(),
                    endpoint: None,
                    _server: None,
                    _dir: Some(dir),
                    leftovers: None,
                })
            }
            "s3" => Ok(Target::local_s3(name, S3Server::start())),
            "s3-emulated" => Ok(Target::local_s3(name, S3Server::start_emulating(Emulation::S3_LIKE))),
            other => bail!("unknown benchmark store {other:?}: use one of {}", PROFILES.join(", ")),
        }
    }

    fn local_s3(name: &str, server: S3Server) -> Target {
        let url = format!(
            "s3://{}/bench?endpoint={}&region={}&allow_http=true",
            server.bucket(),
            server.endpoint(),
            server.region()
        );
        let settings = vec![
            ("aws_access_key_id".to_owned(), server.access_key().to_owned()),
            ("aws_secret_access_key".to_owned(), server.secret_key().to_owned()),
        ];
        let launch = Launch {
            env: server.env(),
            replace_aws_env: true,
            ..Launch::default()
        };
        Target {
            name: name.into(),
            url,
            settings,
            launch,
            endpoint: Some(server.endpoint()),
            _server: Some(server),
            _dir: None,
            leftovers: None,
        }
    }

    /// A store the operator names; credentials come from the environment, as for every command.
    /// What the run writes there (under `volumes/<namespace>/`) is deleted afterwards.
    pub fn external(url: &str, namespace: &str) -> Target {
        Target {
            name: "external".into(),
            url: url.into(),
            settings: Vec::new(),
            launch: Launch::default(),
            endpoint: None,
            _server: None,
            _dir: None,
            leftovers: Some(namespace.into()),
        }
    }

    pub fn open(&self) -> anyhow::Result<Store> {
        let url: StoreUrl = self.url.parse()?;
        let config = StoreConfig {
            create_local_dir: true,
            settings: self.settings.clone(),
            ..StoreConfig::default()
        };
        Store::open(&url, &config).with_context(|| format!("cannot open the {} store", self.name))
    }

    /// The local S3 server this target runs, if it runs one.
    pub fn server(&self) -> Option<&S3Server> {
        self._server.as_ref()
    }

    /// The TCP port of the local S3 server behind this target, if it has one.
    pub fn port(&self) -> Option<u16> {
        let endpoint = self._server.as_ref()?.endpoint();
        endpoint.rsplit(':').next()?.trim_end_matches('/').parse().ok()
    }

    /// The endpoint of the local S3 server behind this target, if it has one.
    pub fn endpoint(&self) -> Option<String> {
        self.endpoint.clone()
    }

    /// The same local S3 store reached at `endpoint` (a proxy in front of the server), for as long
    /// as this target keeps the server running.
    pub fn through(&self, endpoint: &str) -> Target {
        let old = self.endpoint.clone().unwrap_or_default();
        let mut launch = self.launch.clone();
        for (_, value) in &mut launch.env {
            if *value == old {
                *value = endpoint.to_owned();
            }
        }
        Target {
            name: self.name.clone(),
            url: self.url.replace(&old, endpoint),
            settings: self.settings.clone(),
            launch,
            endpoint: Some(endpoint.to_owned()),
            _server: None,
            _dir: None,
            leftovers: None,
        }
    }

    pub fn with_daemon_args(&self, args: &[String]) -> Launch {
        let mut launch = self.launch.clone();
        launch.args.extend_from_slice(args);
        launch
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let Some(namespace) = &self.leftovers else {
            return;
        };
        let removed = self.open().and_then(|store| {
            crate::block_on(async {
                let prefix = object_store::path::Path::from_iter(["volumes", namespace.as_str()]);
                for object in store.list(&prefix).await? {
                    store.delete(&object.key).await?;
                }
                anyhow::Ok(())
            })
        });
        if let Err(e) = removed {
            eprintln!(
                "lazysnap bench: could not remove volumes/{namespace}/ from {}: {e:#}",
                self.url
            );
        }
    }
}
