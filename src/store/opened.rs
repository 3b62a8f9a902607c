//! A stored blob opened for serving: its length, then its bytes as a
//! response body (whole or one range) or read whole when it is small.
//! Where the bytes come from (a file of the data directory, or with
//! `--storage s3` an object the local cache lacks) is the store's
//! business; callers only see this handle. An open file keeps reading the
//! bytes it opened even if the blob is evicted or collected meanwhile.

use super::blobs::BlobStore;
use super::remote::{self, Remote};
use crate::body::{self, Body};
use crate::error::{Error, Result};
use crate::oci::Digest;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// A blob the store checked and opened.
pub struct Opened {
    len: u64,
    source: Source,
}

enum Source {
    /// A sealed file of the data directory.
    File(tokio::fs::File),
    /// An object in the bucket, read (and checked) when the body is made.
    Bucket {
        blobs: BlobStore,
        remote: Arc<Remote>,
        digest: Digest,
    },
}

impl Opened {
    pub(super) fn file(file: tokio::fs::File, len: u64) -> Opened {
        Opened {
            len,
            source: Source::File(file),
        }
    }

    pub(super) fn bucket(
        blobs: BlobStore,
        remote: Arc<Remote>,
        digest: Digest,
        len: u64,
    ) -> Opened {
        Opened {
            len,
            source: Source::Bucket {
                blobs,
                remote,
                digest,
            },
        }
    }

    /// The blob's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the blob is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A body streaming `len` bytes from `offset`, one bounded chunk in
    /// memory at a time.
    pub async fn body(self, offset: u64, len: u64) -> Result<Body> {
        let read_err = |e| Error::storage("reading a blob", e);
        match self.source {
            Source::File(file) => body::file(file, offset, len).await.map_err(read_err),
            // The whole blob: streamed from the bucket, checked as it goes,
            // and kept locally once it checked out.
            Source::Bucket {
                blobs,
                remote,
                digest,
            } if offset == 0 && len == self.len => {
                // One reader at a time copies it into the local cache; the
                // others only stream it (checked all the same).
                let filling = remote.start_filling(&digest, len);
                let fill = match &filling {
                    Some(_) => blobs.temp(digest.algorithm()).await.ok(),
                    None => None,
                };
                let d = digest.clone();
                // `done` gets the fill once it hashed to the digest.
                remote::verified_body(remote, digest, len, fill, move |t| async move {
                    let _filling = filling;
                    if let Err(e) = t.install_local(&blobs, &d).await {
                        tracing::debug!(digest = %d, error = %e, "keeping a blob locally failed");
                    }
                })
                .await
            }
            // A range: fetched whole and checked into the local cache
            // first (a range of an unchecked object could be anything).
            Source::Bucket {
                blobs,
                remote,
                digest,
            } => {
                let mut temp = blobs.temp(digest.algorithm()).await?;
                if remote.download(&digest, &mut temp).await?.is_none() {
                    return Err(Error::storage(
                        "reading a blob",
                        std::io::Error::new(std::io::ErrorKind::NotFound, "left the bucket"),
                    ));
                }
                // Opened before it is kept: the local cache may let it go
                // at once (a blob larger than the whole cache).
                let file = temp.reopen().await?;
                temp.install_local(&blobs, &digest).await?;
                body::file(file, offset, len).await.map_err(read_err)
            }
        }
    }

    /// The whole blob in memory, for content bounded by `limit` bytes (a
    /// manifest): at most `limit` bytes are read, and from the bucket
    /// only bytes that hash to the digest are returned.
    pub async fn read_all(self, limit: u64) -> Result<Vec<u8>> {
        match self.source {
            Source::File(file) => {
                let mut out = Vec::with_capacity(self.len.min(limit) as usize);
                file.take(limit)
                    .read_to_end(&mut out)
                    .await
                    .map_err(|e| Error::storage("reading a stored manifest", e))?;
                Ok(out)
            }
            Source::Bucket { blobs, digest, .. } => {
                blobs.read_checked(&digest, limit).await?.ok_or_else(|| {
                    Error::storage(
                        "reading a stored manifest",
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("{digest} in the bucket is missing, too large or not intact"),
                        ),
                    )
                })
            }
        }
    }
}
