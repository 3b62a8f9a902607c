//! Upload limits: each owner (a user, or the address of an anonymous
//! client) may hold a bounded number of upload sessions and of bytes
//! parked in them, and all owners together a bounded total of each. A
//! body whose declared length cannot fit is refused before any of it is
//! read. Every session counts what it claimed under its own id,
//! so closing it gives back exactly that, once, whatever happened to its
//! file (committed, cancelled, expired, or a write that failed half way).

use crate::error::{Error, ErrorCode, Result};
use std::collections::HashMap;
use std::sync::Mutex;

/// How long a client told it is over its upload limits should wait.
const RETRY_AFTER_SECS: u64 = 60;

/// How much one owner, and everybody together, may hold in unfinished
/// uploads.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub sessions: usize,
    pub bytes: u64,
    pub total_sessions: usize,
    pub total_bytes: u64,
}

impl Limits {
    /// No limit (maintenance commands).
    pub const NONE: Limits = Limits {
        sessions: usize::MAX,
        bytes: u64::MAX,
        total_sessions: usize::MAX,
        total_bytes: u64::MAX,
    };
}

/// What one owner holds now.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
struct Usage {
    sessions: usize,
    bytes: u64,
}

#[derive(Default)]
struct State {
    /// Everybody's together.
    total: Usage,
    owners: HashMap<String, Usage>,
    /// Each open session: its owner and the bytes it has claimed.
    sessions: HashMap<String, (String, u64)>,
}

/// The limits and what every owner holds against them.
pub struct Quota {
    limits: Limits,
    state: Mutex<State>,
}

fn too_many(message: String) -> Error {
    Error::oci(ErrorCode::TooManyRequests, message)
        .with_header(http::header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())
}

