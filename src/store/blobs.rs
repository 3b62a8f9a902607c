//! Blob files named by digest: `DATA/blobs/<alg>/<xx>/<hex>`. Every write
//! goes to a temp file that is hashed while it streams, fsynced, checked
//! against the expected digest and only then renamed into place (with the
//! directory fsynced), so a file under `blobs/` is always complete and
//! correct. Temp files left by a crash are removed at start-up.
//!
//! Each committed file is sealed: its ctime and length are recorded in the
//! index. Serving reopens check the seal (one `stat`), and a file changed
//! behind Wharf's back (a flipped byte changes the ctime) is re-hashed
//! before a byte of it is served: intact, it is resealed; corrupt, it is
//! quarantined and reported missing, so the mirror fetches it again.

use super::remote::{blob_name, digest_of, Remote};
use super::Index;
use crate::error::{BoxError, Error, ErrorCode, Result};
use crate::oci::digest::{Algorithm, Digest, Hasher};
use bytes::Bytes;
use http_body::Body as HttpBody;
use http_body_util::BodyExt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The blob file tree under one data directory, and with `--storage s3`
/// the bucket whose blobs it caches.
#[derive(Clone)]
pub struct BlobStore {
    root: PathBuf,
    index: Index,
    remote: Option<Arc<Remote>>,
}

/// Blocking threads that unlink the files of one batch of evicted blobs.
const UNLINK_THREADS: usize = 2;

/// The file of blob `d` under data directory `root`.
pub(super) fn file_of(root: &Path, d: &Digest) -> PathBuf {
    let hex = d.hex();
    root.join("blobs")
        .join(d.algorithm().as_str())
        .join(&hex[..2])
        .join(hex)
}

/// Removes every blob file under data directory `root` (they cached
/// another bucket).
pub(super) fn clear_local(root: &Path) -> Result<()> {
    let dir = root.join("blobs");
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::storage("clearing the local cache", e)),
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::storage("clearing the local cache", e))
}

/// A file's seal: what changes when anyone modifies it.
fn seal_of(m: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("{}.{:09}:{}", m.ctime(), m.ctime_nsec(), m.len())
}

impl BlobStore {
    /// Opens (creating if needed) the blob tree under `data`; with a
    /// `remote`, the tree caches the bucket's blobs.
    pub fn open(data: &Path, index: Index, remote: Option<Arc<Remote>>) -> io::Result<BlobStore> {
        for dir in ["blobs", "tmp", "uploads"] {
            std::fs::create_dir_all(data.join(dir))?;
        }
        Ok(BlobStore {
            root: data.to_path_buf(),
            index,
            remote,
        })
    }

    /// The bucket and local cache, with `--storage s3`.
    pub fn remote(&self) -> Option<&Arc<Remote>> {
        self.remote.as_ref()
    }

    /// The unit the storage allocates in: the file system's block for the
    /// data directory (a 100-byte file takes 4 KiB on most), 1 for a
    /// bucket (objects are billed by their bytes). `st_blksize` is the
    /// preferred I/O size, which network file systems set to their
    /// transfer size (1 MiB and more): it counts only up to 4 KiB, the
    /// block of every common local file system.
    pub fn allocation_unit(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        if self.remote.is_some() {
            return 1;
        }
        std::fs::metadata(self.path_root())
            .map(|m| m.blksize())
            .unwrap_or(4096)
            .clamp(512, 4096)
    }

    fn path(&self, d: &Digest) -> PathBuf {
        file_of(&self.root, d)
    }

    /// The directory holding every blob file.
    fn path_root(&self) -> PathBuf {
        self.root.join("blobs")
    }

