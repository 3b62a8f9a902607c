//! The one response body type, and the ways to make one: empty, a small
//! buffer (JSON, manifests), or a file streamed in bounded chunks so a blob
//! is never held whole in memory (in smaller chunks for HTTP/2, see
//! [`with_chunk_limit`]). Also how the rest of a refused request body is
//! read and dropped, so the client gets to read the refusal, and the
//! error a trickling request body is cut off with. Chunks are read into
//! reused buffers,
//! straight from the page cache on the async thread when the bytes are
//! there (`preadv2` with `RWF_NOWAIT`, which never waits for the disk),
//! and on the blocking pool when they are not.

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, StreamBody};
use std::io;
use std::sync::Arc;

/// Every response Wharf sends has this body type.
pub type Body = UnsyncBoxBody<Bytes, io::Error>;

/// How much of a refused request body is read and dropped so the client,
/// still sending, gets to read the error instead of a broken pipe.
pub const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

/// Reads and drops the rest of a request body, up to [`DRAIN_LIMIT`] bytes.
/// A body declared larger than that is not read at all: the refusal goes
/// out at once and the connection is closed after it.
pub async fn drain<B>(body: &mut B)
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    if body.size_hint().lower() > DRAIN_LIMIT {
        return;
    }
    let mut seen = 0u64;
    while seen <= DRAIN_LIMIT {
        match body.frame().await {
            Some(Ok(f)) => seen += f.data_ref().map_or(0, |d| d.len() as u64),
            _ => return,
        }
    }
}

/// A request body must bring at least this much in every `--body-timeout`
/// window (or end): 64 KiB in 30 s is about 2 KiB/s.
pub const MIN_BODY_BYTES: u64 = 64 * 1024;

/// A request body came too slowly: less than [`MIN_BODY_BYTES`] in one
/// `--body-timeout` window. The server cuts such a body off with this.
#[derive(Debug, thiserror::Error)]
#[error("the request body brought less than {MIN_BODY_BYTES} bytes in {0:?}")]
pub struct TooSlow(pub std::time::Duration);

/// Bytes read from disk per chunk when streaming a file.
pub const FILE_CHUNK: usize = 128 * 1024;

tokio::task_local! {
    /// A smaller chunk size for the responses made inside a scope.
    static CHUNK_LIMIT: usize;
}

/// Runs `fut` (a request's handling) so that the file bodies it makes
/// read chunks of at most `limit` bytes. HTTP/2 responses use smaller
/// chunks: for every stream a client does not read, hyper holds two.
pub async fn with_chunk_limit<F: std::future::Future>(limit: usize, fut: F) -> F::Output {
    CHUNK_LIMIT.scope(limit.clamp(1, FILE_CHUNK), fut).await
}

