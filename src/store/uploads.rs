//! Blob upload sessions. On the filesystem, a file per session under
//! `DATA/uploads/<id>`, its repository recorded in the index so sessions
//! survive a restart; the session's offset is the file's length. With a
//! bucket, the session lives there (`store::bucket_uploads`): a record,
//! a multipart upload and a tail, so it survives the data directory and
//! can go on through another Wharf on the bucket. Either way a client
//! that lost a chunk to a crash asks for the status and resumes. A
//! running sha256 covers the bytes appended so far (on the filesystem,
//! while this process held the session: after a restart, or for a sha512
//! digest, the bytes are re-hashed once at the closing PUT). Idle sessions
//! expire after the configured timeout.
//!
//! Each session belongs to an owner (a user, or the address of an
//! anonymous client), and each owner may hold a bounded number of open
//! sessions and of bytes parked in them; past either, 429 TOOMANYREQUESTS.

use super::blobs::{hash_file, BlobStore};
use super::bucket::Bucket;
use super::bucket_uploads::{self as parked, Record};
use super::index::{Index, UploadMeta};
pub use super::quota::Limits;
use super::quota::Quota;
use crate::error::{BoxError, Error, ErrorCode, Result};
use crate::oci::digest::{Algorithm, Digest, Hasher};
use crate::oci::RepoName;
use bytes::Bytes;
use http_body::Body as HttpBody;
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;

/// In-memory state of a session this process has touched.
struct Session {
    repo: RepoName,
    owner: String,
    /// On the filesystem: a sha256 over exactly the first `hashed` bytes
    /// of the file, if valid.
    hasher: Option<(Hasher, u64)>,
}

type SessionLock = Arc<tokio::sync::Mutex<Session>>;

/// All upload sessions.
pub struct Uploads {
    blobs: BlobStore,
    index: Index,
    live: Mutex<HashMap<String, SessionLock>>,
    timeout: Duration,
    quota: Quota,
}

