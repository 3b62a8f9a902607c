//! The one response body type, and the ways to make one: empty, a small
//! buffer (JSON, manifests), or a file streamed in bounded chunks so a blob
//! is never held whole in memory.

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, StreamBody};
use std::io;

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

/// Streams `len` bytes of `file` starting at `offset`. Each chunk is one
/// positioned read on the blocking pool straight into the buffer that is
/// sent (no second copy through an intermediate buffer), so a transfer
/// holds at most one chunk in memory at a time.
pub async fn file(file: tokio::fs::File, offset: u64, len: u64) -> io::Result<Body> {
    let file = std::sync::Arc::new(file.into_std().await);
    let end = offset + len;
    let stream = futures_util::stream::try_unfold(offset, move |pos| {
        let file = file.clone();
        async move {
            if pos >= end {
                return Ok(None);
            }
            let want = (end - pos).min(FILE_CHUNK as u64) as usize;
            let chunk = tokio::task::spawn_blocking(move || -> io::Result<Bytes> {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; want];
                let mut got = 0;
                while got < want {
                    let n = file.read_at(&mut buf[got..], pos + got as u64)?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "file shorter than expected",
                        ));
                    }
                    got += n;
                }
                Ok(Bytes::from(buf))
            })
            .await
            .map_err(io::Error::other)??;
            let next = pos + chunk.len() as u64;
            Ok(Some((http_body::Frame::data(chunk), next)))
        }
    });
    Ok(StreamBody::new(stream).boxed_unsync())
}