    /// Every committed blob: (digest, size, last modified in unix
    /// milliseconds), streamed in batches of [`FILES_BATCH`] (at most two
    /// batches listed ahead of the reader, and one hand-off between
    /// threads per batch, not per file). With a bucket, the bucket's (its
    /// listing is read whole first).
    pub fn files(&self) -> Files {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        match &self.remote {
            Some(r) => {
                let r = r.clone();
                tokio::spawn(async move {
                    let listed = match r.bucket.list("blobs/").await {
                        Ok(listed) => listed,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    };
                    let mut batch = Vec::with_capacity(FILES_BATCH);
                    for o in listed {
                        let Some(d) = digest_of(&o.name) else {
                            continue;
                        };
                        batch.push((d, o.size, o.modified));
                        if batch.len() == FILES_BATCH {
                            let full =
                                std::mem::replace(&mut batch, Vec::with_capacity(FILES_BATCH));
                            if tx.send(Ok(full)).await.is_err() {
                                return;
                            }
                        }
                    }
                    if !batch.is_empty() && tx.send(Ok(batch)).await.is_err() {
                        return;
                    }
                    // The end: an empty batch.
                    let _ = tx.send(Ok(Vec::new())).await;
                });
            }
            None => {
                let root = self.path_root();
                tokio::task::spawn_blocking(move || {
                    let mut batch = Vec::with_capacity(FILES_BATCH);
                    let walked = walk_blobs_each(&root, |f| {
                        batch.push(f);
                        if batch.len() < FILES_BATCH {
                            return true;
                        }
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(FILES_BATCH));
                        tx.blocking_send(Ok(full)).is_ok()
                    });
                    if let Err(e) = walked {
                        let _ = tx.blocking_send(Err(Error::storage("walking blobs", e)));
                        return;
                    }
                    if !batch.is_empty() && tx.blocking_send(Ok(batch)).is_err() {
                        return;
                    }
                    // The end: an empty batch.
                    let _ = tx.blocking_send(Ok(Vec::new()));
                });
            }
        }
        Files(rx)
    }

    /// Every blob file in the data directory.
    pub async fn list_local(&self) -> Result<Vec<(Digest, u64, u64)>> {
        let root = self.path_root();
        tokio::task::spawn_blocking(move || walk_blobs(&root))
            .await
            .map_err(|e| Error::storage("walking blobs", e))?
            .map_err(|e| Error::storage("walking blobs", e))
    }

    /// Moves a blob aside: its file into `DATA/quarantine/`, and with a
    /// bucket its object to `quarantine/<alg>-<hex>`.
    pub async fn quarantine(&self, d: &Digest) -> Result<()> {
        if let Some(r) = &self.remote {
            r.quarantine(d).await?;
        }
        let dir = self.root.join("quarantine");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::storage("creating the quarantine", e))?;
        let to = dir.join(format!("{}-{}", d.algorithm().as_str(), d.hex()));
        self.index.remove_seal(d)?;
        match tokio::fs::rename(self.path(d), to).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::storage("quarantining a blob", e)),
        }
    }

    pub fn uploads_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// The size of a stored blob, or `None` when it is not stored. With a
    /// bucket, the bucket decides: a local file alone is only a cache.
    pub async fn size(&self, d: &Digest) -> Result<Option<u64>> {
        if let Some(r) = &self.remote {
            return r.bucket.size(&blob_name(d)).await;
        }
        match tokio::fs::metadata(self.path(d)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::storage("checking a blob", e)),
        }
    }

    /// Removes a committed blob (its file, and with a bucket its object).
    pub async fn remove(&self, d: &Digest) -> Result<()> {
        self.index.remove_seal(d)?;
        if let Some(r) = &self.remote {
            r.local.remove(d);
            r.bucket.delete(&blob_name(d)).await?;
        }
        match tokio::fs::remove_file(self.path(d)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::storage("removing a blob", e)),
        }
    }

    /// Removes blobs whose records (their file records included) a batch
    /// has already forgotten, as an eviction round does: with a bucket its
    /// objects go `at_once` at a time (each a request); then the local files
    /// go one after another on one blocking thread. Unlinking small files
    /// is cheap, and doing many at once only takes the CPU from the
    /// requests being served.
    pub async fn remove_forgotten(&self, ds: Vec<Digest>, at_once: usize) -> Result<()> {
        use futures_util::StreamExt;
        if let Some(r) = &self.remote {
            let deletes: Vec<Result<()>> = futures_util::stream::iter(ds.clone())
                .map(|d| {
                    let r = Arc::clone(r);
                    async move {
                        r.local.remove(&d);
                        r.bucket.delete(&blob_name(&d)).await
                    }
                })
                .buffer_unordered(at_once.max(1))
                .collect()
                .await;
            deletes.into_iter().collect::<Result<()>>()?;
        }
        let paths: Vec<PathBuf> = ds.iter().map(|d| self.path(d)).collect();
        let threads = UNLINK_THREADS.min(paths.len()).max(1);
        let per = paths.len().div_ceil(threads).max(1);
        let unlinks = paths.chunks(per).map(|chunk| {
            let chunk = chunk.to_vec();
            tokio::task::spawn_blocking(move || {
                for p in chunk {
                    match std::fs::remove_file(&p) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::storage("removing a blob", e)),
                    }
                }
                Ok(())
            })
        });
        for r in futures_util::future::join_all(unlinks).await {
            r.map_err(|e| Error::storage("removing blobs", e))??;
        }
        Ok(())
    }

    /// Removes a blob's local file only (it left the local cache).
    pub(super) fn forget_local(&self, d: &Digest) {
        let _ = self.index.remove_seal(d);
        let _ = std::fs::remove_file(self.path(d));
    }

    /// When the blob was last modified, unix milliseconds (0 unknown).
    pub async fn modified(&self, d: &Digest) -> u64 {
        super::cache::file_mtime(&self.path(d)).await
    }

    /// Hashes a committed blob from its start (for `wharf verify`).
    pub async fn hash(&self, d: &Digest) -> Result<Digest> {
        if let Some(r) = &self.remote {
            return r
                .bucket
                .hash(&blob_name(d), d.algorithm(), &d.to_string())
                .await;
        }
        hash_file(self.path(d), d.algorithm())
            .await
            .map_err(|e| Error::storage(format!("hashing {d}"), e))
    }

    /// Reads a committed blob of at most `limit` bytes whole, checked
    /// against its digest; `None` when missing, too large or not intact.
    pub async fn read_checked(&self, d: &Digest, limit: u64) -> Result<Option<Vec<u8>>> {
        let bytes = match tokio::fs::File::open(self.path(d)).await {
            Ok(f) => {
                let len = f
                    .metadata()
                    .await
                    .map_err(|e| Error::storage("reading a blob", e))?
                    .len();
                if len > limit {
                    return Ok(None);
                }
                let mut out = Vec::with_capacity(len as usize);
                tokio::io::AsyncReadExt::read_to_end(
                    &mut tokio::io::AsyncReadExt::take(f, limit),
                    &mut out,
                )
                .await
                .map_err(|e| Error::storage("reading a blob", e))?;
                out
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => match &self.remote {
                Some(r) => match r.bucket.size(&blob_name(d)).await? {
                    Some(n) if n <= limit => {
                        match r.bucket.get_small(&blob_name(d), limit).await? {
                            Some(b) => b.to_vec(),
                            None => return Ok(None),
                        }
                    }
                    _ => return Ok(None),
                },
                None => return Ok(None),
            },
            Err(e) => return Err(Error::storage("reading a blob", e)),
        };
        Ok((Digest::of(d.algorithm(), &bytes) == *d).then_some(bytes))
    }

    /// Opens a stored blob for reading, with its size.
    pub async fn open_read(&self, d: &Digest) -> io::Result<Option<(tokio::fs::File, u64)>> {
        match tokio::fs::File::open(self.path(d)).await {
            Ok(f) => {
                let len = f.metadata().await?.len();
                Ok(Some((f, len)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads a small stored blob (a manifest) whole, for listings; `None`
    /// when it is missing or larger than `limit`. Blocking: call it on the
    /// blocking pool. (From the bucket, it is checked against its digest.)
    pub fn read_small(&self, d: &Digest, limit: u64) -> Result<Option<Vec<u8>>> {
        use std::io::Read;
        let f = match std::fs::File::open(self.path(d)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if self.remote.is_none() {
                    return Ok(None);
                }
                let me = self.clone();
                let d = d.clone();
                return tokio::runtime::Handle::current()
                    .block_on(async move { me.read_checked(&d, limit).await });
            }
            Err(e) => return Err(Error::storage("reading a manifest", e)),
        };
        let io_err = |e| Error::storage("reading a manifest", e);
        if f.metadata().map_err(io_err)?.len() > limit {
            return Ok(None);
        }
        let mut out = Vec::new();
        f.take(limit + 1).read_to_end(&mut out).map_err(io_err)?;
        Ok((out.len() as u64 <= limit).then_some(out))
    }

    /// Opens a blob file of the data directory to serve it, checking its
    /// seal first. `None` when it is missing, or was found corrupt (and
    /// set aside).
    pub async fn open_verified(&self, d: &Digest) -> Result<Option<(tokio::fs::File, u64)>> {
        let Some((file, len)) = self
            .open_read(d)
            .await
            .map_err(|e| Error::storage("opening a blob", e))?
        else {
            return Ok(None);
        };
        if let Some(r) = &self.remote {
            r.local.used(d);
        }
        let meta = file
            .metadata()
            .await
            .map_err(|e| Error::storage("reading blob metadata", e))?;
        let seal = seal_of(&meta);
        match self.index.seal(d)? {
            Some(s) if s == seal => return Ok(Some((file, len))),
            // Stored before seals existed: trust it from now on.
            None => {
                self.index.put_seal(d, &seal)?;
                return Ok(Some((file, len)));
            }
            Some(_) => {}
        }
        tracing::warn!(digest = %d, "blob file changed since it was stored: re-verifying");
        // Hash the very file that would be served (positioned reads on a
        // duplicate handle leave the served handle's offset alone).
        let dup = file
            .try_clone()
            .await
            .map_err(|e| Error::storage("re-verifying a blob", e))?
            .into_std()
            .await;
        let got = hash_handle(dup, d.algorithm())
            .await
            .map_err(|e| Error::storage("re-verifying a blob", e))?;
        if got == *d {
            self.index.put_seal(d, &seal)?;
            return Ok(Some((file, len)));
        }
        tracing::error!(digest = %d, actual = %got, "blob file is corrupt: quarantined, not served");
        drop(file);
        if self.remote.is_some() {
            // Only the local copy is bad: the bucket's is checked on read.
            self.forget_local(d);
            if let Some(r) = &self.remote {
                r.local.remove(d);
            }
        } else {
            self.quarantine(d).await?;
        }
        Ok(None)
    }

    /// A new temp file under `tmp/`, removed on drop unless committed.
    pub async fn temp(&self, algorithm: Algorithm) -> Result<TempBlob> {
        let path = self
            .root
            .join("tmp")
            .join(uuid::Uuid::new_v4().simple().to_string());
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| Error::storage("creating a temp blob", e))?
            .into_std()
            .await;
        Ok(TempBlob {
            path: Some(path),
            writer: Some((file, Hasher::new(algorithm))),
            in_flight: None,
            pending: Vec::new(),
            pending_len: 0,
            on_disk: 0,
            finished: None,
        })
    }

    /// Stores a small, already verified byte string (a manifest) under `d`.
    pub async fn put_bytes(&self, d: &Digest, bytes: &[u8]) -> Result<()> {
        let mut t = self.temp(d.algorithm()).await?;
        t.write(Bytes::copy_from_slice(bytes)).await?;
        t.commit(self, Some(d)).await.map(|_| ())
    }

    /// Moves a finished file at `from` into place as blob `d`: with a
    /// bucket, uploaded first. The bytes must
    /// already have been verified to hash to `d`.
    pub async fn install(&self, from: PathBuf, d: &Digest) -> Result<()> {
        if let Some(r) = &self.remote {
            let len = tokio::fs::metadata(&from)
                .await
                .map_err(|e| Error::storage("committing a blob", e))?
                .len();
            // Always: an object damaged behind Wharf's back (same size,
            // other bytes) is replaced by these verified ones.
            r.bucket.upload_file(&blob_name(d), &from, len).await?;
        }
        self.install_local(from, d).await
    }

    /// Moves a verified file into the data directory as blob `d` (with a
    /// bucket: a local copy of what the bucket holds).
    pub async fn install_local(&self, from: PathBuf, d: &Digest) -> Result<()> {
        let to = self.path(d);
        let seal = tokio::task::spawn_blocking(move || -> io::Result<String> {
            std::fs::File::open(&from)?.sync_all()?;
            let dir = to
                .parent()
                .ok_or_else(|| io::Error::other("blob path has no parent"))?;
            std::fs::create_dir_all(dir)?;
            std::fs::rename(&from, &to)?;
            std::fs::File::open(dir)?.sync_all()?;
            Ok(seal_of(&std::fs::metadata(&to)?))
        })
        .await
        .map_err(|e| Error::storage("joining the commit task", e))?
        .map_err(|e| Error::storage("committing a blob", e))?;
        self.index.put_seal(d, &seal)?;
        if let Some(r) = &self.remote {
            let len = seal
                .rsplit(':')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            r.local.insert(d, len);
        }
        Ok(())
    }

    /// Removes temp files a crash left behind; returns how many.
    pub fn clean_tmp(&self) -> io::Result<usize> {
        let mut n = 0;
        for entry in std::fs::read_dir(self.root.join("tmp"))? {
            std::fs::remove_file(entry?.path())?;
            n += 1;
        }
        Ok(n)
    }
}

/// Every blob file on disk with its size and modification time.
pub(crate) fn walk_blobs(root: &Path) -> std::io::Result<Vec<(Digest, u64, u64)>> {
    let mut out = Vec::new();
    walk_blobs_each(root, |f| {
        out.push(f);
        true
    })?;
    Ok(out)
}

/// The blob files of a store, batch by batch ([`BlobStore::files`]).
pub struct Files(tokio::sync::mpsc::Receiver<Result<Vec<(Digest, u64, u64)>>>);

impl Files {
    /// The next batch, `None` at the end. A listing that stops without
    /// reaching its end (its task failed) is an error, never taken for a
    /// complete one.
    pub async fn next(&mut self) -> Result<Option<Vec<(Digest, u64, u64)>>> {
        match self.0.recv().await {
            Some(Ok(batch)) if batch.is_empty() => Ok(None),
            Some(Ok(batch)) => Ok(Some(batch)),
            Some(Err(e)) => Err(e),
            None => Err(Error::storage(
                "listing blobs",
                io::Error::other("the listing stopped before its end"),
            )),
        }
    }
}

/// Blob files per batch of [`BlobStore::files`].
const FILES_BATCH: usize = 512;

/// Calls `f` with each blob file under `root` (digest, size, modified in
/// unix milliseconds) until it returns false.
fn walk_blobs_each(
    root: &Path,
    mut f: impl FnMut((Digest, u64, u64)) -> bool,
) -> std::io::Result<()> {
    for alg in std::fs::read_dir(root)? {
        let alg = alg?;
        let alg_name = alg.file_name().to_string_lossy().into_owned();
        for shard in std::fs::read_dir(alg.path())? {
            // A running server may remove files (and their shard) as the
            // walk goes: what is gone is simply not listed.
            let files = match std::fs::read_dir(shard?.path()) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                r => r?,
            };
            for file in files {
                let file = file?;
                let name = format!("{alg_name}:{}", file.file_name().to_string_lossy());
                let Ok(d) = name.parse::<Digest>() else {
                    continue;
                };
                let m = match file.metadata() {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    r => r?,
                };
                let mtime = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as u64);
                if !f((d, m.len(), mtime)) {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// Bytes a temp blob collects before one write (and hash) on the
/// blocking pool: one thread hand-off per batch, not per network frame.
const WRITE_BATCH: usize = 1 << 20;

/// A write of one batch running on the blocking pool: gives back the file
/// and hasher, and how many bytes it added.
type BatchWrite = tokio::task::JoinHandle<io::Result<(std::fs::File, Hasher, u64)>>;

/// A blob being written: hashed as it goes, deleted on drop unless committed.
///
/// Writes are double-buffered: while one batch is written and hashed on
/// the blocking pool, the next one collects, so receiving, writing and
/// hashing overlap. At most two batches are in memory.
pub struct TempBlob {
    path: Option<PathBuf>,
    /// The file and the hash of everything written to it; away while a
    /// batch is in flight, gone after a failed write.
    writer: Option<(std::fs::File, Hasher)>,
    in_flight: Option<BatchWrite>,
    /// Bytes not handed to a write yet.
    pending: Vec<Bytes>,
    pending_len: usize,
    /// Bytes in the file (readable by others).
    on_disk: u64,
    /// The digest [`finish`](Self::finish) computed: the only one the
    /// file can be installed under.
    finished: Option<Digest>,
}

/// A read handle on a blob while it is being written, for readers of a
/// cache fill: it reads what is on disk so far, and keeps reading the same
/// bytes after the blob is committed (or evicted).
#[derive(Clone, Debug)]
pub struct Spool(std::sync::Arc<std::fs::File>);

impl Spool {
    /// Reads between 1 and `want` bytes at `pos`; the caller knows they
    /// are on disk.
    pub async fn read(&self, pos: u64, want: usize) -> io::Result<Bytes> {
        crate::body::read_chunk(&self.0, pos, want).await
    }
}

impl TempBlob {
    /// The file opened anew for reading (it stays readable after the
    /// blob is committed, or evicted).
    pub(super) async fn reopen(&self) -> Result<tokio::fs::File> {
        let path = self.path.as_deref().ok_or_else(|| {
            Error::storage("opening a temp blob", io::Error::other("already committed"))
        })?;
        tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::storage("opening a temp blob", e))
    }

    /// A read handle on the bytes written so far (and later).
    pub async fn spool(&self) -> Result<Spool> {
        let path = self.path.as_deref().ok_or_else(|| {
            Error::storage("opening a temp blob", io::Error::other("already committed"))
        })?;
        let f = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::storage("opening a temp blob", e))?;
        Ok(Spool(std::sync::Arc::new(f.into_std().await)))
    }

    /// How many bytes are in the file so far (others can read them).
    pub fn on_disk(&self) -> u64 {
        self.on_disk
    }

    /// Waits for the batch in flight, if any.
    async fn settle(&mut self) -> Result<()> {
        if let Some(task) = self.in_flight.take() {
            let (file, hasher, n) = task
                .await
                .map_err(|e| Error::storage("joining a temp blob write", e))?
                .map_err(|e| Error::storage("writing a temp blob", e))?;
            self.writer = Some((file, hasher));
            self.on_disk += n;
        }
        Ok(())
    }

    /// Starts writing the pending bytes; call only when settled.
    fn start_batch(&mut self) -> Result<()> {
        let (mut file, mut hasher) = self.writer.take().ok_or_else(|| {
            Error::storage(
                "writing a temp blob",
                io::Error::other("an earlier write failed"),
            )
        })?;
        let batch = std::mem::take(&mut self.pending);
        let n = std::mem::take(&mut self.pending_len) as u64;
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            use std::io::Write;
            for b in &batch {
                file.write_all(b)?;
                hasher.update(b);
            }
            Ok((file, hasher, n))
        }));
        Ok(())
    }

    /// Hands everything written so far to the OS, so another reader of
    /// the file sees it.
    pub async fn flush(&mut self) -> Result<()> {
        self.settle().await?;
        if !self.pending.is_empty() {
            self.start_batch()?;
            self.settle().await?;
        }
        Ok(())
    }

    /// Appends `bytes`; they reach the file by the next [`flush`](Self::flush)
    /// at the latest.
    pub async fn write(&mut self, bytes: Bytes) -> Result<()> {
        self.pending_len += bytes.len();
        self.pending.push(bytes);
        if self.pending_len >= WRITE_BATCH {
            self.settle().await?;
            self.start_batch()?;
        }
        Ok(())
    }

    /// Copies a whole request body into the file, hashing as it goes.
    pub async fn write_body<B>(&mut self, body: B) -> Result<()>
    where
        B: HttpBody<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Error::ClientBody(e.into()))?;
            if let Ok(data) = frame.into_data() {
                self.write(data).await?;
            }
        }
        Ok(())
    }

    /// Writes what is pending and returns the digest of everything
    /// written. The file is not durable yet: [`install`](Self::install)
    /// makes it so.
    pub async fn finish(&mut self) -> Result<Digest> {
        self.flush().await?;
        let (_, hasher) = self.writer.take().ok_or_else(|| {
            Error::storage(
                "finishing a temp blob",
                io::Error::other("already finished"),
            )
        })?;
        let d = hasher.finish();
        self.finished = Some(d.clone());
        Ok(d)
    }

    /// Checks the digest, then fsyncs and renames the file into place.
    /// Returns the digest of what was written.
    pub async fn commit(mut self, store: &BlobStore, expected: Option<&Digest>) -> Result<Digest> {
        let got = self.finish().await?;
        if let Some(want) = expected {
            if *want != got {
                return Err(Error::oci(
                    ErrorCode::DigestInvalid,
                    format!("content hashes to {got}, not {want}"),
                ));
            }
        }
        self.install(store, &got).await?;
        Ok(got)
    }

    /// Commits a [`finish`](Self::finish)ed blob as `d` (with a bucket:
    /// uploaded, then kept locally); the caller has checked the digest.
    pub async fn install(self, store: &BlobStore, d: &Digest) -> Result<()> {
        self.place(store, d, true).await
    }

    /// Keeps a [`finish`](Self::finish)ed copy of what the bucket holds
    /// as `d` in the data directory.
    pub(super) async fn install_local(self, store: &BlobStore, d: &Digest) -> Result<()> {
        self.place(store, d, false).await
    }

    async fn place(mut self, store: &BlobStore, d: &Digest, upload: bool) -> Result<()> {
        if self.finished.as_ref() != Some(d) {
            return Err(Error::storage(
                "committing",
                io::Error::other(format!("temp blob was not finished as {d}")),
            ));
        }
        let Some(path) = self.path.take() else {
            return Err(Error::storage(
                "committing",
                io::Error::other("temp blob already taken"),
            ));
        };
        let placed = if upload {
            store.install(path.clone(), d).await
        } else {
            store.install_local(path.clone(), d).await
        };
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(())
    }
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Hashes an open file from its start with positioned reads, off the async
/// threads.
async fn hash_handle(f: std::fs::File, algorithm: Algorithm) -> io::Result<Digest> {
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        let mut h = Hasher::new(algorithm);
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = 0u64;
        loop {
            let n = f.read_at(&mut buf, pos)?;
            if n == 0 {
                return Ok(h.finish());
            }
            h.update(&buf[..n]);
            pos += n as u64;
        }
    })
    .await
    .map_err(io::Error::other)?
}

