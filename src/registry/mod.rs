//! The local registry: every distribution-spec endpoint for repositories
//! whose content lives only in Wharf's store (pushes, tags, referrers,
//! deletes). Handlers take a parsed route and the request, and return a
//! response or a typed error; `app` renders the error.

pub mod blobs;
pub mod listing;
pub mod manifests;
pub mod referrers;
pub mod uploads;

use crate::oci::{Digest, Tag};

/// A change a handler made to a local repository, attached to its
/// response (as an extension) so the layer that knows who asked can
/// record it in the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A manifest was pushed; each tag with what it pointed at before.
    ManifestPushed {
        digest: Digest,
        tags: Vec<(Tag, Option<Digest>)>,
    },
    /// A tag was removed (the digest it pointed at, if readable).
    TagDeleted { tag: Tag, digest: Option<Digest> },
    /// A manifest was removed, with the tags that pointed at it.
    ManifestDeleted { digest: Digest, tags: Vec<String> },
    /// A blob was unlinked from the repository.
    BlobDeleted { digest: Digest },
}