impl Quota {
    pub fn new(limits: Limits) -> Quota {
        Quota {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a session found at start-up (no limit applies: it exists).
    pub fn restore(&self, id: &str, owner: &str, bytes: u64) {
        let mut s = self.state();
        let u = s.owners.entry(owner.to_string()).or_default();
        u.sessions += 1;
        u.bytes += bytes;
        s.total.sessions += 1;
        s.total.bytes += bytes;
        s.sessions
            .insert(id.to_string(), (owner.to_string(), bytes));
    }

    /// Counts session `id` of `owner` as holding `bytes` now: a session
    /// another process started, or one whose bytes were not all kept.
    pub fn set(&self, id: &str, owner: &str, bytes: u64) {
        let known = self.state().sessions.contains_key(id);
        if known {
            self.close(id);
        }
        self.restore(id, owner, bytes);
    }

    /// Opens session `id` for `owner`, or refuses it (429).
    pub fn open(&self, id: &str, owner: &str) -> Result<()> {
        let mut s = self.state();
        if s.total.sessions >= self.limits.total_sessions {
            return Err(too_many(format!(
                "{} upload sessions are open on this registry, its limit; try again later",
                s.total.sessions
            )));
        }
        let u = s.owners.entry(owner.to_string()).or_default();
        if u.sessions >= self.limits.sessions {
            return Err(too_many(format!(
                "{} upload sessions are open for this client, the limit; finish or cancel some (idle ones expire)",
                u.sessions
            )));
        }
        u.sessions += 1;
        s.total.sessions += 1;
        s.sessions.insert(id.to_string(), (owner.to_string(), 0));
        Ok(())
    }

    /// Claims `n` more bytes for session `id`, or refuses them (429). A
    /// session already closed (expired meanwhile) is BLOB_UPLOAD_UNKNOWN.
    pub fn add(&self, id: &str, n: u64) -> Result<()> {
        self.claim(id, n, true)
    }

    /// Whether `n` more bytes would fit session `id` now (a declared
    /// body length), without claiming them.
    pub fn fits(&self, id: &str, n: u64) -> Result<()> {
        self.claim(id, n, false)
    }

    fn claim(&self, id: &str, n: u64, take: bool) -> Result<()> {
        let mut s = self.state();
        let State {
            total,
            owners,
            sessions,
        } = &mut *s;
        let Some((owner, claimed)) = sessions.get_mut(id) else {
            return Err(Error::oci(
                ErrorCode::BlobUploadUnknown,
                "upload session unknown or expired",
            ));
        };
        let u = owners.entry(owner.clone()).or_default();
        if u.bytes.saturating_add(n) > self.limits.bytes {
            return Err(too_many(format!(
                "unfinished uploads of this client would hold {} bytes; the limit is {}",
                u.bytes.saturating_add(n),
                self.limits.bytes
            )));
        }
        if total.bytes.saturating_add(n) > self.limits.total_bytes {
            return Err(too_many(format!(
                "unfinished uploads on this registry would hold {} bytes; the limit is {}; try again later",
                total.bytes.saturating_add(n),
                self.limits.total_bytes
            )));
        }
        if take {
            u.bytes += n;
            total.bytes += n;
            *claimed += n;
        }
        Ok(())
    }

    /// Closes session `id`, giving back what it claimed; a second close
    /// does nothing.
    pub fn close(&self, id: &str) {
        let mut s = self.state();
        let Some((owner, bytes)) = s.sessions.remove(id) else {
            return;
        };
        s.total.sessions = s.total.sessions.saturating_sub(1);
        s.total.bytes = s.total.bytes.saturating_sub(bytes);
        if let Some(u) = s.owners.get_mut(&owner) {
            u.sessions = u.sessions.saturating_sub(1);
            u.bytes = u.bytes.saturating_sub(bytes);
            if *u == Usage::default() {
                s.owners.remove(&owner);
            }
        }
    }

    /// Bytes parked in unfinished uploads now, by everybody.
    pub fn parked(&self) -> u64 {
        self.state().total.bytes
    }

    /// Upload sessions open now, by everybody.
    pub fn sessions(&self) -> usize {
        self.state().total.sessions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_and_bytes_per_owner_given_back_once() {
        let q = Quota::new(Limits {
            sessions: 2,
            bytes: 100,
            ..Limits::NONE
        });
        q.open("a1", "alice").unwrap();
        q.open("a2", "alice").unwrap();
        assert_eq!(
            q.open("a3", "alice").unwrap_err().code(),
            ErrorCode::TooManyRequests
        );
        q.open("b1", "bob").unwrap();
        q.add("a1", 60).unwrap();
        assert_eq!(
            q.add("a2", 41).unwrap_err().code(),
            ErrorCode::TooManyRequests
        );
        q.add("b1", 100).unwrap();
        q.close("a1");
        q.close("a1");
        q.add("a2", 100).unwrap();
        q.open("a3", "alice").unwrap();
        assert_eq!(
            q.add("gone", 1).unwrap_err().code(),
            ErrorCode::BlobUploadUnknown
        );
        q.close("a2");
        q.close("a3");
        q.close("b1");
        assert!(q.state().owners.is_empty() && q.state().sessions.is_empty());
        q.restore("r", "carol", 5);
        q.close("r");
        assert!(q.state().owners.is_empty());
        assert_eq!(q.state().total, Usage::default());
    }

    #[test]
    fn totals_bound_everybody_and_declared_lengths_claim_nothing() {
        let q = Quota::new(Limits {
            sessions: 2,
            bytes: 100,
            total_sessions: 3,
            total_bytes: 150,
        });
        q.open("a1", "alice").unwrap();
        q.open("a2", "alice").unwrap();
        q.open("b1", "bob").unwrap();
        let full = q.open("c1", "carol").unwrap_err();
        assert_eq!(full.code(), ErrorCode::TooManyRequests);
        assert!(full.to_string().contains("on this registry"), "{full}");
        q.fits("a1", 100).unwrap();
        assert!(q.fits("a1", 101).is_err());
        q.add("a1", 100).unwrap();
        assert!(q.fits("b1", 51).is_err(), "the total is the limit now");
        q.add("b1", 50).unwrap();
        assert_eq!(q.parked(), 150);
        q.close("a1");
        q.open("c1", "carol").unwrap();
        assert_eq!(q.parked(), 50);
    }
}
