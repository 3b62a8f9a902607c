//! Users from an htpasswd file, as `htpasswd -B` writes them (bcrypt
//! only: other hash kinds are refused with a warning naming the user).
//! The file is read again when it changes; a file that cannot be read
//! keeps the users already loaded.
//!
//! Password checks cost a bcrypt each, so they run on the blocking pool,
//! a few at a time, and an unknown user costs the same as a known one. A
//! successful check is remembered for a while (a SHA-256 of the password,
//! compared in constant time, against the hash it was checked with), so a
//! client sending Basic credentials with every request pays bcrypt once.

use crate::config::Secret;
use crate::watch::Watched;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// How long a successful password check is remembered.
const REMEMBER: Duration = Duration::from_secs(300);
/// bcrypt checks running at once; more wait.
const CONCURRENT_CHECKS: usize = 2;
/// Checks waiting for a turn at most; past that, [`Verdict::Busy`] at once,
/// so a flood of made-up passwords cannot queue real logins forever.
const MAX_WAITING: usize = 64;

/// The outcome of a password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Invalid,
    /// Too many checks are waiting: try again shortly.
    Busy,
}

/// The users of one file: name → bcrypt hash.
type Table = HashMap<String, String>;

/// The users as loaded, and a hash that unknown users are checked
/// against so they cost as much as the dearest known one.
struct Loaded {
    users: Table,
    decoy: String,
}

impl Loaded {
    fn new(users: Table, salt: &[u8; 16]) -> Loaded {
        // htpasswd -B uses cost 5 unless told otherwise.
        let cost = users
            .values()
            .filter_map(|h| h.get(4..6)?.parse::<u32>().ok())
            .max()
            .unwrap_or(5)
            .clamp(4, 31);
        Loaded {
            decoy: bcrypt::hash(salt, cost).unwrap_or_default(),
            users,
        }
    }
}

/// Parses htpasswd text. Returns the users and a warning per line skipped
/// (the warnings name users and line numbers, never hashes).
pub fn parse(text: &str) -> (Table, Vec<String>) {
    let mut users = Table::new();
    let mut warnings = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            warnings.push(format!("line {}: not user:hash", i + 1));
            continue;
        };
        if !super::policy::valid_user_name(user) {
            warnings.push(format!("line {}: invalid user name", i + 1));
            continue;
        }
        if !["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)) {
            warnings.push(format!(
                "user {user:?} (line {}): not a bcrypt hash; create it with htpasswd -B",
                i + 1
            ));
            continue;
        }
        if users.contains_key(user) {
            warnings.push(format!(
                "user {user:?} (line {}): listed again; the first entry counts",
                i + 1
            ));
            continue;
        }
        users.insert(user.to_string(), hash.to_string());
    }
    (users, warnings)
}

/// A password that checked out, for a while.
struct Verified {
    hash: String,
    password: [u8; 32],
    at: Instant,
}

/// The users Wharf knows, from the htpasswd file.
pub struct Users {
    path: PathBuf,
    table: RwLock<Arc<Loaded>>,
    watched: Watched,
    verified: Mutex<HashMap<String, Verified>>,
    /// Process-local salt for the remembered password digests.
    salt: [u8; 16],
    checks: tokio::sync::Semaphore,
    waiting: std::sync::atomic::AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read the htpasswd file {path}: {source}")]
pub struct HtpasswdError {
    path: PathBuf,
    source: std::io::Error,
}

fn read(path: &Path) -> Result<Table, HtpasswdError> {
    let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError {
        path: path.to_path_buf(),
        source,
    })?;
    let (table, warnings) = parse(&text);
    for w in warnings {
        tracing::warn!(file = %path.display(), "htpasswd: {w}");
    }
    Ok(table)
}

