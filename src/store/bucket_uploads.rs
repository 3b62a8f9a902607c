//! Upload sessions kept in the bucket (`--storage s3`), so a chunked push
//! survives the loss of the data directory and can go on through another
//! Wharf on the same bucket. Per session, under `uploads/<id>/`:
//!
//! | object | holds |
//! |---|---|
//! | `session` | the [`Record`]: repository, owner, the multipart upload's id and its parts, the hasher's saved state |
//! | `tail-<offset>` | the bytes after the parts (fewer than a part needs), starting at `<offset>` |
//! | `data` | the target of the multipart upload; complete only while a session finishes |
//!
//! Clients send chunks of any size, but every part but the last must hold
//! at least [`MIN_PART`] bytes: a request's bytes go through a local spool
//! file, cut into parts of [`PART`]; what is left at the end of a request
//! becomes a part if it is large enough, else the tail object. The record
//! is written last, so a crash leaves the session as the record says: parts
//! and tails it does not name are never used (a tail is only ever read up
//! to the length the record gives). The running sha256 over the parts is
//! saved in the record, so the closing PUT reads back at most a tail.
//!
//! A finished session's blob becomes visible only once verified: a small
//! one is uploaded whole from the spool; a multipart one is completed as
//! `data`, then copied to the blob's name (in the store, or for more than
//! the 5 GiB S3 copies at once, streamed through Wharf). What the digest is
//! checked against is what was stored: the saved hasher covers the parts
//! (their ids pin their bytes at completion), and a tail is hashed again
//! as it is read back.

use super::blobs::{hash_file, BlobStore};
use super::bucket::Bucket;
use super::remote::blob_name;
use crate::error::{Error, Result};
use crate::oci::digest::{Algorithm, Digest, Hasher};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Bytes per part while a request streams.
const PART: u64 = 8 << 20;
/// The smallest part S3 takes (but for the last).
const MIN_PART: u64 = 5 << 20;
/// The largest record read back (a session of 10,000 parts fits).
const RECORD_LIMIT: u64 = 4 << 20;

/// What the bucket knows of a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Record {
    pub repo: String,
    pub owner: String,
    pub started_unix: u64,
    /// The multipart upload behind `data`, once a part was needed.
    #[serde(default)]
    upload: Option<String>,
    /// Ids of the uploaded parts, in order.
    #[serde(default)]
    parts: Vec<String>,
    /// Bytes the parts hold.
    #[serde(default)]
    parts_len: u64,
    /// Bytes in the tail object after them.
    #[serde(default)]
    tail: u64,
    /// The sha256 state over the bytes of the parts, hex (the tail is
    /// hashed again as it is read back); `None` when it was lost (the
    /// closing PUT then hashes the bytes once).
    #[serde(default)]
    sha256: Option<String>,
    /// The closing part went up (it may be short): the session is being
    /// finished and takes no more bytes.
    #[serde(default)]
    sealed: bool,
    /// The parts were completed as `data`.
    #[serde(default)]
    staged: bool,
}

impl Record {
    pub fn new(repo: &str, owner: &str, started_unix: u64) -> Record {
        Record {
            repo: repo.to_string(),
            owner: owner.to_string(),
            started_unix,
            upload: None,
            parts: Vec::new(),
            parts_len: 0,
            tail: 0,
            sha256: Some(hex::encode(Hasher::new(Algorithm::Sha256).save())),
            sealed: false,
            staged: false,
        }
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.parts_len + self.tail
    }
}

fn record_name(id: &str) -> String {
    format!("uploads/{id}/session")
}

fn tail_name(id: &str, offset: u64) -> String {
    format!("uploads/{id}/tail-{offset}")
}

fn data_name(id: &str) -> String {
    format!("uploads/{id}/data")
}

fn corrupt(id: &str, what: impl std::fmt::Display) -> Error {
    Error::storage(
        format!("reading upload session {id}"),
        io::Error::new(io::ErrorKind::InvalidData, what.to_string()),
    )
}

/// Writes the record of session `id`.
pub(super) async fn put_record(bucket: &Bucket, id: &str, r: &Record) -> Result<()> {
    let json = serde_json::to_vec(r).map_err(|e| corrupt(id, e))?;
    bucket.put_small(&record_name(id), Bytes::from(json)).await
}

