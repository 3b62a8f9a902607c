//! The bucket behind `--storage s3`, through the `object_store` crate
//! (signing, multipart uploads, retries): small objects (index records)
//! put and got whole, blobs uploaded from a local file (multipart past
//! [`SINGLE_PUT`]) and read as streams, deletes, listings. Every name is
//! under the configured prefix. Timeouts and retries are short, so an
//! unreachable store fails a request in seconds, as a 503, never a hang.
//!
//! Start-up checks the bucket ([`Bucket::connect`]): a write, a read and
//! a delete of a probe object, with a message that says what is wrong
//! (credentials, no such bucket, clock skew, unreachable).

use crate::config::S3Config;
use crate::error::{Error, Result, StorageUnavailable as Unavailable};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Blobs up to this size go up in one PUT; larger ones in parts.
const SINGLE_PUT: u64 = 8 << 20;
/// The part size of a multipart upload.
const PART: usize = 8 << 20;
/// Parts in flight at once during one upload.
const PARTS_IN_FLIGHT: usize = 2;
/// Uploads running at once; the rest wait. Each holds up to
/// `PART * (PARTS_IN_FLIGHT + 1)` bytes in memory, so this bounds what
/// uploads to the bucket can take: 4 × 24 MiB.
const UPLOADS: usize = 4;
/// How long a streamed read may wait for the store's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a streamed read may wait for its next chunk.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest object S3 copies in one request.
const COPY_LIMIT: u64 = 5 << 30;

/// Bytes read from the local file per write into an upload.
const READ_CHUNK: usize = 1 << 20;

/// One listed object.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its name, without the configured prefix.
    pub name: String,
    pub size: u64,
    /// Last modified, unix milliseconds.
    pub modified: u64,
}

/// A configured bucket.
pub struct Bucket {
    /// For requests with small bodies and upload parts: a 30 s limit each.
    store: Arc<dyn ObjectStore>,
    /// For streamed reads, which may take as long as the client reading
    /// them: no overall limit, but [`ANSWER_TIMEOUT`] for the answer and
    /// [`IDLE_TIMEOUT`] between chunks.
    reader: Arc<dyn ObjectStore>,
    /// The same client as `store`, for multipart uploads kept open across
    /// requests (upload sessions): their ids and parts are ours to keep.
    parts: Arc<dyn MultipartStore>,
    prefix: String,
    identity: String,
    uploads: tokio::sync::Semaphore,
}

/// Turns an `object_store` error into ours. Callers that expect a
/// missing object check [`is_not_found`] first; anything reaching here is
/// the store failing the request (down, refusing the key, the bucket
/// gone): clients get 503, and the log says what the store said.
fn fail(context: &str, e: object_store::Error) -> Error {
    use object_store::Error as E;
    let what = match &e {
        E::NotFound { .. } => format!("the object or the bucket is missing: {e}"),
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
            format!("the store refused the credentials: {e}")
        }
        _ => e.to_string(),
    };
    Error::storage(context.to_string(), Unavailable(what))
}

