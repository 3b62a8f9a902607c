//! The local registry: every distribution-spec endpoint for repositories
//! whose content lives only in Wharf's store (pushes, tags, referrers,
//! deletes). Handlers take a parsed route and the request, and return a
//! response or a typed error; `app` renders the error.

pub mod blobs;
pub mod listing;
pub mod manifests;
pub mod uploads;