/// The record of session `id`; `None` when there is no such session.
pub(super) async fn record(bucket: &Bucket, id: &str) -> Result<Option<Record>> {
    match bucket.get_small(&record_name(id), RECORD_LIMIT).await? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| corrupt(id, e)),
    }
}

/// A session in the bucket: its id, and when its record was last written
/// (unix ms); `None` for objects of a session whose record is gone.
pub(super) async fn list(bucket: &Bucket) -> Result<BTreeMap<String, Option<u64>>> {
    let mut sessions = BTreeMap::new();
    for o in bucket.list("uploads/").await? {
        let Some((id, what)) = o
            .name
            .strip_prefix("uploads/")
            .and_then(|r| r.split_once('/'))
        else {
            continue;
        };
        let e = sessions.entry(id.to_string()).or_insert(None);
        if what == "session" {
            *e = Some(o.modified);
        }
    }
    Ok(sessions)
}

/// Objects of session `id` whose record is gone, if all are older than
/// `before` (unix ms): removes them and says so.
pub(super) async fn remove_orphan(bucket: &Bucket, id: &str, before: u64) -> Result<bool> {
    let objects = bucket.list(&format!("uploads/{id}/")).await?;
    if objects.iter().any(|o| o.modified >= before) {
        return Ok(false);
    }
    for o in objects {
        bucket.delete(&o.name).await?;
    }
    Ok(true)
}

/// Removes session `id`: its multipart upload, its objects, its record
/// last (so a failure half-way leaves a session that expiry finds again).
pub(super) async fn remove(bucket: &Bucket, id: &str, r: Option<&Record>) -> Result<()> {
    if let Some(upload) = r.and_then(|r| r.upload.as_deref()) {
        bucket.abort_parts(&data_name(id), upload).await?;
    }
    let record = record_name(id);
    for o in bucket.list(&format!("uploads/{id}/")).await? {
        if o.name != record {
            bucket.delete(&o.name).await?;
        }
    }
    bucket.delete(&record).await
}

/// The bytes of one request on their way into the bucket.
pub(super) struct Appender<'a> {
    bucket: &'a Bucket,
    id: String,
    /// The session as the bucket knows it: changed only once the bucket
    /// took the change.
    record: Record,
    /// The tail object the session had when this request began.
    first_tail: Option<String>,
    /// Bytes after the parts: the tail, then what this request sent.
    spool: tokio::fs::File,
    spool_path: PathBuf,
    spool_len: u64,
    /// Over every byte: the saved state (which covers exactly the parts),
    /// then the tail as read back, then this request's bytes. `None` when
    /// the state was lost.
    hasher: Option<Hasher>,
    /// Whether this request sent any bytes.
    wrote: bool,
    /// A write failed: the spool no longer matches the hasher, and
    /// nothing of this request is saved.
    broken: bool,
}