/// Hashes a file on disk with `algorithm`, off the async threads.
pub async fn hash_file(path: PathBuf, algorithm: Algorithm) -> io::Result<Digest> {
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut f = std::fs::File::open(path)?;
        let mut h = Hasher::new(algorithm);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(h.finish());
            }
            h.update(&buf[..n]);
        }
    })
    .await
    .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commit_verifies_then_renames() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index"), 1 << 20, None).unwrap();
        let store = BlobStore::open(dir.path(), index, None).unwrap();
        let want = Digest::of(Algorithm::Sha256, b"hello");

        let mut t = store.temp(Algorithm::Sha256).await.unwrap();
        t.write(Bytes::from_static(b"hel")).await.unwrap();
        t.write(Bytes::from_static(b"lx")).await.unwrap();
        let err = t.commit(&store, Some(&want)).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::DigestInvalid);
        assert_eq!(store.size(&want).await.unwrap(), None);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );

        store.put_bytes(&want, b"hello").await.unwrap();
        assert_eq!(store.size(&want).await.unwrap(), Some(5));
        assert_eq!(
            hash_file(store.path(&want), Algorithm::Sha256)
                .await
                .unwrap(),
            want
        );
    }

    #[tokio::test]
    async fn batched_writes_keep_order_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index"), 1 << 20, None).unwrap();
        let store = BlobStore::open(dir.path(), index, None).unwrap();
        let data: Vec<u8> = (0..(WRITE_BATCH * 3 + 12345))
            .map(|i| (i * 31 % 253) as u8)
            .collect();
        let want = Digest::of(Algorithm::Sha256, &data);
        let mut t = store.temp(Algorithm::Sha256).await.unwrap();
        let mut sent = 0;
        for (i, piece) in data.chunks(70_001).enumerate() {
            t.write(Bytes::copy_from_slice(piece)).await.unwrap();
            sent += piece.len() as u64;
            assert!(t.on_disk() <= sent);
            if i == 20 {
                t.flush().await.unwrap();
                assert_eq!(t.on_disk(), sent);
                let spool = t.spool().await.unwrap();
                let head = spool.read(0, 4096).await.unwrap();
                assert_eq!(&head[..], &data[..head.len()]);
                let tail = spool.read(sent - 10, 10).await.unwrap();
                assert_eq!(&tail[..], &data[sent as usize - 10..sent as usize]);
            }
        }
        assert_eq!(t.commit(&store, Some(&want)).await.unwrap(), want);
        assert_eq!(std::fs::read(store.path(&want)).unwrap(), data);
    }

    #[tokio::test]
    async fn clean_tmp_removes_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index"), 1 << 20, None).unwrap();
        let store = BlobStore::open(dir.path(), index, None).unwrap();
        let t = store.temp(Algorithm::Sha256).await.unwrap();
        std::mem::forget(t);
        assert_eq!(store.clean_tmp().unwrap(), 1);
    }
}
