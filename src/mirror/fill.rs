//! Single-flight cache fills of mirrored blobs. A fill is its own task,
//! owned by no client: it streams the upstream body into a new blob of the
//! store (hashed as it goes), publishes how many bytes are written through
//! a `watch` channel, verifies the digest and commits the blob. Every
//! client, the first included, reads the growing blob through its spool
//! up to the published watermark, so N concurrent misses cost one upstream
//! transfer, a client that disconnects cannot break the fill, and a failed
//! fill ends every reader's body with an error (never a short success).

use crate::body::Body;
use crate::oci::Digest;
use crate::store::{Spool, Store};
use crate::upstream::{Upstream, UpstreamError};
use futures_util::FutureExt;
use http::Method;
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How long the upstream may pause before what arrived so far is handed
/// to the fill's readers (they otherwise get it batch by batch).
const PUBLISH_PAUSE: Duration = Duration::from_millis(2);

/// However the upstream paces its frames, readers get what arrived at
/// least this often.
const PUBLISH_EVERY: Duration = Duration::from_millis(50);

/// Why a fill failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FillError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("upstream sent bytes that do not match {0}")]
    Corrupt(Digest),
    #[error("cache storage failed: {0}")]
    Storage(String),
    /// The bytes were verified but could not be stored. Readers with the
    /// file open still finish; the state stays "verified", not failed.
    #[error("verified but not stored: {0}")]
    Unstored(String),
}

/// What a fill has done so far.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Waiting for the upstream's answer.
    Connecting,
    /// `written` bytes of `total` can be read from `spool`; `verified`
    /// once all of them are there and match the digest (the blob is then
    /// being committed).
    Streaming {
        spool: Spool,
        total: Option<u64>,
        written: u64,
        verified: bool,
    },
    /// Verified and in the store; `spool` still reads it.
    Done {
        total: u64,
        spool: Spool,
    },
    Failed(FillError),
}

/// Fills are shared by requests for the same digest from the same
/// upstream repository: a request naming another repository (which may not
/// hold the blob upstream) never rides on, or spoils, someone else's fill.
type FillKey = (String, String, Digest);

/// The fills in flight.
pub struct Fills {
    inflight: Mutex<HashMap<FillKey, watch::Receiver<Progress>>>,
    /// How many fill tasks are running (shutdown waits for them: a client
    /// may have its whole, verified blob before the fill has stored it).
    running: watch::Sender<usize>,
}

impl Default for Fills {
    fn default() -> Fills {
        Fills {
            inflight: Mutex::default(),
            running: watch::Sender::new(0),
        }
    }
}

