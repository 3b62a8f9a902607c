//! Pure OCI distribution parsing, with no I/O: request paths into routes,
//! repository names, tags and digests checked against the spec's grammars,
//! media types, and the parts of a manifest the registry must understand.

pub mod digest;
pub mod manifest;
pub mod name;
pub mod route;

pub use digest::{Algorithm, Digest};
pub use name::{Reference, RepoName, Tag};
pub use route::ApiRoute;
