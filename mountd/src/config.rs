//! The daemon's configuration: every option is a flag, a `LAZYSNAP_*` environment variable and a
//! key of a TOML file, in that order of precedence over the built-in default. The file is
//! `--config FILE`, else `<home>/config.toml`, else `/etc/lazysnap/config.toml` (the first that
//! exists); its keys are the flags' long names (`cache-memory = "1G"`).
//!
//! clap does the parsing and checking for all three: file values are checked one by one as flags
//! (so an error names the file's line), then put before the real flags, which win (the last of a
//! repeated flag does); environment variables beat file values because a value clap took from the
//! environment gets no file flag at all.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};

/// The system-wide file, read when the home holds none.
pub const SYSTEM_FILE: &str = "/etc/lazysnap/config.toml";

/// Options that are about this run, not the daemon's configuration.
const NOT_IN_FILE: &[&str] = &["config", "print-config", "help", "version"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} line {line}: {message}")]
    At {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Where one option's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File { path: PathBuf, line: usize },
    Env(String),
    Flag,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File { path, line } => write!(f, "{} line {line}", path.display()),
            Origin::Env(name) => write!(f, "environment {name}"),
            Origin::Flag => f.write_str("command line"),
        }
    }
}

/// Parsed options and where each came from.
#[derive(Debug)]
pub struct Loaded<A> {
    pub args: A,
    pub matches: ArgMatches,
    pub file: Option<PathBuf>,
    pub origins: BTreeMap<String, Origin>,
}

/// Parses `argv` with the environment and the configuration file. `home_of` gives the state
/// folder the command line and environment name (where `config.toml` may be).
pub fn load<A: CommandFactory + FromArgMatches>(
    argv: Vec<OsString>,
    home_of: impl Fn(&ArgMatches) -> PathBuf,
) -> Result<Loaded<A>, anyhow::Error> {
    let command = A::command();
    let first = command.clone().try_get_matches_from(&argv)?;
    let file = match first.get_one::<PathBuf>("config") {
        Some(path) => Some(path.clone()),
        None => [home_of(&first).join("config.toml"), PathBuf::from(SYSTEM_FILE)]
            .into_iter()
            .find(|p| p.exists()),
    };
    let mut origins = BTreeMap::new();
    let mut from_file: Vec<OsString> = Vec::new();
    if let Some(path) = &file {
        for (key, value, line) in read_file(path)? {
            let at = |message: String| ConfigError::At {
                path: path.clone(),
                line,
                message,
            };
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(key.as_str()) && !NOT_IN_FILE.contains(&key.as_str()))
                .ok_or_else(|| {
                    at(format!(
                        "unknown key {key:?} (keys are the daemon's flags, e.g. cache-memory)"
                    ))
                })?;
            let flag = flag_of(&key, &value, matches!(arg.get_action(), ArgAction::SetTrue)).map_err(at)?;
            // Checked alone, so that a bad value names this line.
            let mut alone = vec![argv[0].clone()];
            alone.extend(flag.iter().cloned());
            if let Err(e) = command.clone().try_get_matches_from(alone) {
                let message = e.to_string();
                let first_line = message.lines().next().unwrap_or_default();
                return Err(at(format!("{key}: {}", first_line.trim_start_matches("error: "))).into());
            }
            let id = arg.get_id().as_str();
            if first.value_source(id) == Some(ValueSource::DefaultValue) || first.value_source(id).is_none() {
                from_file.extend(flag);
                origins.insert(
                    id.to_string(),
                    Origin::File {
                        path: path.clone(),
                        line,
                    },
                );
            }
        }
    }
    let mut full = vec![argv[0].clone()];
    full.extend(from_file);
    full.extend(argv.into_iter().skip(1));
    let matches = command.clone().try_get_matches_from(full)?;
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let origin = match first.value_source(id) {
            Some(ValueSource::CommandLine) => Origin::Flag,
            Some(ValueSource::EnvVariable) => Origin::Env(
                arg.get_env()
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            _ => continue,
        };
        origins.insert(id.to_string(), origin);
    }
    let args = A::from_arg_matches(&matches)?;
    Ok(Loaded {
        args,
        matches,
        file,
        origins,
    })
}

impl<A: CommandFactory> Loaded<A> {
    /// The effective configuration as a TOML file, each value followed by where it came from.
    pub fn render(&self) -> String {
        let mut out = String::new();
        match &self.file {
            Some(path) => out.push_str(&format!("# configuration file: {}\n", path.display())),
            None => out.push_str(&format!(
                "# configuration file: none (looked for <home>/config.toml and {SYSTEM_FILE})\n"
            )),
        }
        for arg in A::command().get_arguments() {
            let Some(key) = arg.get_long() else { continue };
            if NOT_IN_FILE.contains(&key) || arg.is_hide_set() {
                continue;
            }
            let id = arg.get_id().as_str();
            let origin = self.origins.get(id).cloned().unwrap_or(Origin::Default);
            let value = match arg.get_action() {
                ArgAction::SetTrue => self.matches.get_flag(id).to_string(),
                _ => match self.matches.get_raw(id).and_then(|mut v| v.next()) {
                    Some(raw) => match raw.to_string_lossy() {
                        text if text.parse::<i64>().is_ok() => text.into_owned(),
                        text => format!("{text:?}"),
                    },
                    None => {
                        out.push_str(&format!("# {key} =  (not set; {origin})\n"));
                        continue;
                    }
                },
            };
            out.push_str(&format!("{key} = {value}  # {origin}\n"));
        }
        out
    }
}