/// Counts a fill task as running until dropped (also when it is aborted).
struct Running(watch::Sender<usize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// What a fill needs to run.
pub struct FillSource {
    pub upstream: Arc<Upstream>,
    /// How long the upstream body may stall before the fill gives up.
    pub idle_timeout: Duration,
    pub repo: String,
    pub store: Store,
}

impl Fills {
    /// Joins the fill of `digest` from `source`'s repository, starting it
    /// if none is running. `None` when the blob has meanwhile been cached
    /// (checked under the lock the fill leaves the map with, so a late
    /// request never starts a second download).
    pub fn join(
        self: &Arc<Self>,
        digest: &Digest,
        source: FillSource,
    ) -> Option<watch::Receiver<Progress>> {
        let key: FillKey = (
            source.upstream.name().to_string(),
            source.repo.clone(),
            digest.clone(),
        );
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = inflight.get(&key) {
            return Some(rx.clone());
        }
        if source
            .store
            .index()
            .mirror_blob(source.upstream.name(), digest)
            .unwrap_or(false)
        {
            return None;
        }
        let (tx, rx) = watch::channel(Progress::Connecting);
        inflight.insert(key.clone(), rx.clone());
        let fills = self.clone();
        let digest = digest.clone();
        self.running.send_modify(|n| *n += 1);
        let running = Running(self.running.clone());
        tokio::spawn(async move {
            let _running = running;
            let outcome = run(&digest, &source, &tx).await;
            match &outcome {
                Ok((total, _)) => {
                    tracing::info!(%digest, upstream = source.upstream.name(), bytes = total, "cached blob");
                }
                // A miss is routine (scanners ask for digests that do not
                // exist): the upstream logs it at debug and sums them up.
                Err(FillError::Upstream(UpstreamError::NotFound)) => {
                    tracing::debug!(%digest, upstream = source.upstream.name(), "blob not found upstream");
                }
                Err(e) => {
                    tracing::warn!(%digest, upstream = source.upstream.name(), error = %e, "blob fill failed");
                }
            }
            // Leave the map before the final state: a late joiner then finds
            // the blob in the store, or starts a fresh fill after a failure.
            fills
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
            match outcome {
                Ok((total, spool)) => {
                    let _ = tx.send(Progress::Done { total, spool });
                }
                // Readers already holding the (verified) file finish from
                // it; anyone else finds it gone and errors.
                Err(FillError::Unstored(_)) => {}
                Err(e) => {
                    let _ = tx.send(Progress::Failed(e));
                }
            }
        });
        Some(rx)
    }

    /// How many fill tasks are running now.
    pub fn running(&self) -> usize {
        *self.running.borrow()
    }

    /// Waits until no fill is running.
    pub async fn settled(&self) {
        let mut rx = self.running.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

async fn run(
    digest: &Digest,
    src: &FillSource,
    tx: &watch::Sender<Progress>,
) -> Result<(u64, Spool), FillError> {
    let storage = |e: crate::error::Error| FillError::Storage(e.to_string());
    let resp = src
        .upstream
        .send(Method::GET, &src.repo, &format!("blobs/{digest}"), &[])
        .await?;
    let total = resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut temp = src
        .store
        .new_blob(digest.algorithm())
        .await
        .map_err(storage)?;
    let spool = temp.spool().await.map_err(storage)?;
    let _ = tx.send(Progress::Streaming {
        spool: spool.clone(),
        total,
        written: 0,
        verified: false,
    });
    let mut body = resp.into_body();
    let mut written: u64 = 0;
    let mut published: u64 = 0;
    let mut last_publish = std::time::Instant::now();
    loop {
        // Publish everything whenever the upstream makes us wait for more
        // than a moment. (At full speed the next frame is microseconds
        // away: flushing a few KiB at every such pause cost two thread
        // hand-offs per frame.)
        let frame = match body.frame().now_or_never() {
            Some(f) => f,
            None => match next_soon(&mut body, published < written, last_publish).await {
                Some(f) => f,
                None => {
                    if published < written {
                        temp.flush().await.map_err(storage)?;
                        publish(tx, written, false);
                        published = written;
                        last_publish = std::time::Instant::now();
                    }
                    tokio::time::timeout(src.idle_timeout, body.frame())
                        .await
                        .map_err(|_| {
                            UpstreamError::Unavailable(format!(
                                "upstream body stalled for {:?}",
                                src.idle_timeout
                            ))
                        })?
                }
            },
        };
        let Some(frame) = frame else { break };
        let frame = frame
            .map_err(|e| UpstreamError::Unavailable(format!("upstream body broke off: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let len = data.len() as u64;
        src.upstream.metrics().received(len);
        temp.write(data).await.map_err(storage)?;
        written += len;
        if total.is_some_and(|t| written > t) {
            return Err(UpstreamError::Unavailable(
                "upstream sent more than its Content-Length".into(),
            )
            .into());
        }
        // Batches land in the file as they are written (about every MiB).
        if temp.on_disk() > published {
            published = temp.on_disk();
            publish(tx, published, false);
            last_publish = std::time::Instant::now();
        }
    }
    if total.is_some_and(|t| t != written) {
        return Err(UpstreamError::Unavailable(format!(
            "upstream sent {written} of {} bytes",
            total.unwrap_or(0)
        ))
        .into());
    }
    let got = temp.finish().await.map_err(storage)?;
    if got != *digest {
        return Err(FillError::Corrupt(digest.clone()));
    }
    // Verified: readers may finish now, while the file is made durable.
    publish(tx, written, true);
    let unstored = |e: crate::error::Error| FillError::Unstored(e.to_string());
    src.store
        .commit_fill(temp, src.upstream.name(), digest, written)
        .await
        .map_err(unstored)?;
    Ok((written, spool))
}

/// The next frame if it comes within [`PUBLISH_PAUSE`]; `None` when the
/// caller should publish what it holds first: the pause was longer, or
/// (with `unpublished` bytes) nothing was published for [`PUBLISH_EVERY`]
/// (a trickling upstream whose frames are never that far apart).
async fn next_soon<B>(
    body: &mut B,
    unpublished: bool,
    last_publish: std::time::Instant,
) -> Option<Option<Result<http_body::Frame<bytes::Bytes>, B::Error>>>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    if unpublished && last_publish.elapsed() >= PUBLISH_EVERY {
        return None;
    }
    tokio::time::timeout(PUBLISH_PAUSE, body.frame()).await.ok()
}

/// Tells readers that `written` bytes are in the temp file, and whether
/// they are all there and verified.
fn publish(tx: &watch::Sender<Progress>, written: u64, verified: bool) {
    tx.send_modify(|p| {
        if let Progress::Streaming {
            written: w,
            verified: v,
            ..
        } = p
        {
            *w = written;
            *v = verified;
        }
    });
}

/// Waits until the fill has an answer from upstream: the blob's size, or
/// why it failed.
pub async fn first_answer(rx: &mut watch::Receiver<Progress>) -> Result<Option<u64>, FillError> {
    loop {
        let p = rx.borrow_and_update().clone();
        match p {
            Progress::Connecting => {}
            Progress::Streaming { total, .. } => return Ok(total),
            Progress::Done { total, .. } => return Ok(Some(total)),
            Progress::Failed(e) => return Err(e),
        }
        if rx.changed().await.is_err() {
            return Err(FillError::Storage("fill task vanished".into()));
        }
    }
}

/// A body streaming bytes `start..end` of a fill as they are written. It
/// ends only after the fill is verified (or with an error when it fails).
pub fn reader(rx: watch::Receiver<Progress>, start: u64, end: Option<u64>) -> Body {
    struct State {
        rx: watch::Receiver<Progress>,
        spool: Option<Spool>,
        pos: u64,
        end: Option<u64>,
        finished: bool,
        chunk: usize,
    }
    let state = State {
        rx,
        spool: None,
        pos: start,
        end,
        finished: false,
        chunk: crate::body::chunk_limit(),
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        if s.finished {
            return None;
        }
        loop {
            let progress = s.rx.borrow_and_update().clone();
            let (available, complete) = match progress {
                Progress::Connecting => (0, false),
                Progress::Streaming {
                    spool,
                    written,
                    verified,
                    ..
                } => {
                    s.spool.get_or_insert(spool);
                    (written, verified)
                }
                Progress::Done { total, spool } => {
                    s.spool.get_or_insert(spool);
                    (total, true)
                }
                Progress::Failed(e) => {
                    s.finished = true;
                    return Some((Err(io::Error::other(e.to_string())), s));
                }
            };
            // Until the digest is verified, the last byte of what this
            // client asked for is held back: its response cannot complete
            // before the fill is known to be good.
            let limit = match (s.end, complete) {
                (Some(e), true) => e.min(available),
                (Some(e), false) => available.min(e.saturating_sub(1)),
                (None, _) => available,
            };
            if s.pos < limit {
                let want = (limit - s.pos).min(s.chunk as u64) as usize;
                let spool = s.spool.as_ref()?;
                match spool.read(s.pos, want).await {
                    Ok(chunk) => {
                        s.pos += chunk.len() as u64;
                        return Some((Ok(chunk), s));
                    }
                    Err(e) => {
                        s.finished = true;
                        return Some((Err(e), s));
                    }
                }
            }
            if complete {
                return None;
            }
            if s.rx.changed().await.is_err() {
                // The sender is gone; its last state is final.
                let last = s.rx.borrow().clone();
                if !matches!(last, Progress::Done { .. } | Progress::Failed(_)) {
                    s.finished = true;
                    return Some((Err(io::Error::other("fill ended without a result")), s));
                }
            }
        }
    });
    let frames = futures_util::StreamExt::map(stream, |r| r.map(http_body::Frame::data));
    http_body_util::StreamBody::new(frames).boxed_unsync()
}
