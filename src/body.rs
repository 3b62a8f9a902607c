//! The one response body type, and the ways to make one: empty, a small
//! buffer (JSON, manifests), or a file streamed in bounded chunks so a blob
//! is never held whole in memory.

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, StreamBody};
use std::io;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Every response Wharf sends has this body type.
pub type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Bytes read from disk per chunk when streaming a file.
const FILE_CHUNK: usize = 256 * 1024;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Streams `len` bytes of `file` starting at `offset`.
pub async fn file(mut file: tokio::fs::File, offset: u64, len: u64) -> io::Result<Body> {
    if offset > 0 {
        file.seek(io::SeekFrom::Start(offset)).await?;
    }
    let reader = file.take(len);
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, FILE_CHUNK);
    let frames = futures_util::StreamExt::map(stream, |r| r.map(http_body::Frame::data));
    Ok(StreamBody::new(frames).boxed_unsync())
}