/// Whether `e` says the object does not exist.
fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl Bucket {
    /// Connects to the configured bucket and checks that it can be
    /// written, read and deleted from; the error says what is wrong.
    pub async fn connect(cfg: &S3Config) -> Result<Bucket> {
        use object_store::aws::AmazonS3Builder;
        use object_store::{BackoffConfig, ClientOptions, RetryConfig};
        // No `from_env`: only the settings Wharf was given apply (the
        // machine's own AWS_* variables must not change where it writes).
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(500),
                base: 2.0,
            },
            max_retries: 2,
            retry_timeout: Duration::from_secs(5),
        };
        let options = ClientOptions::new()
            .with_allow_http(true)
            .with_connect_timeout(Duration::from_secs(2));
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_access_key_id(&cfg.access_key_id)
            .with_secret_access_key(cfg.secret_access_key.expose())
            .with_virtual_hosted_style_request(!cfg.path_style)
            .with_retry(retry);
        let where_ = match &cfg.endpoint {
            Some(e) => {
                b = b.with_endpoint(e.as_str().trim_end_matches('/'));
                e.as_str().trim_end_matches('/').to_string()
            }
            None => format!("AWS {}", cfg.region),
        };
        let build = |options: ClientOptions| {
            b.clone().with_client_options(options).build().map_err(|e| {
                Error::storage("configuring the S3 client", io::Error::other(e.to_string()))
            })
        };
        let store = Arc::new(build(
            options.clone().with_timeout(Duration::from_secs(30)),
        )?);
        let reader = build(options.with_timeout_disabled())?;
        let bucket = Bucket {
            store: store.clone(),
            reader: Arc::new(reader),
            parts: store,
            prefix: cfg.prefix.clone(),
            identity: format!("s3://{}/{} at {where_}", cfg.bucket, cfg.prefix),
            uploads: tokio::sync::Semaphore::new(UPLOADS),
        };
        bucket.check(cfg).await?;
        Ok(bucket)
    }

    /// Writes, reads and deletes a probe object.
    async fn check(&self, cfg: &S3Config) -> Result<()> {
        let name = format!("_wharf/probe-{}", uuid::Uuid::new_v4().simple());
        let path = self.path(&name)?;
        let body = Bytes::from_static(b"wharf start-up check\n");
        let explain = |step: &str, e: object_store::Error| -> Error {
            let text = e.to_string();
            let hint = if is_not_found(&e) {
                format!(
                    "the bucket {:?} does not exist (create it first)",
                    cfg.bucket
                )
            } else if matches!(
                e,
                object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
            ) {
                "the credentials were refused: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or s3_access_key_id / s3_secret_access_key_file) and that the key may read and write the bucket".into()
            } else if text.contains("too old")
                || text.contains("RequestTimeTooSkewed")
                || text.contains("skew")
            {
                "the object store refused the request's time: this machine's clock is off (check NTP)".into()
            } else if text.contains("AuthorizationHeaderMalformed") || text.contains("region") {
                format!(
                    "the object store refused the region {:?}: set --s3-region to the store's region",
                    cfg.region
                )
            } else {
                "the object store cannot be reached or failed: check --s3-endpoint and that it is running".into()
            };
            Error::storage(
                format!("checking {} ({step})", self.identity),
                io::Error::other(format!("{hint}; the store said: {text}")),
            )
        };
        self.store
            .put(&path, PutPayload::from_bytes(body.clone()))
            .await
            .map_err(|e| explain("write", e))?;
        let got = self
            .store
            .get(&path)
            .await
            .map_err(|e| explain("read", e))?
            .bytes()
            .await
            .map_err(|e| explain("read", e))?;
        if got != body {
            return Err(Error::storage(
                format!("checking {}", self.identity),
                io::Error::other("the probe object read back differs from what was written"),
            ));
        }
        self.store
            .delete(&path)
            .await
            .map_err(|e| explain("delete", e))?;
        Ok(())
    }

    /// Names the bucket and prefix (for logs, and for the index to know
    /// which bucket its records came from).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn path(&self, name: &str) -> Result<ObjectPath> {
        ObjectPath::parse(format!("{}{name}", self.prefix))
            .map_err(|e| Error::storage("naming an object", io::Error::other(e.to_string())))
    }

    /// Puts a small object whole.
    pub async fn put_small(&self, name: &str, bytes: Bytes) -> Result<()> {
        let path = self.path(name)?;
        self.store
            .put(&path, PutPayload::from_bytes(bytes))
            .await
            .map(|_| ())
            .map_err(|e| fail("writing to the bucket", e))
    }

    /// Gets a small object whole; `None` when it does not exist, an error
    /// when it is larger than `limit`.
    pub async fn get_small(&self, name: &str, limit: u64) -> Result<Option<Bytes>> {
        let path = self.path(name)?;
        let got = match self.store.get(&path).await {
            Ok(g) => g,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(fail("reading from the bucket", e)),
        };
        if got.meta.size > limit {
            return Err(Error::storage(
                "reading from the bucket",
                io::Error::other(format!("{name} is larger than {limit} bytes")),
            ));
        }
        got.bytes()
            .await
            .map(Some)
            .map_err(|e| fail("reading from the bucket", e))
    }

    /// The size of an object; `None` when it does not exist.
    pub async fn size(&self, name: &str) -> Result<Option<u64>> {
        let path = self.path(name)?;
        match self.store.head(&path).await {
            Ok(m) => Ok(Some(m.size)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(fail("reading from the bucket", e)),
        }
    }

    /// Deletes an object (a missing one is not an error).
    pub async fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        match self.store.delete(&path).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(fail("deleting from the bucket", e)),
        }
    }

    /// Copies an object within the bucket.
    pub async fn copy(&self, from: &str, to: &str) -> Result<()> {
        let (f, t) = (self.path(from)?, self.path(to)?);
        self.store
            .copy(&f, &t)
            .await
            .map_err(|e| fail("copying in the bucket", e))
    }

    /// Copies object `from` (`len` bytes) to `to`. S3 copies up to 5 GiB
    /// in one request; a larger object streams through Wharf into a
    /// multipart upload, which appears whole or not at all.
    pub async fn copy_sized(&self, from: &str, to: &str, len: u64) -> Result<()> {
        if len <= COPY_LIMIT {
            return self.copy(from, to).await;
        }
        let Some((_, stream)) = self.read(from, 0).await? else {
            return Err(Error::storage(
                "copying in the bucket",
                io::Error::new(io::ErrorKind::NotFound, format!("{from} is missing")),
            ));
        };
        let path = self.path(to)?;
        let _slot = self.upload_slot().await?;
        let chunks = stream.map(|c| c.map_err(|e| Error::storage("copying in the bucket", e)));
        self.put_parts(&path, chunks, ("copying in the bucket", "finishing a copy"))
            .await
    }

    /// Writes `chunks` to `path` as one multipart upload, at most
    /// [`PARTS_IN_FLIGHT`] parts in flight: the object appears whole or
    /// not at all (the upload is aborted on any failure). `what` names
    /// the writing and the finishing in errors. The caller holds an
    /// [`Bucket::upload_slot`].
    async fn put_parts<S>(&self, path: &ObjectPath, chunks: S, what: (&str, &str)) -> Result<()>
    where
        S: futures_util::Stream<Item = Result<Bytes>>,
    {
        let upload = self
            .store
            .put_multipart(path)
            .await
            .map_err(|e| fail("starting an upload", e))?;
        let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, PART);
        let mut chunks = std::pin::pin!(chunks);
        let written = async {
            loop {
                w.wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| fail(what.0, e))?;
                match chunks.next().await {
                    None => return Ok::<_, Error>(()),
                    Some(chunk) => w.put(chunk?),
                }
            }
        }
        .await;
        match written {
            Ok(()) => w.finish().await.map(|_| ()).map_err(|e| fail(what.1, e)),
            Err(e) => {
                let _ = w.abort().await;
                Err(e)
            }
        }
    }

    /// Every object whose name starts with `dir` (a whole path segment,
    /// ending with `/`).
    pub async fn list(&self, dir: &str) -> Result<Vec<Listed>> {
        let prefix = self.path(dir.trim_end_matches('/'))?;
        let skip = self.prefix.len();
        self.store
            .list(Some(&prefix))
            .map_err(|e| fail("listing the bucket", e))
            .map_ok(|m| Listed {
                name: m
                    .location
                    .as_ref()
                    .get(skip..)
                    .unwrap_or_default()
                    .to_string(),
                size: m.size,
                modified: m.last_modified.timestamp_millis().max(0) as u64,
            })
            .try_collect()
            .await
    }

    /// Uploads the local file at `file` (`len` bytes, already verified)
    /// as object `name`. The object appears whole or not at all: a
    /// multipart upload that fails is aborted.
    pub async fn upload_file(&self, name: &str, file: &std::path::Path, len: u64) -> Result<()> {
        use tokio::io::AsyncReadExt;
        let path = self.path(name)?;
        let _slot = self.upload_slot().await?;
        let io_err = |e: io::Error| Error::storage("reading a blob to upload", e);
        let mut f = tokio::fs::File::open(file).await.map_err(io_err)?;
        if len <= SINGLE_PUT {
            let mut buf = Vec::with_capacity(len as usize);
            (&mut f)
                .take(len)
                .read_to_end(&mut buf)
                .await
                .map_err(io_err)?;
            return self
                .store
                .put(&path, PutPayload::from(buf))
                .await
                .map(|_| ())
                .map_err(|e| fail("uploading a blob", e));
        }
        let chunks = futures_util::stream::try_unfold(f, move |mut f| async move {
            let mut buf = vec![0u8; READ_CHUNK];
            let n = f.read(&mut buf).await.map_err(io_err)?;
            if n == 0 {
                return Ok(None);
            }
            buf.truncate(n);
            Ok(Some((Bytes::from(buf), f)))
        });
        self.put_parts(&path, chunks, ("uploading a blob", "finishing an upload"))
            .await
    }

    /// Starts a multipart upload to object `name` that outlives this call
    /// (and this process): its id, to keep.
    pub async fn start_parts(&self, name: &str) -> Result<String> {
        let path = self.path(name)?;
        self.parts
            .create_multipart(&path)
            .await
            .map_err(|e| fail("starting an upload", e))
    }

    /// A place among the uploads running at once, to hold while a part is
    /// read into memory and put.
    pub async fn upload_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        self.uploads
            .acquire()
            .await
            .map_err(|e| Error::storage("waiting to upload", e))
    }

    /// Uploads part `index` (from 0) of multipart upload `id` to `name`:
    /// the id of the stored part, to keep for [`Bucket::finish_parts`].
    /// The caller holds an [`Bucket::upload_slot`].
    pub async fn put_part(
        &self,
        name: &str,
        id: &str,
        index: usize,
        bytes: Bytes,
    ) -> Result<String> {
        let path = self.path(name)?;
        self.parts
            .put_part(&path, &id.to_string(), index, PutPayload::from_bytes(bytes))
            .await
            .map(|p| p.content_id)
            .map_err(|e| fail("uploading a part", e))
    }

    /// Completes multipart upload `id` to `name` from its parts, in order:
    /// the object appears whole.
    pub async fn finish_parts(&self, name: &str, id: &str, parts: &[String]) -> Result<()> {
        let path = self.path(name)?;
        let parts = parts
            .iter()
            .map(|p| PartId {
                content_id: p.clone(),
            })
            .collect();
        self.parts
            .complete_multipart(&path, &id.to_string(), parts)
            .await
            .map(|_| ())
            .map_err(|e| fail("completing an upload", e))
    }

    /// Aborts multipart upload `id` to `name`, dropping its parts (one
    /// already gone is not an error).
    pub async fn abort_parts(&self, name: &str, id: &str) -> Result<()> {
        let path = self.path(name)?;
        match self.parts.abort_multipart(&path, &id.to_string()).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(fail("aborting an upload", e)),
        }
    }

    /// Hashes object `name` with `algorithm` as it streams; errors name
    /// `what` (a missing object is one).
    pub async fn hash(
        &self,
        name: &str,
        algorithm: crate::oci::digest::Algorithm,
        what: &str,
    ) -> Result<crate::oci::Digest> {
        let Some((_, mut stream)) = self.read(name, 0).await? else {
            return Err(Error::storage(
                format!("hashing {what}"),
                io::Error::new(io::ErrorKind::NotFound, "not in the bucket"),
            ));
        };
        let mut h = crate::oci::digest::Hasher::new(algorithm);
        while let Some(chunk) = stream.next().await {
            h.update(&chunk.map_err(|e| Error::storage(format!("hashing {what}"), e))?);
        }
        Ok(h.finish())
    }

    /// Opens object `name` for reading from byte `from`: its whole size
    /// and a stream of its bytes from there. `None` when it does not exist.
    pub async fn read(
        &self,
        name: &str,
        from: u64,
    ) -> Result<Option<(u64, BoxStream<'static, io::Result<Bytes>>)>> {
        let path = self.path(name)?;
        let opts = object_store::GetOptions {
            range: (from > 0).then_some(object_store::GetRange::Offset(from)),
            ..Default::default()
        };
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, self.reader.get_opts(&path, opts));
        let got = match answer.await {
            Ok(Ok(g)) => g,
            Ok(Err(e)) if is_not_found(&e) => return Ok(None),
            Ok(Err(e)) => return Err(fail("reading from the bucket", e)),
            Err(_) => {
                return Err(Error::storage(
                    "reading from the bucket",
                    Unavailable(format!("no answer within {ANSWER_TIMEOUT:?}")),
                ))
            }
        };
        let size = got.meta.size;
        let chunks = got.into_stream();
        let stream = futures_util::stream::unfold(Some(chunks), |chunks| async move {
            let mut chunks = chunks?;
            match tokio::time::timeout(IDLE_TIMEOUT, chunks.next()).await {
                Ok(None) => None,
                Ok(Some(Ok(b))) => Some((Ok(b), Some(chunks))),
                Ok(Some(Err(e))) => {
                    let e = io::Error::other(Unavailable(e.to_string()));
                    Some((Err(e), None))
                }
                Err(_) => {
                    let e = Unavailable(format!(
                        "the object store sent nothing for {IDLE_TIMEOUT:?}"
                    ));
                    Some((Err(io::Error::other(e)), None))
                }
            }
        })
        .boxed();
        Ok(Some((size, stream)))
    }
}