/// A locked session: appends and the final commit go through it.
pub struct SessionGuard<'a> {
    uploads: &'a Uploads,
    id: String,
    session: tokio::sync::OwnedMutexGuard<Session>,
    /// With a bucket: the session's record, as read once locked.
    record: Option<Record>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Uploads {
    /// The sessions of an opened store, each counted against its owner.
    pub(super) async fn new(
        blobs: BlobStore,
        index: Index,
        timeout: Duration,
        limits: Limits,
    ) -> Result<Uploads> {
        let quota = Quota::new(limits);
        if let Some(bucket) = blobs.remote().map(|r| r.bucket.clone()) {
            // Counted as found; one that cannot be read now is counted when
            // a request uses it (see `lock`).
            match parked::list(&bucket).await {
                Err(e) => tracing::warn!(error = %e, "listing upload sessions failed"),
                Ok(sessions) => {
                    for (id, _) in sessions.into_iter().filter(|(_, at)| at.is_some()) {
                        match parked::record(&bucket, &id).await {
                            Ok(Some(r)) => quota.restore(&id, &r.owner, r.len()),
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(session = %id, error = %e, "reading an upload session failed")
                            }
                        }
                    }
                }
            }
        } else {
            for id in index.upload_ids()? {
                if let Some(meta) = index.upload(&id)? {
                    let len =
                        std::fs::metadata(blobs.uploads_dir().join(&id)).map_or(0, |m| m.len());
                    quota.restore(&id, &meta.owner, len);
                }
            }
        }
        Ok(Uploads {
            blobs,
            index,
            live: Mutex::new(HashMap::new()),
            timeout,
            quota,
        })
    }

    /// The bucket sessions live in, with `--storage s3`.
    fn bucket(&self) -> Option<&Bucket> {
        self.blobs.remote().map(|r| &*r.bucket)
    }

    /// Bytes parked in unfinished uploads now.
    pub fn parked_bytes(&self) -> u64 {
        self.quota.parked()
    }

    /// Upload sessions open now (one-request uploads included while they
    /// stream).
    pub fn sessions(&self) -> usize {
        self.quota.sessions()
    }

    /// Counts a one-request upload (a POST with its whole body) against
    /// `owner` while it streams, like a session: see [`Reservation`].
    pub fn reserve(&self, owner: &str) -> Result<Reservation<'_>> {
        let id = format!("post-{}", uuid::Uuid::new_v4());
        self.quota.open(&id, owner)?;
        Ok(Reservation { uploads: self, id })
    }

    /// The session's file (on the filesystem) or spool (with a bucket).
    fn path(&self, id: &str) -> PathBuf {
        self.blobs.uploads_dir().join(id)
    }

    /// Starts a session for `repo`, counted against `owner`, and returns
    /// its id. Past the owner's session limit, 429.
    pub async fn start(&self, repo: &RepoName, owner: &str) -> Result<String> {
        let id = uuid::Uuid::new_v4().to_string();
        self.quota.open(&id, owner)?;
        // Live first, then the file, then the record: the expiry sweep never
        // sees a file or a record of a session that is not live yet.
        self.live_insert(
            &id,
            repo.clone(),
            owner,
            Some((Hasher::new(Algorithm::Sha256), 0)),
        );
        let created = async {
            if let Some(bucket) = self.bucket() {
                let r = Record::new(repo.as_str(), owner, unix_now());
                return parked::put_record(bucket, &id, &r).await;
            }
            tokio::fs::File::create(self.path(&id))
                .await
                .map_err(|e| Error::storage("creating an upload file", e))?;
            self.index.put_upload(
                &id,
                &UploadMeta {
                    repo: repo.as_str().to_string(),
                    started_unix: unix_now(),
                    owner: owner.to_string(),
                },
            )
        }
        .await;
        if let Err(e) = created {
            let _ = self.forget(&id, None).await;
            return Err(e);
        }
        Ok(id)
    }

    fn live_insert(
        &self,
        id: &str,
        repo: RepoName,
        owner: &str,
        hasher: Option<(Hasher, u64)>,
    ) -> SessionLock {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(Session {
                    repo,
                    owner: owner.to_string(),
                    hasher,
                }))
            })
            .clone()
    }

    fn unknown() -> Error {
        Error::oci(
            ErrorCode::BlobUploadUnknown,
            "upload session unknown or expired",
        )
    }

    /// The repository and owner of session `id`, and with a bucket its
    /// record; `None` when there is no such session.
    async fn stored(&self, id: &str) -> Result<Option<(String, String, Option<Record>)>> {
        if let Some(bucket) = self.bucket() {
            return Ok(parked::record(bucket, id)
                .await?
                .map(|r| (r.repo.clone(), r.owner.clone(), Some(r))));
        }
        Ok(self.index.upload(id)?.map(|m| (m.repo, m.owner, None)))
    }

    /// Locks session `id` of `repo` for `owner`; unknown, expired or
    /// another repository's session is BLOB_UPLOAD_UNKNOWN, and so is a
    /// session a logged-in user started, asked for by anyone else.
    pub async fn lock(&self, repo: &RepoName, id: &str, owner: &str) -> Result<SessionGuard<'_>> {
        let existing = {
            let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.get(id).cloned()
        };
        let lock = match existing {
            Some(l) => l,
            None => {
                let (stored_repo, stored_owner, _) =
                    self.stored(id).await?.ok_or_else(Self::unknown)?;
                let stored = RepoName::parse(&stored_repo).map_err(|_| Self::unknown())?;
                self.live_insert(id, stored, &stored_owner, None)
            }
        };
        let session = lock.lock_owned().await;
        if session.repo != *repo || (session.owner.starts_with("user:") && session.owner != owner) {
            return Err(Self::unknown());
        }
        // A session removed while we waited for its lock is gone; with a
        // bucket, the record read now is the session's state (and what it
        // holds counts for its owner, whoever started it).
        let (_, _, record) = self.stored(id).await?.ok_or_else(Self::unknown)?;
        if let Some(r) = &record {
            self.quota.set(id, &r.owner, r.len());
        }
        Ok(SessionGuard {
            uploads: self,
            id: id.to_string(),
            session,
            record,
        })
    }

    /// Removes sessions idle longer than the timeout; returns how many.
    /// A session a request is using right now is left alone.
    pub async fn expire_idle(&self) -> Result<usize> {
        let mut n = 0;
        if let Some(bucket) = self.bucket() {
            let now = super::cache::unix_now();
            let before = now.saturating_sub(self.timeout.as_millis() as u64);
            for (id, recorded) in parked::list(bucket).await? {
                let Some(_held) = self.try_hold(&id) else {
                    continue;
                };
                let removed = match recorded {
                    Some(at) if at < before => {
                        async {
                            let r = parked::record(bucket, &id).await?;
                            parked::remove(bucket, &id, r.as_ref()).await?;
                            self.forget_local(&id).await.map(|()| true)
                        }
                        .await
                    }
                    Some(_) => Ok(false),
                    // Objects of a session whose record went first.
                    None => parked::remove_orphan(bucket, &id, before).await,
                };
                match removed {
                    Ok(r) => n += usize::from(r),
                    // One session the store fails on does not stop the rest.
                    Err(e) => {
                        tracing::warn!(session = %id, error = %e, "expiring an upload session failed")
                    }
                }
            }
        } else {
            for id in self.index.upload_ids()? {
                let Some(_held) = self.try_hold(&id) else {
                    continue;
                };
                let idle = match tokio::fs::metadata(self.path(&id)).await {
                    Ok(m) => m
                        .modified()
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > self.timeout),
                    Err(_) => true, // file lost: the session cannot continue
                };
                if idle {
                    self.forget(&id, None).await?;
                    n += 1;
                }
            }
        }
        // Files with no session (a crash between create and record; with
        // a bucket, a spool no request is using).
        let mut dir = tokio::fs::read_dir(self.blobs.uploads_dir())
            .await
            .map_err(|e| Error::storage("listing uploads", e))?;
        while let Some(entry) = dir
            .next_entry()
            .await
            .map_err(|e| Error::storage("listing uploads", e))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let recorded = self.bucket().is_none() && self.index.upload(&name)?.is_some();
            if !recorded && !self.is_live(&name) {
                let _ = tokio::fs::remove_file(entry.path()).await;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Holds session `id` against requests while expiry looks at it:
    /// `None` when a request is using it now.
    fn try_hold(&self, id: &str) -> Option<Option<tokio::sync::OwnedMutexGuard<Session>>> {
        let in_use = {
            let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.get(id).cloned()
        };
        match in_use.map(|l| l.try_lock_owned()) {
            Some(Err(_)) => None,
            Some(Ok(guard)) => Some(Some(guard)),
            None => Some(None),
        }
    }

    fn is_live(&self, id: &str) -> bool {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.contains_key(id)
    }

    /// Removes session `id`: its record (with a bucket, its objects, as
    /// `record` describes them), its live state, its file, and what it
    /// counted against its owner.
    async fn forget(&self, id: &str, record: Option<&Record>) -> Result<()> {
        match self.bucket() {
            Some(bucket) => parked::remove(bucket, id, record).await?,
            None => {
                self.index.remove_upload(id)?;
            }
        }
        self.forget_local(id).await
    }

    /// Drops what this process keeps of session `id`.
    async fn forget_local(&self, id: &str) -> Result<()> {
        self.quota.close(id);
        {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.remove(id);
        }
        match tokio::fs::remove_file(self.path(id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::storage("removing an upload file", e)),
        }
    }
}

