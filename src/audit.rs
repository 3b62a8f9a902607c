//! The audit log: one line, on its own tracing target (`wharf::audit`),
//! for every change to a local repository: a manifest push (each tag with
//! its old and new target), a tag or manifest delete, a blob delete, and
//! every maintenance run through `/admin/` (garbage collection, verify). Each
//! names who did it and from which address. Nothing secret is in it.
//! Operators route it with `WHARF_LOG`, e.g. `info,wharf::audit=info`.

use crate::auth::Caller;
use crate::oci::RepoName;
use crate::registry::Change;

/// The tracing target audit lines are written under.
pub const TARGET: &str = "wharf::audit";

/// Writes the audit line of a maintenance run (`summary`) by `caller`.
pub fn maintenance(caller: &Caller, summary: &str) {
    let user = caller.identity.name();
    let addr = caller.addr.ip();
    tracing::info!(target: TARGET, %user, %addr, "maintenance: {summary}");
}

/// Writes the audit line(s) of `change` to repository `repo` by `caller`.
pub fn record(caller: &Caller, repo: &RepoName, change: &Change) {
    let user = caller.identity.name();
    let addr = caller.addr.ip();
    let repo = repo.as_str();
    match change {
        Change::ManifestPushed { digest, tags } if tags.is_empty() => {
            tracing::info!(target: TARGET, %user, %addr, %repo, %digest, "manifest pushed");
        }
        Change::ManifestPushed { digest, tags } => {
            for (tag, old) in tags {
                let tag = tag.as_str();
                match old {
                    Some(old) if old == digest => {
                        tracing::info!(target: TARGET, %user, %addr, %repo, %digest, %tag, "manifest pushed, tag unchanged")
                    }
                    Some(old) => {
                        tracing::info!(target: TARGET, %user, %addr, %repo, %digest, %tag, %old, new = %digest, "tag moved")
                    }
                    None => {
                        tracing::info!(target: TARGET, %user, %addr, %repo, %digest, %tag, new = %digest, "tag created")
                    }
                }
            }
        }
        Change::TagDeleted { tag, digest } => {
            let old = digest.as_ref().map(|d| d.to_string()).unwrap_or_default();
            tracing::info!(target: TARGET, %user, %addr, %repo, tag = tag.as_str(), %old, "tag deleted");
        }
        Change::ManifestDeleted { digest, tags } => {
            tracing::info!(target: TARGET, %user, %addr, %repo, %digest, tags = %tags.join(","), "manifest deleted");
        }
        Change::BlobDeleted { digest } => {
            tracing::info!(target: TARGET, %user, %addr, %repo, %digest, "blob deleted");
        }
    }
}