impl<'a> Appender<'a> {
    /// Starts appending to session `id` as `record` describes it, with
    /// its tail fetched into a spool file at `spool_path`.
    pub async fn open(
        bucket: &'a Bucket,
        id: &str,
        record: Record,
        spool_path: PathBuf,
    ) -> Result<Appender<'a>> {
        let io_err = |e: io::Error| Error::storage("spooling an upload", e);
        let mut hasher = record
            .sha256
            .as_deref()
            .and_then(|h| hex::decode(h).ok())
            .and_then(|s| Hasher::resume(Algorithm::Sha256, &s));
        let mut spool = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&spool_path)
            .await
            .map_err(io_err)?;
        let first_tail = (record.tail > 0).then(|| tail_name(id, record.parts_len));
        if let Some(name) = &first_tail {
            let Some((size, mut stream)) = bucket.read(name, 0).await? else {
                return Err(corrupt(id, format!("{name} is missing")));
            };
            if size < record.tail {
                return Err(corrupt(id, format!("{name} is shorter than recorded")));
            }
            // Hashed as read: the digest covers the bytes stored, whatever
            // happened to the object.
            let mut left = record.tail;
            while left > 0 {
                let Some(chunk) = futures_util::StreamExt::next(&mut stream).await else {
                    return Err(corrupt(id, format!("{name} ended early")));
                };
                let chunk = chunk.map_err(|e| Error::storage("reading an upload's tail", e))?;
                let take = &chunk[..chunk.len().min(left as usize)];
                spool.write_all(take).await.map_err(io_err)?;
                if let Some(h) = &mut hasher {
                    h.update(take);
                }
                left -= take.len() as u64;
            }
        }
        Ok(Appender {
            bucket,
            id: id.to_string(),
            first_tail,
            spool_len: record.tail,
            record,
            spool,
            spool_path,
            hasher,
            wrote: false,
            broken: false,
        })
    }

    /// Bytes of the session, those of this request included.
    pub fn len(&self) -> u64 {
        self.record.parts_len + self.spool_len
    }

    /// Appends `data`; a full part goes to the bucket. After an error,
    /// nothing of this request is saved.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        if self.record.sealed || self.record.staged {
            return Err(Error::oci(
                crate::error::ErrorCode::BlobUploadInvalid,
                "the upload is being finished and takes no more bytes: send the closing PUT again",
            ));
        }
        if self.broken {
            return Err(corrupt(&self.id, "an earlier write of this request failed"));
        }
        self.wrote = true;
        let written = async {
            self.spool
                .write_all(data)
                .await
                .map_err(|e| Error::storage("spooling an upload", e))?;
            if let Some(h) = &mut self.hasher {
                h.update(data);
            }
            self.spool_len += data.len() as u64;
            if self.spool_len >= PART {
                self.cut_part(false).await?;
            }
            Ok(())
        }
        .await;
        if written.is_err() {
            self.broken = true;
        }
        written
    }

    /// Uploads everything spooled as the next part (`last`: the closing
    /// one, which may be short), empties the spool and records the
    /// progress (so it outlives a request cut short, and the record's
    /// time says the session is in use). On an error the record and the
    /// spool stay as they were.
    async fn cut_part(&mut self, last: bool) -> Result<()> {
        let io_err = |e: io::Error| Error::storage("spooling an upload", e);
        // The upload slot first: it bounds the parts held in memory.
        let _slot = self.bucket.upload_slot().await?;
        let upload = match &self.record.upload {
            Some(u) => u.clone(),
            None => {
                // Recorded before any part goes up: a crash never leaves
                // parts of an upload no record names.
                let u = self.bucket.start_parts(&data_name(&self.id)).await?;
                let mut next = self.record.clone();
                next.upload = Some(u.clone());
                put_record(self.bucket, &self.id, &next).await?;
                self.record = next;
                u
            }
        };
        let bytes = self.spooled().await?;
        let n = bytes.len() as u64;
        let index = self.record.parts.len();
        let part = self
            .bucket
            .put_part(&data_name(&self.id), &upload, index, bytes)
            .await?;
        let mut next = self.record.clone();
        next.parts.push(part);
        next.parts_len += n;
        next.tail = 0;
        // The spool went up whole: the hasher covers exactly the parts.
        next.sha256 = self.hasher.as_ref().map(|h| hex::encode(h.save()));
        next.sealed = last;
        put_record(self.bucket, &self.id, &next).await?;
        self.record = next;
        self.spool_len = 0;
        self.spool.set_len(0).await.map_err(io_err)?;
        self.spool
            .seek(io::SeekFrom::Start(0))
            .await
            .map_err(io_err)?;
        Ok(())
    }

    /// What the spool holds (at most a part and one frame).
    async fn spooled(&mut self) -> Result<Bytes> {
        let io_err = |e: io::Error| Error::storage("spooling an upload", e);
        self.spool.flush().await.map_err(io_err)?;
        self.spool
            .seek(io::SeekFrom::Start(0))
            .await
            .map_err(io_err)?;
        let mut buf = Vec::with_capacity(self.spool_len as usize);
        (&mut self.spool)
            .take(self.spool_len)
            .read_to_end(&mut buf)
            .await
            .map_err(io_err)?;
        if buf.len() as u64 != self.spool_len {
            return Err(io_err(io::Error::other("the spool file shrank")));
        }
        Ok(Bytes::from(buf))
    }

    /// Ends the request: what is spooled becomes a part or the tail, and
    /// the record says so. Returns the record as saved (as it was, when
    /// the request sent nothing or a write failed).
    pub async fn save(mut self) -> Result<Record> {
        if self.broken || !self.wrote {
            return Ok(self.record.clone());
        }
        if self.spool_len >= MIN_PART {
            self.cut_part(false).await?;
        }
        let new_tail = (self.spool_len > 0).then(|| tail_name(&self.id, self.record.parts_len));
        if let Some(name) = &new_tail {
            let bytes = self.spooled().await?;
            self.bucket.put_small(name, bytes).await?;
        }
        if self.record.tail != self.spool_len {
            // The saved hasher state stays that of the parts: the tail is
            // hashed again when it is read back.
            let mut next = self.record.clone();
            next.tail = self.spool_len;
            put_record(self.bucket, &self.id, &next).await?;
            self.record = next;
        }
        if let Some(old) = self
            .first_tail
            .take()
            .filter(|t| Some(t) != new_tail.as_ref())
        {
            // Only clutter if this fails: the record no longer names it,
            // and removing the session removes it.
            let _ = self.bucket.delete(&old).await;
        }
        Ok(self.record.clone())
    }

    /// Ends the session: checks every byte against `expected` and, if they
    /// match, stores them as that blob. `Ok(Err(got))` when they hash to
    /// something else (nothing is stored; the caller removes the session).
    pub async fn commit(
        mut self,
        blobs: &BlobStore,
        expected: &Digest,
    ) -> Result<std::result::Result<u64, Digest>> {
        let len = self.len();
        let hashed = match self.hasher.take() {
            Some(h) if expected.algorithm() == Algorithm::Sha256 => Some(h.finish()),
            _ => None,
        };
        if self.record.parts.is_empty() {
            // All of it is in the spool (hashed as it got there): one
            // upload, no parts.
            self.spool
                .flush()
                .await
                .map_err(|e| Error::storage("spooling an upload", e))?;
            let got = match hashed {
                Some(d) => d,
                None => hash_file(self.spool_path.clone(), expected.algorithm())
                    .await
                    .map_err(|e| Error::storage("hashing an upload", e))?,
            };
            if got != *expected {
                return Ok(Err(got));
            }
            if let Some(upload) = self.record.upload.clone() {
                let _ = self.bucket.abort_parts(&data_name(&self.id), &upload).await;
            }
            blobs.install(self.spool_path.clone(), expected).await?;
            return Ok(Ok(len));
        }
        if let Some(got) = &hashed {
            if got != expected {
                return Ok(Err(got.clone()));
            }
        }
        let staged = data_name(&self.id);
        if !self.record.staged {
            if self.spool_len > 0 {
                self.cut_part(true).await?;
            }
            let upload = self.record.upload.clone().unwrap_or_default();
            let finished = self
                .bucket
                .finish_parts(&staged, &upload, &self.record.parts)
                .await;
            if let Err(e) = finished {
                // Completed already, by a request that ended before it
                // could record so: then the upload is gone, the object there.
                if self.bucket.size(&staged).await? != Some(len) {
                    return Err(e);
                }
            }
            // Completed: there is no upload to abort any more, only an
            // object, and a PUT that failed after this starts from here.
            let mut next = self.record.clone();
            next.upload = None;
            next.staged = true;
            put_record(self.bucket, &self.id, &next).await?;
            self.record = next;
        }
        if self.bucket.size(&staged).await? != Some(len) {
            return Err(corrupt(&self.id, "the completed upload has another length"));
        }
        if hashed.is_none() {
            let got = self
                .bucket
                .hash(&staged, expected.algorithm(), &staged)
                .await?;
            if got != *expected {
                return Ok(Err(got));
            }
        }
        self.bucket
            .copy_sized(&staged, &blob_name(expected), len)
            .await?;
        Ok(Ok(len))
    }
}

impl Drop for Appender<'_> {
    fn drop(&mut self) {
        // The spool only lives as long as its request (a committed one was
        // moved into the local cache already).
        let _ = std::fs::remove_file(&self.spool_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_old_fields_default() {
        let r = Record::new("team/app", "user:alice", 7);
        let json = serde_json::to_vec(&r).unwrap();
        let back: Record = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.len(), 0);
        assert_eq!(back.repo, "team/app");
        assert!(back.sha256.is_some());
        let minimal: Record =
            serde_json::from_str(r#"{"repo":"a","owner":"b","started_unix":1}"#).unwrap();
        assert!(minimal.upload.is_none() && minimal.parts.is_empty() && minimal.sha256.is_none());
    }

    #[test]
    fn names_stay_inside_the_session() {
        assert_eq!(record_name("abc"), "uploads/abc/session");
        assert_eq!(tail_name("abc", 5), "uploads/abc/tail-5");
        assert_eq!(data_name("abc"), "uploads/abc/data");
    }
}