/// Where one request's bytes go.
enum Sink<'a> {
    File(tokio::fs::File),
    Bucket(Box<parked::Appender<'a>>),
}

impl<'a> SessionGuard<'a> {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Bytes received so far.
    pub async fn len(&self) -> Result<u64> {
        if let Some(r) = &self.record {
            return Ok(r.len());
        }
        tokio::fs::metadata(self.uploads.path(&self.id))
            .await
            .map(|m| m.len())
            .map_err(|_| Uploads::unknown())
    }

    /// Opens the session for appending.
    async fn sink(&self) -> Result<Sink<'a>> {
        let uploads: &'a Uploads = self.uploads;
        match (uploads.bucket(), &self.record) {
            (Some(bucket), Some(r)) => {
                let spool = self.uploads.path(&self.id);
                let a = parked::Appender::open(bucket, &self.id, r.clone(), spool).await?;
                Ok(Sink::Bucket(Box::new(a)))
            }
            _ => tokio::fs::OpenOptions::new()
                .append(true)
                .open(self.uploads.path(&self.id))
                .await
                .map(Sink::File)
                .map_err(|e| Error::storage("opening an upload file", e)),
        }
    }

    /// Appends a request body. Bytes that arrived before the client broke
    /// off stay appended: the client can ask for the offset and resume.
    pub async fn append<B>(&mut self, body: B) -> Result<u64>
    where
        B: HttpBody<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let mut body = body;
        if body.is_end_stream() {
            // Nothing to append (the usual closing PUT).
            return self.len().await;
        }
        // A declared length that cannot fit is refused before any is read.
        if let Err(e) = self.uploads.quota.fits(&self.id, body.size_hint().lower()) {
            crate::body::drain(&mut body).await;
            return Err(e);
        }
        let uploads = self.uploads;
        let (quota, id) = (&uploads.quota, self.id.clone());
        let mut len = self.len().await?;
        // On the filesystem: kept only if it covers exactly the file.
        let mut hasher = self.session.hasher.take().filter(|(_, h)| *h == len);
        let mut sink = self.sink().await?;
        let result = async {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| Error::ClientBody(e.into()))?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if let Err(e) = quota.add(&id, data.len() as u64) {
                    // Read (and drop) what the client is still sending, so it
                    // gets to read the refusal rather than a broken pipe.
                    crate::body::drain(&mut body).await;
                    return Err(e);
                }
                match &mut sink {
                    Sink::File(file) => {
                        if let Err(e) = file.write_all(&data).await {
                            hasher = None;
                            return Err(Error::storage("appending to an upload", e));
                        }
                        len += data.len() as u64;
                        if let Some((h, hashed)) = &mut hasher {
                            h.update(&data);
                            *hashed = len;
                        }
                    }
                    Sink::Bucket(a) => a.write(&data).await?,
                }
            }
            Ok(())
        }
        .await;
        // What arrived stays, whatever ended the body.
        let saved = match sink {
            Sink::File(mut file) => file
                .flush()
                .await
                .map(|()| len)
                .map_err(|e| Error::storage("flushing an upload", e)),
            Sink::Bucket(a) => match a.save().await {
                Ok(r) => {
                    let n = r.len();
                    // Bytes not kept (a request cut short) count no more.
                    quota.set(&id, &r.owner, n);
                    self.record = Some(r);
                    Ok(n)
                }
                Err(e) => Err(e),
            },
        };
        self.session.hasher = hasher;
        let len = saved?;
        result.map(|()| len)
    }

    /// Verifies the whole upload against `expected` and stores it as that
    /// blob. On a mismatch the session is discarded.
    pub(super) async fn commit(mut self, expected: &Digest) -> Result<u64> {
        if let (Some(bucket), Some(r)) = (self.uploads.bucket(), self.record.take()) {
            let spool = self.uploads.path(&self.id);
            let a = parked::Appender::open(bucket, &self.id, r.clone(), spool).await?;
            return match a.commit(&self.uploads.blobs, expected).await? {
                Ok(len) => {
                    self.uploads.forget(&self.id, None).await?;
                    Ok(len)
                }
                Err(got) => {
                    let current = parked::record(bucket, &self.id).await?;
                    self.uploads.forget(&self.id, current.as_ref()).await?;
                    Err(mismatch(&got, expected))
                }
            };
        }
        let path = self.uploads.path(&self.id);
        let len = self.len().await?;
        let got = match self.session.hasher.take() {
            Some((h, hashed)) if hashed == len && expected.algorithm() == Algorithm::Sha256 => {
                h.finish()
            }
            _ => hash_file(path.clone(), expected.algorithm())
                .await
                .map_err(|e| Error::storage("hashing an upload", e))?,
        };
        if got != *expected {
            self.cancel().await?;
            return Err(mismatch(&got, expected));
        }
        // Installed even when the blob is stored already: a copy damaged
        // behind Wharf's back is replaced by this verified one.
        self.uploads.blobs.install(path, expected).await?;
        self.uploads.forget(&self.id, None).await?;
        Ok(len)
    }

    /// Discards the session and its bytes.
    pub async fn cancel(self) -> Result<()> {
        self.uploads.forget(&self.id, self.record.as_ref()).await
    }
}

