//! A stored blob opened for serving: its length, then its bytes as a
//! response body (whole or one range) or read whole when it is small.
//! Where the bytes come from is the store's business; callers only see
//! this handle. An open handle keeps reading the bytes it opened even if
//! the blob is evicted or collected meanwhile.

use crate::body::{self, Body};
use crate::error::{Error, Result};
use tokio::io::AsyncReadExt;

/// A blob the store checked and opened.
pub struct Opened {
    len: u64,
    file: tokio::fs::File,
}

impl Opened {
    pub(super) fn file(file: tokio::fs::File, len: u64) -> Opened {
        Opened { len, file }
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
        body::file(self.file, offset, len)
            .await
            .map_err(|e| Error::storage("reading a blob", e))
    }

    /// The whole blob in memory, for content bounded by `limit` bytes (a
    /// manifest): at most `limit` bytes are read.
    pub async fn read_all(self, limit: u64) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len.min(limit) as usize);
        self.file
            .take(limit)
            .read_to_end(&mut out)
            .await
            .map_err(|e| Error::storage("reading a stored manifest", e))?;
        Ok(out)
    }
}
