//! Addresses of things in a store: `STORE_URL[#VOLUME_ID[:PATH]]`. Volume IDs cannot contain `:`
//! or `#`, so the split is unambiguous.

use anyhow::{bail, Context};
use lazysnap::names::{RelPath, VolumeId};
use lazysnap::store::StoreUrl;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub store: StoreUrl,
    pub volume: Option<VolumeId>,
    /// A file or folder inside the volume; `None` is the volume's root.
    pub path: Option<RelPath>,
}

impl Address {
    pub fn parse(text: &str) -> anyhow::Result<Address> {
        let (store, rest) = match text.split_once('#') {
            Some((store, rest)) => (store, Some(rest)),
            None => (text, None),
        };
        let store: StoreUrl = store.parse()?;
        let Some(rest) = rest else {
            return Ok(Address {
                store,
                volume: None,
                path: None,
            });
        };
        let (volume, path) = match rest.split_once(':') {
            Some((volume, path)) => (volume, Some(path.trim_end_matches('/'))),
            None => (rest, None),
        };
        if volume.is_empty() {
            bail!("address {text:?} has an empty volume after '#'");
        }
        let volume = VolumeId::parse(volume)?;
        let path = match path {
            None | Some("") => None,
            Some(path) => Some(RelPath::parse(path).with_context(|| format!("in address {text:?}"))?),
        };
        Ok(Address {
            store,
            volume: Some(volume),
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_volume_and_path() {
        let a = Address::parse("file:///srv/s#kv/b/kvstore-0:dir/log.1").unwrap();
        assert_eq!(a.store.to_string(), "file:///srv/s");
        assert_eq!(a.volume.unwrap().as_str(), "kv/b/kvstore-0");
        assert_eq!(a.path.unwrap().as_str(), "dir/log.1");
        let b = Address::parse("s3://b/p?endpoint=http://127.0.0.1:9000#v").unwrap();
        assert_eq!((b.volume.unwrap().as_str(), b.path), ("v", None));
        assert!(Address::parse("/srv/s").unwrap().volume.is_none());
        assert!(Address::parse("/srv/s#v:").unwrap().path.is_none());
        for bad in ["/srv/s#", "/srv/s#v:../x", "/srv/s#a b", "relative#v"] {
            assert!(Address::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// Any text is an address or an error that quotes it, never a panic.
    #[test]
    fn fuzzed_addresses_are_parsed_or_refused_by_name() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};

        let started = std::time::Instant::now();
        let cases = std::env::var("LAZYSNAP_FUZZ_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(2000);
        let text = prop_oneof![
            "\\PC{0,48}",
            ("(file:///s|s3://b/p|gs://b)", "[#:/a-z.-]{0,24}").prop_map(|(a, b)| a + &b),
        ];
        TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        })
        .run(&text, |text| {
            if let Err(e) = Address::parse(&text) {
                let text = format!("{e:#}");
                prop_assert!(!text.trim().is_empty());
            }
            Ok(())
        })
        .unwrap();
        let took = started.elapsed().as_secs_f64();
        eprintln!("| fuzz: addresses | 1 thread, {took:.1} s | - | {cases} | 0 | - |");
    }
}
