//! Where the store keeps its durable state: the data directory alone
//! (`fs`, the default), or an S3-compatible bucket with the data directory
//! as a bounded local cache (`s3`). The flags, their environment variables
//! and config-file keys, and their validation. Credentials come from
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` or from the config file
//! (the secret in a file of its own); they are never logged.

use super::{parse_size, ConfigError, Secret};
use clap::Args;
use serde::Deserialize;
use std::path::PathBuf;

/// Default `--local-cache-size` with `--storage s3`.
pub const DEFAULT_LOCAL_CACHE_SIZE: &str = "10GiB";
/// Default `--s3-region`.
pub const DEFAULT_S3_REGION: &str = "us-east-1";

/// The storage flags of `wharf serve`, `wharf gc` and `wharf verify`.
#[derive(Args, Debug, Default, Clone)]
pub struct StorageArgs {
    /// Where durable state lives: fs (the data directory holds
    /// everything) or s3 (an S3-compatible bucket holds everything; the
    /// data directory is a local cache that may be deleted) [default: fs].
    #[arg(long, env = "WHARF_STORAGE", value_name = "fs|s3")]
    pub storage: Option<String>,

    /// The S3 endpoint URL, e.g. http://127.0.0.1:3900 for Garage or
    /// MinIO [default: AWS for the region].
    #[arg(long, env = "WHARF_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// The bucket that holds everything (it must exist).
    #[arg(long, env = "WHARF_S3_BUCKET", value_name = "NAME")]
    pub s3_bucket: Option<String>,

    /// The bucket's region [default: us-east-1; Garage's is usually
    /// "garage"].
    #[arg(long, env = "WHARF_S3_REGION", value_name = "NAME")]
    pub s3_region: Option<String>,

    /// A key prefix for everything Wharf writes, to share a bucket, e.g.
    /// wharf/ [default: none].
    #[arg(long, env = "WHARF_S3_PREFIX", value_name = "PATH")]
    pub s3_prefix: Option<String>,

    /// Path-style requests (`http://endpoint/bucket/key`) instead of
    /// virtual-hosted ones (`http://bucket.endpoint/key`): what most
    /// self-hosted stores (Garage, MinIO, Ceph) need.
    #[arg(long, env = "WHARF_S3_PATH_STYLE")]
    pub s3_path_style: bool,

    /// With --storage s3: most bytes of blobs kept in the data directory
    /// for fast reads; the least recently used leave it first (they stay
    /// in the bucket) [default: 10GiB].
    #[arg(long, env = "WHARF_LOCAL_CACHE_SIZE", value_name = "SIZE")]
    pub local_cache_size: Option<String>,
}

/// The storage keys of the config file.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileStorage {
    pub storage: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_bucket: Option<String>,
    pub s3_region: Option<String>,
    pub s3_prefix: Option<String>,
    pub s3_path_style: Option<bool>,
    #[serde(default, deserialize_with = "super::string_or_number")]
    pub local_cache_size: Option<String>,
    /// The access key id; `AWS_ACCESS_KEY_ID` overrides it.
    pub s3_access_key_id: Option<String>,
    /// A file holding the secret access key; `AWS_SECRET_ACCESS_KEY`
    /// overrides it.
    pub s3_secret_access_key_file: Option<PathBuf>,
}

/// Where durable state lives.
#[derive(Debug, Clone, Default)]
pub enum Storage {
    /// The data directory holds everything.
    #[default]
    Fs,
    /// A bucket holds everything; the data directory is a cache.
    S3(Box<S3Config>),
}

/// An S3-compatible bucket.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub endpoint: Option<url::Url>,
    pub bucket: String,
    pub region: String,
    /// Empty, or ends with `/`.
    pub prefix: String,
    pub path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    /// Bytes of blobs the data directory keeps.
    pub local_cache_size: u64,
}