fn mismatch(got: &Digest, expected: &Digest) -> Error {
    Error::oci(
        ErrorCode::DigestInvalid,
        format!("uploaded content hashes to {got}, not {expected}"),
    )
}

/// A one-request upload counted as a session while it streams; dropping
/// it gives the allowance back.
pub struct Reservation<'a> {
    uploads: &'a Uploads,
    id: String,
}

/// The body of a reserved upload ran past its owner's byte limit.
#[derive(Debug)]
struct OverLimit(Error);

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for OverLimit {}

impl Reservation<'_> {
    /// `body`, with every data frame claimed against the owner's bytes;
    /// past the limit the body fails, and [`Reservation::refusal`] turns
    /// that failure back into the 429.
    pub fn counted<B>(&self, body: B) -> Counted<'_, B> {
        Counted {
            inner: body,
            quota: &self.uploads.quota,
            id: &self.id,
            refused: None,
            declared_checked: false,
        }
    }

    /// The 429 when `e` is a counted body running past its limit, else `e`.
    pub fn refusal(e: Error) -> Error {
        match e {
            Error::ClientBody(b) => match b.downcast::<OverLimit>() {
                Ok(over) => over.0,
                Err(b) => Error::ClientBody(b),
            },
            other => other,
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.uploads.quota.close(&self.id);
    }
}