impl Users {
    pub fn load(path: &Path) -> Result<Users, HtpasswdError> {
        let table = read(path)?;
        if table.is_empty() {
            tracing::warn!(file = %path.display(), "the htpasswd file lists no usable users");
        }
        let mut salt = [0u8; 16];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt);
        Ok(Users {
            path: path.to_path_buf(),
            table: RwLock::new(Arc::new(Loaded::new(table, &salt))),
            watched: Watched::new(vec![path.to_path_buf()]),
            verified: Mutex::new(HashMap::new()),
            salt,
            checks: tokio::sync::Semaphore::new(CONCURRENT_CHECKS),
            waiting: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Reads the file again if it changed; a file that cannot be read
    /// keeps the users already loaded.
    pub fn reload_if_changed(&self) {
        if self.watched.changed() {
            self.reload();
        }
    }

    /// Reads the file again.
    pub fn reload(&self) {
        match read(&self.path) {
            Ok(table) => {
                tracing::info!(file = %self.path.display(), users = table.len(), "htpasswd file loaded");
                let loaded = Arc::new(Loaded::new(table, &self.salt));
                *self.table.write().unwrap_or_else(|p| p.into_inner()) = loaded;
            }
            Err(e) => tracing::error!("{e}; keeping the users already loaded"),
        }
    }

    fn current(&self) -> Arc<Loaded> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether `user` is (still) in the file.
    pub fn exists(&self, user: &str) -> bool {
        self.current().users.contains_key(user)
    }

    fn digest(&self, password: &Secret) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(password.expose().as_bytes());
        h.finalize().into()
    }

    /// Whether `password` is `user`'s.
    pub async fn check(&self, user: &str, password: &Secret) -> Verdict {
        let loaded = self.current();
        let hash = loaded.users.get(user).cloned();
        let digest = self.digest(password);
        if let Some(hash) = &hash {
            let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(v) = verified.get(user) {
                if v.hash == *hash
                    && v.at.elapsed() < REMEMBER
                    && bool::from(v.password.ct_eq(&digest))
                {
                    return Verdict::Valid;
                }
            }
        }
        use std::sync::atomic::Ordering::SeqCst;
        if self.waiting.fetch_add(1, SeqCst) >= MAX_WAITING {
            self.waiting.fetch_sub(1, SeqCst);
            return Verdict::Busy;
        }
        let permit = self.checks.acquire().await;
        self.waiting.fetch_sub(1, SeqCst);
        let Ok(_permit) = permit else {
            return Verdict::Invalid;
        };
        let known = hash.is_some();
        let against = hash.clone().unwrap_or_else(|| loaded.decoy.clone());
        let pw = password.clone();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(pw.expose(), &against))
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or(false)
            && known;
        if let (true, Some(hash)) = (ok, hash) {
            let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            verified.retain(|_, v| v.at.elapsed() < REMEMBER);
            verified.insert(
                user.to_string(),
                Verified {
                    hash,
                    password: digest,
                    at: Instant::now(),
                },
            );
        }
        if ok {
            Verdict::Valid
        } else {
            Verdict::Invalid
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bcrypt_only() {
        let text = "# comment\n\nalice:$2y$05$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234\nbob:{SHA}xyz=\ncarol\nalice:$2y$05$second\n bad name:$2y$05$x\n";
        let (users, warnings) = parse(text);
        assert_eq!(users.len(), 1);
        assert!(users.contains_key("alice"));
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(
            warnings.iter().all(|w| !w.contains("$2y$")),
            "no hashes in warnings"
        );
        assert!(warnings[0].contains("bob") && warnings[0].contains("htpasswd -B"));
    }

    #[tokio::test]
    async fn checks_and_remembers_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("htpasswd");
        let h = bcrypt::hash("s3cret", 4).unwrap();
        std::fs::write(&f, format!("alice:{h}\n")).unwrap();
        let users = Users::load(&f).unwrap();
        let pw = |s: &str| Secret::new(s.to_string());
        use Verdict::*;
        assert_eq!(users.check("alice", &pw("s3cret")).await, Valid);
        assert_eq!(
            users.check("alice", &pw("s3cret")).await,
            Valid,
            "remembered"
        );
        assert_eq!(users.check("alice", &pw("wrong")).await, Invalid);
        assert_eq!(users.check("nobody", &pw("s3cret")).await, Invalid);
        // A new password in the file: the remembered one no longer counts.
        let h2 = bcrypt::hash("n3w", 4).unwrap();
        std::fs::write(&f, format!("alice:{h2}\nbob:{h}\n")).unwrap();
        users.reload_if_changed();
        assert_eq!(users.check("alice", &pw("s3cret")).await, Invalid);
        assert_eq!(users.check("alice", &pw("n3w")).await, Valid);
        assert!(users.exists("bob"));
        // An unreadable file keeps the users already loaded.
        std::fs::remove_file(&f).unwrap();
        users.reload_if_changed();
        assert!(users.exists("bob"));
    }
}
