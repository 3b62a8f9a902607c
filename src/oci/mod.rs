//! Pure OCI distribution parsing, with no I/O: request paths into routes,
//! repository names, tags and digests checked against the spec's grammars,
//! media types, the parts of a manifest the registry must understand,
//! what kind of content a manifest holds, and image references as people
//! type them.

pub mod content_type;
pub mod digest;
pub mod image_ref;
pub mod manifest;
pub mod name;
pub mod route;

pub use digest::{Algorithm, Digest};
pub use name::{Reference, RepoName, Tag};
pub use route::ApiRoute;