/// The file's keys, values and lines, in file order; a malformed file names its line.
fn read_file(path: &Path) -> Result<Vec<(String, toml::Value, usize)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let table: BTreeMap<toml::Spanned<String>, toml::Spanned<toml::Value>> =
        toml::from_str(&text).map_err(|e| ConfigError::At {
            path: path.to_path_buf(),
            line: e.span().map_or(1, |s| line_of(s.start)),
            message: e.message().to_string(),
        })?;
    let mut entries: Vec<(String, toml::Value, usize)> = table
        .into_iter()
        .map(|(key, value)| {
            let line = line_of(key.span().start);
            (key.into_inner(), value.into_inner(), line)
        })
        .collect();
    entries.sort_by_key(|(_, _, line)| *line);
    Ok(entries)
}

/// The flag a file value stands for: `--key=value`, `--key` for `true`, nothing for `false`.
fn flag_of(key: &str, value: &toml::Value, switch: bool) -> Result<Vec<OsString>, String> {
    let text = match (value, switch) {
        (toml::Value::Boolean(true), true) => return Ok(vec![format!("--{key}").into()]),
        (toml::Value::Boolean(false), true) => return Ok(Vec::new()),
        (_, true) => return Err(format!("{key} is true or false")),
        (toml::Value::String(s), false) => s.clone(),
        (toml::Value::Integer(i), false) => i.to_string(),
        (toml::Value::Float(f), false) => f.to_string(),
        (other, false) => return Err(format!("{key} takes a string or a number, not {}", other.type_str())),
    };
    Ok(vec![format!("--{key}={text}").into()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser, Debug)]
    #[command(args_override_self = true)]
    struct Opts {
        #[arg(long)]
        home: Option<PathBuf>,
        #[arg(long, env = "LAZYSNAP_TEST_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, env = "LAZYSNAP_TEST_SIZE", default_value = "1M", value_parser = lazysnap::units::parse_size)]
        size: u64,
        #[arg(long, env = "LAZYSNAP_TEST_COUNT", default_value_t = 4)]
        count: usize,
        #[arg(long, env = "LAZYSNAP_TEST_WIDTH", default_value_t = 1)]
        width: usize,
        #[arg(long, env = "LAZYSNAP_TEST_QUIET")]
        quiet: bool,
    }

    fn load_with(file: &str, argv: &[&str]) -> Result<Loaded<Opts>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, file).unwrap();
        let mut full: Vec<OsString> = vec!["d".into(), "--config".into(), path.clone().into()];
        full.extend(argv.iter().map(OsString::from));
        load::<Opts>(full, |_| dir.path().to_path_buf())
            .map_err(|e| e.to_string().replace(&path.display().to_string(), "FILE"))
    }

    #[test]
    fn flags_beat_the_environment_which_beats_the_file() {
        // Only this test sets these variables.
        std::env::set_var("LAZYSNAP_TEST_COUNT", "7");
        let loaded = load_with("size = \"2M\"\ncount = 5\nwidth = 3\nquiet = true\n", &["--width", "9"]).unwrap();
        std::env::remove_var("LAZYSNAP_TEST_COUNT");
        assert_eq!(loaded.args.size, 2 << 20);
        assert_eq!(loaded.args.count, 7);
        assert_eq!(loaded.args.width, 9);
        assert!(loaded.args.quiet);
        assert!(matches!(loaded.origins["size"], Origin::File { line: 1, .. }));
        assert_eq!(loaded.origins["count"], Origin::Env("LAZYSNAP_TEST_COUNT".into()));
        assert_eq!(loaded.origins["width"], Origin::Flag);
        let shown = loaded.render();
        assert!(shown.contains("size = \"2M\"  # "), "{shown}");
        assert!(
            shown.contains("count = 7  # environment LAZYSNAP_TEST_COUNT"),
            "{shown}"
        );
        assert!(shown.contains("width = 9  # command line"), "{shown}");
    }

    #[test]
    fn a_bad_file_names_its_line() {
        let unknown = load_with("size = \"2M\"\n\ncache_memroy = 1\n", &[]).unwrap_err();
        assert!(
            unknown.contains("FILE line 3") && unknown.contains("cache_memroy"),
            "{unknown}"
        );
        let value = load_with("count = 2\nsize = \"lots\"\n", &[]).unwrap_err();
        assert!(
            value.contains("FILE line 2") && value.contains("size") && value.contains("lots"),
            "{value}"
        );
        let malformed = load_with("count = 2\nsize = \n", &[]).unwrap_err();
        assert!(malformed.contains("FILE line 2"), "{malformed}");
        let switch = load_with("quiet = \"yes\"\n", &[]).unwrap_err();
        assert!(
            switch.contains("FILE line 1") && switch.contains("true or false"),
            "{switch}"
        );
        let own = load_with("config = \"/x\"\n", &[]).unwrap_err();
        assert!(own.contains("unknown key \"config\""), "{own}");
    }
}