/// The chunk size for a body made now: [`FILE_CHUNK`] unless a smaller
/// limit is in scope.
pub fn chunk_limit() -> usize {
    CHUNK_LIMIT.try_with(|c| *c).unwrap_or(FILE_CHUNK)
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A small body sent in a few pieces, each shared rather than copied
/// together (a tag list shared by the requests that asked for it).
pub fn chunks(pieces: Vec<Bytes>) -> Body {
    let frames = pieces
        .into_iter()
        .map(|b| Ok::<_, io::Error>(http_body::Frame::data(b)));
    StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
}

/// Streams `len` bytes of `file` starting at `offset`, one chunk in memory
/// at a time.
pub async fn file(file: tokio::fs::File, offset: u64, len: u64) -> io::Result<Body> {
    let file = Arc::new(file.into_std().await);
    let end = offset + len;
    let chunk = chunk_limit() as u64;
    let stream = futures_util::stream::try_unfold(offset, move |pos| {
        let file = file.clone();
        async move {
            if pos >= end {
                return Ok(None);
            }
            let want = (end - pos).min(chunk) as usize;
            let chunk = read_chunk(&file, pos, want).await?;
            let next = pos + chunk.len() as u64;
            Ok(Some((http_body::Frame::data(chunk), next)))
        }
    });
    Ok(StreamBody::new(stream).boxed_unsync())
}

/// Reads between 1 and `want` (at most [`FILE_CHUNK`]) bytes of `file` at
/// `pos` into a pooled buffer. Reaching the end of the file first is an
/// error: callers know how long their file is.
pub async fn read_chunk(file: &Arc<std::fs::File>, pos: u64, want: usize) -> io::Result<Bytes> {
    let want = want.min(FILE_CHUNK);
    let mut buf = pool::take();
    #[cfg(target_os = "linux")]
    match nowait::read(file, &mut buf[..want], pos) {
        Some(Ok(0)) => return Err(short_file()),
        Some(Ok(n)) => return Ok(pool::bytes(buf, n)),
        Some(Err(e)) => return Err(e),
        None => {} // not in the page cache: read on the blocking pool
    }
    let file = file.clone();
    let (buf, got) = tokio::task::spawn_blocking(move || -> io::Result<(Vec<u8>, usize)> {
        use std::os::unix::fs::FileExt;
        let mut got = 0;
        while got < want {
            match file.read_at(&mut buf[got..want], pos + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((buf, got))
    })
    .await
    .map_err(io::Error::other)??;
    if got == 0 {
        return Err(short_file());
    }
    Ok(pool::bytes(buf, got))
}

fn short_file() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than expected")
}

/// Non-blocking reads from the page cache.
#[cfg(target_os = "linux")]
mod nowait {
    use std::io;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Cleared when the filesystem does not support `RWF_NOWAIT`.
    static SUPPORTED: AtomicBool = AtomicBool::new(true);

    /// `None` when the read would have to wait for the disk (or cannot be
    /// tried here); otherwise what the read returned.
    pub fn read(file: &std::fs::File, buf: &mut [u8], pos: u64) -> Option<io::Result<usize>> {
        use rustix::io::{preadv2, Errno, ReadWriteFlags};
        if !SUPPORTED.load(Ordering::Relaxed) {
            return None;
        }
        let mut bufs = [io::IoSliceMut::new(buf)];
        match preadv2(file, &mut bufs, pos, ReadWriteFlags::NOWAIT) {
            Ok(n) => Some(Ok(n)),
            Err(Errno::AGAIN) | Err(Errno::INTR) => None,
            // Not supported here (old kernel, filesystem, or a seccomp
            // filter): use plain reads from now on.
            Err(Errno::OPNOTSUPP) | Err(Errno::NOSYS) | Err(Errno::INVAL) | Err(Errno::PERM) => {
                SUPPORTED.store(false, Ordering::Relaxed);
                None
            }
            // Anything else: the plain read reports the real error, if any.
            Err(_) => None,
        }
    }
}

/// Chunk buffers, reused: a freshly allocated chunk costs zeroing and page
/// faults on every read, and a pool bounds how much stays allocated.
mod pool {
    use super::FILE_CHUNK;
    use bytes::Bytes;
    use std::sync::Mutex;

    /// Buffers kept for reuse at most (the rest are freed).
    const KEEP: usize = 32;

    static FREE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

    /// A buffer of [`FILE_CHUNK`] bytes.
    pub fn take() -> Vec<u8> {
        let reused = FREE.lock().unwrap_or_else(|p| p.into_inner()).pop();
        reused.unwrap_or_else(|| vec![0; FILE_CHUNK])
    }

    /// The first `len` bytes of `buf` as `Bytes`; the buffer returns to
    /// the pool when the last reference to them is dropped.
    pub fn bytes(buf: Vec<u8>, len: usize) -> Bytes {
        Bytes::from_owner(Pooled { buf, len })
    }

    struct Pooled {
        buf: Vec<u8>,
        len: usize,
    }

    impl AsRef<[u8]> for Pooled {
        fn as_ref(&self) -> &[u8] {
            &self.buf[..self.len]
        }
    }

    impl Drop for Pooled {
        fn drop(&mut self) {
            let buf = std::mem::take(&mut self.buf);
            if buf.len() == FILE_CHUNK {
                let mut free = FREE.lock().unwrap_or_else(|p| p.into_inner());
                if free.len() < KEEP {
                    free.push(buf);
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn only_len_bytes_show() {
            let mut b = take();
            b[..3].copy_from_slice(b"abc");
            b[3] = b'!';
            let bytes = bytes(b, 3);
            assert_eq!(&bytes[..], b"abc");
            assert_eq!(bytes.slice(1..).len(), 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_bodies_stream_exact_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(FILE_CHUNK * 3 + 17))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        for (off, len) in [
            (0, data.len()),
            (5, FILE_CHUNK * 2),
            (FILE_CHUNK + 3, 1),
            (0, 0),
        ] {
            let f = tokio::fs::File::open(&path).await.unwrap();
            let body = file(f, off as u64, len as u64).await.unwrap();
            let got = body.collect().await.unwrap().to_bytes();
            assert_eq!(&got[..], &data[off..off + len]);
        }
        // A file shorter than promised is an error, never a short success.
        let f = tokio::fs::File::open(&path).await.unwrap();
        let body = file(f, 0, data.len() as u64 + 1).await.unwrap();
        assert!(body.collect().await.is_err());
    }
}
