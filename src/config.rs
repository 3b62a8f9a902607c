//! Settings: each one a command-line flag, an environment variable and a
//! key in an optional TOML file, in that order of precedence, falling back
//! to embedded defaults so `wharf serve` runs with no file at all. Values
//! are validated here, at start-up, with messages that name the key.

use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:5000";
pub const DEFAULT_DATA: &str = "./wharf-data";
pub const DEFAULT_UPLOAD_TIMEOUT: &str = "1h";

/// `wharf serve` flags. Every flag can also come from its environment
/// variable or from the config file.
#[derive(Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (keys: listen, data,
    /// upload_timeout). Flags and environment variables override it.
    #[arg(long, env = "WHARF_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address and port to listen on [default: 0.0.0.0:5000]. Port 0 picks
    /// a free port; the start-up log line says which.
    #[arg(long, env = "WHARF_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,

    /// Directory for blobs, the index and uploads in progress
    /// [default: ./wharf-data]. Created if missing.
    #[arg(long, env = "WHARF_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,

    /// How long an upload session may sit idle before it expires and its
    /// bytes are deleted, e.g. 30m, 2h [default: 1h].
    #[arg(long, env = "WHARF_UPLOAD_TIMEOUT", value_name = "DURATION")]
    pub upload_timeout: Option<String>,
}

/// The keys the config file may hold.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data: Option<PathBuf>,
    upload_timeout: Option<String>,
}

/// The validated settings the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data: PathBuf,
    pub upload_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid {key} {value:?}: {allowed}")]
    Invalid {
        key: &'static str,
        value: String,
        allowed: &'static str,
    },
}

impl Config {
    /// Merges flags/environment over the config file over the defaults.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let listen = args
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = listen.parse().map_err(|_| ConfigError::Invalid {
            key: "listen (--listen, WHARF_LISTEN)",
            value: listen.clone(),
            allowed: "expected IP:PORT, e.g. 0.0.0.0:5000 or 127.0.0.1:0",
        })?;
        let data = args
            .data
            .clone()
            .or(file.data)
            .unwrap_or_else(|| DEFAULT_DATA.into());
        if data.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "data (--data, WHARF_DATA)",
                value: String::new(),
                allowed: "expected a directory path",
            });
        }
        let timeout = args
            .upload_timeout
            .clone()
            .or(file.upload_timeout)
            .unwrap_or_else(|| DEFAULT_UPLOAD_TIMEOUT.into());
        let upload_timeout = parse_duration(&timeout).ok_or(ConfigError::Invalid {
            key: "upload_timeout (--upload-timeout, WHARF_UPLOAD_TIMEOUT)",
            value: timeout.clone(),
            allowed: "expected a duration of at least 1s, e.g. 90s, 30m, 2h",
        })?;
        Ok(Config {
            listen,
            data,
            upload_timeout,
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })
}

fn parse_duration(s: &str) -> Option<Duration> {
    humantime::parse_duration(s.trim())
        .ok()
        .filter(|d| *d >= Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load(&ServeArgs::default()).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.data, PathBuf::from(DEFAULT_DATA));
        assert_eq!(c.upload_timeout, Duration::from_secs(3600));
    }

    #[test]
    fn the_deploy_example_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("wharf.toml");
        std::fs::write(&f, include_str!("../deploy/wharf.toml")).unwrap();
        let c = Config::load(&ServeArgs {
            config: Some(f),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.data, PathBuf::from("/var/lib/wharf"));
    }

    #[test]
    fn flags_override_file_and_bad_values_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("w.toml");
        std::fs::write(&f, "listen = \"127.0.0.1:7000\"\nupload_timeout = \"5m\"\n").unwrap();
        let mut args = ServeArgs {
            config: Some(f.clone()),
            ..Default::default()
        };
        let c = Config::load(&args).unwrap();
        assert_eq!(c.listen.port(), 7000);
        assert_eq!(c.upload_timeout, Duration::from_secs(300));
        args.listen = Some("127.0.0.1:7001".into());
        assert_eq!(Config::load(&args).unwrap().listen.port(), 7001);

        args.upload_timeout = Some("soon".into());
        let e = Config::load(&args).unwrap_err().to_string();
        assert!(e.contains("upload_timeout") && e.contains("soon"), "{e}");

        std::fs::write(&f, "lissen = \"x\"\n").unwrap();
        let e = Config::load(&ServeArgs {
            config: Some(f),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("lissen"), "{e}");
    }
}