/// Merges flags and environment (`args`, `env` for the AWS variables)
/// over the config file's keys.
pub fn resolve(
    args: &StorageArgs,
    file: FileStorage,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Storage, ConfigError> {
    let kind = args
        .storage
        .clone()
        .or(file.storage)
        .unwrap_or_else(|| "fs".into());
    match kind.as_str() {
        "fs" => return Ok(Storage::Fs),
        "s3" => {}
        _ => {
            return Err(ConfigError::Invalid {
                key: "storage (--storage, WHARF_STORAGE)",
                value: kind,
                allowed: "expected fs or s3",
            })
        }
    }
    let bucket = args
        .s3_bucket
        .clone()
        .or(file.s3_bucket)
        .filter(|b| !b.is_empty())
        .ok_or_else(|| {
            ConfigError::Conflict(
                "--storage s3 needs a bucket: set s3_bucket (--s3-bucket, WHARF_S3_BUCKET)".into(),
            )
        })?;
    if !valid_bucket(&bucket) {
        return Err(ConfigError::Invalid {
            key: "s3_bucket (--s3-bucket, WHARF_S3_BUCKET)",
            value: bucket,
            allowed: "expected a bucket name: 3 to 63 of a-z, 0-9, '.' and '-'",
        });
    }
    let endpoint = match args.s3_endpoint.clone().or(file.s3_endpoint) {
        None => None,
        Some(e) => Some(
            url::Url::parse(&e)
                .ok()
                .filter(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.host().is_some()
                        && u.username().is_empty()
                        && u.password().is_none()
                        && u.query().is_none()
                })
                .ok_or(ConfigError::Invalid {
                    key: "s3_endpoint (--s3-endpoint, WHARF_S3_ENDPOINT)",
                    value: super::redact_url(&e),
                    allowed: "expected an http:// or https:// URL with a host and no credentials, e.g. http://127.0.0.1:3900",
                })?,
        ),
    };
    let region = args
        .s3_region
        .clone()
        .or(file.s3_region)
        .unwrap_or_else(|| DEFAULT_S3_REGION.into());
    let mut prefix = args
        .s3_prefix
        .clone()
        .or(file.s3_prefix)
        .unwrap_or_default()
        .trim_matches('/')
        .to_string();
    if !prefix.is_empty() {
        if prefix
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        {
            return Err(ConfigError::Invalid {
                key: "s3_prefix (--s3-prefix, WHARF_S3_PREFIX)",
                value: prefix,
                allowed:
                    "expected path components of a-z, A-Z, 0-9, '-', '_' and '.', e.g. wharf/prod",
            });
        }
        prefix.push('/');
    }
    let access_key_id = env("AWS_ACCESS_KEY_ID")
        .or(file.s3_access_key_id)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            ConfigError::Conflict(
                "--storage s3 needs credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or s3_access_key_id and s3_secret_access_key_file in the config file".into(),
            )
        })?;
    let secret = match env("AWS_SECRET_ACCESS_KEY") {
        Some(s) => s,
        None => match file.s3_secret_access_key_file {
            Some(path) => std::fs::read_to_string(&path)
                .map_err(|source| ConfigError::Read { path, source })?
                .trim()
                .to_string(),
            None => String::new(),
        },
    };
    if secret.is_empty() {
        return Err(ConfigError::Conflict(
            "--storage s3 needs the secret access key: set AWS_SECRET_ACCESS_KEY, or s3_secret_access_key_file in the config file".into(),
        ));
    }
    let size = args
        .local_cache_size
        .clone()
        .or(file.local_cache_size)
        .unwrap_or_else(|| DEFAULT_LOCAL_CACHE_SIZE.into());
    let local_cache_size = parse_size(&size).ok_or(ConfigError::Invalid {
        key: "local_cache_size (--local-cache-size, WHARF_LOCAL_CACHE_SIZE)",
        value: size.clone(),
        allowed: "expected a size of at least 1MiB, e.g. 800MB, 50GiB",
    })?;
    Ok(Storage::S3(Box::new(S3Config {
        endpoint,
        bucket,
        region,
        prefix,
        path_style: args.s3_path_style || file.s3_path_style.unwrap_or(false),
        access_key_id,
        secret_access_key: Secret::new(secret),
        local_cache_size,
    })))
}

/// S3's bucket naming rules, loosely: what every implementation accepts.
fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && b.starts_with(|c: char| c.is_ascii_alphanumeric())
        && b.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_with<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    fn s3_args() -> StorageArgs {
        StorageArgs {
            storage: Some("s3".into()),
            s3_bucket: Some("wharf".into()),
            s3_endpoint: Some("http://127.0.0.1:3900".into()),
            ..Default::default()
        }
    }

    #[test]
    fn fs_is_the_default() {
        let s = resolve(&StorageArgs::default(), FileStorage::default(), |_| None).unwrap();
        assert!(matches!(s, Storage::Fs));
    }

    #[test]
    fn s3_from_flags_and_environment() {
        let mut args = s3_args();
        args.s3_prefix = Some("/team/wharf/".into());
        args.s3_path_style = true;
        let creds = [
            ("AWS_ACCESS_KEY_ID", "GK1"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
        ];
        let Storage::S3(c) = resolve(&args, FileStorage::default(), env_with(&creds)).unwrap()
        else {
            panic!("expected s3");
        };
        assert_eq!(c.bucket, "wharf");
        assert_eq!(c.prefix, "team/wharf/");
        assert_eq!(c.region, DEFAULT_S3_REGION);
        assert!(c.path_style);
        assert_eq!(c.access_key_id, "GK1");
        assert_eq!(c.secret_access_key.expose(), "s3cr3t");
        assert_eq!(c.local_cache_size, 10 << 30);
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn s3_secret_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "filesecret\n").unwrap();
        let file = FileStorage {
            s3_access_key_id: Some("GK2".into()),
            s3_secret_access_key_file: Some(secret),
            ..Default::default()
        };
        let Storage::S3(c) = resolve(&s3_args(), file, |_| None).unwrap() else {
            panic!("expected s3");
        };
        assert_eq!(c.access_key_id, "GK2");
        assert_eq!(c.secret_access_key.expose(), "filesecret");
    }

    #[test]
    fn bad_s3_settings_name_the_key() {
        let creds = [("AWS_ACCESS_KEY_ID", "GK1"), ("AWS_SECRET_ACCESS_KEY", "x")];
        let err = |args: StorageArgs| {
            resolve(&args, FileStorage::default(), env_with(&creds))
                .unwrap_err()
                .to_string()
        };
        let mut a = s3_args();
        a.storage = Some("gcs".into());
        assert!(err(a).contains("--storage"));
        let mut a = s3_args();
        a.s3_bucket = None;
        assert!(err(a).contains("--s3-bucket"));
        let mut a = s3_args();
        a.s3_bucket = Some("Bad_Bucket".into());
        assert!(err(a).contains("--s3-bucket"));
        let mut a = s3_args();
        a.s3_endpoint = Some("http://user:pw@host:3900".into());
        let e = err(a);
        assert!(e.contains("--s3-endpoint") && !e.contains("pw"));
        let mut a = s3_args();
        a.s3_prefix = Some("a/../b".into());
        assert!(err(a).contains("--s3-prefix"));
        let mut a = s3_args();
        a.local_cache_size = Some("12".into());
        assert!(err(a).contains("--local-cache-size"));
        let no_creds = resolve(&s3_args(), FileStorage::default(), |_| None)
            .unwrap_err()
            .to_string();
        assert!(no_creds.contains("AWS_ACCESS_KEY_ID"));
    }
}