/// A request body whose bytes are claimed against an upload allowance.
pub struct Counted<'a, B> {
    inner: B,
    quota: &'a Quota,
    id: &'a str,
    /// Past the limit: the refusal, and the bytes read and dropped since.
    refused: Option<(Error, u64)>,
    /// Whether the declared length was checked against the limits.
    declared_checked: bool,
}

impl<B> HttpBody for Counted<'_, B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = &mut *self;
        if !this.declared_checked {
            this.declared_checked = true;
            let declared = this.inner.size_hint().lower();
            if let Err(e) = this.quota.fits(this.id, declared) {
                if declared > crate::body::DRAIN_LIMIT {
                    // Not worth reading: refused at once.
                    return Poll::Ready(Some(Err(Box::new(OverLimit(e)))));
                }
                this.refused = Some((e, 0));
            }
        }
        loop {
            let frame = std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_frame(cx));
            // Past the limit, what the client still sends is read and
            // dropped (up to body::DRAIN_LIMIT), so it gets to read the refusal.
            if let Some((_, drained)) = &mut this.refused {
                match frame {
                    Some(Ok(f)) if *drained <= crate::body::DRAIN_LIMIT => {
                        *drained += f.data_ref().map_or(0, |d| d.len() as u64);
                        continue;
                    }
                    _ => {
                        let (e, _) = this.refused.take().unwrap_or((Uploads::unknown(), 0));
                        return Poll::Ready(Some(Err(Box::new(OverLimit(e)))));
                    }
                }
            }
            return match frame {
                Some(Ok(frame)) => {
                    if let Some(d) = frame.data_ref() {
                        if let Err(e) = this.quota.add(this.id, d.len() as u64) {
                            this.refused = Some((e, 0));
                            continue;
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
                None => Poll::Ready(None),
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
