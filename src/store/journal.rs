//! With a bucket, the index's durable records live there too: one small
//! object per record under `index/`, named by the record's key. Before a
//! durable record changes in sled, its key is marked dirty (`J/<key>`, in
//! sled too, so neither a crash nor an outage forgets it). The next
//! [`Index::flush`](super::Index), which every push waits for before it
//! is acknowledged, writes each dirty record's value as sled holds it
//! then (or deletes the object) and clears the mark. Flushes run one at a
//! time and always send the latest value, so an older one can never land
//! last; what fails stays dirty for the next flush.
//!
//! Durable: repositories, links, manifests, tags, referrers and the
//! mirror's records (`p/ l/ m/ t/ r/ B/ M/ T/`). The bucket holds them in
//! their text form (digests as text, manifest records as JSON: the index's
//! layout 1), whatever layout the local index has, so a bucket never needs
//! migrating and stays readable by hand. Local to this machine:
//! seals of local files, access times and upload sessions. A data
//! directory without the bucket's records (new, or deleted) is filled
//! from the bucket at start-up ([`restore`]).

use super::bucket::Bucket;
use super::index::{from_text, text_key, to_text};
use crate::error::{Error, Result};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};

/// Where the records live in the bucket.
const DIR: &str = "index/";

/// Bucket writes in flight at once during a flush or a restore.
const PARALLEL: usize = 16;

/// The sled key that says which bucket the local records came from.
const ORIGIN: &[u8] = b"S/origin";

/// Whether a record with key `k` belongs in the bucket.
pub(super) fn durable(k: &[u8]) -> bool {
    matches!(
        k.get(..2),
        Some(b"p/" | b"l/" | b"m/" | b"t/" | b"r/" | b"B/" | b"M/" | b"T/")
    )
}

/// The object name of record key `k`: letters, digits, `.`, `_`, `-` and
/// `/` as they are, every other byte as `!` and two hex digits.
fn object_name(k: &[u8]) -> String {
    let mut out = String::with_capacity(DIR.len() + k.len() + 8);
    out.push_str(DIR);
    for &b in k {
        if b.is_ascii_alphanumeric() || b"._-/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("!{b:02x}"));
        }
    }
    out
}

/// The record key an object name stands for.
fn key_of(name: &str) -> Option<Vec<u8>> {
    let rest = name.strip_prefix(DIR)?.as_bytes();
    let mut out = Vec::with_capacity(rest.len());
    let mut i = 0;
    while i < rest.len() {
        if rest[i] == b'!' {
            let hex = std::str::from_utf8(rest.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(rest[i]);
            i += 1;
        }
    }
    Some(out)
}

/// A local record with no text form (it does not parse, so this index
/// never wrote it): said loudly and dropped from the journal, rather than
/// failing every later flush, and so every push, over one record.
fn unsendable(k: &[u8]) -> Result<()> {
    tracing::error!(
        kind = %String::from_utf8_lossy(k.get(..2).unwrap_or_default()),
        "an index record does not parse: the bucket does not get it"
    );
    Ok(())
}

/// The sled key prefix of a dirty marker: `J/<record key>` says the
/// record changed and the bucket may not have its current value yet.
/// Written before the change itself, so a crash or an outage never loses
/// track of a change; removed once the bucket has the value.
const DIRTY: &[u8] = b"J/";

fn marker(k: &[u8]) -> Vec<u8> {
    let mut m = DIRTY.to_vec();
    m.extend_from_slice(k);
    m
}

/// Records changed since the bucket last got them. Only keys are kept:
/// a flush writes each record's value as sled holds it then (or deletes
/// it), so a write that finished later can never be overwritten in the
/// bucket by an older value.
pub(crate) struct Journal {
    bucket: Arc<Bucket>,
    /// The noted keys, and the sled database they are records of.
    notes: Notes,
}

/// The keys of the records changed since the bucket last got them: in
/// memory, and as `J/<key>` marks in sled so that neither a crash nor an
/// outage forgets one.
struct Notes {
    db: sled::Db,
    keys: Mutex<BTreeSet<Vec<u8>>>,
    /// Held shared from a change's note until the change is in sled, and
    /// exclusively while a flush takes the noted keys: a flush that took a
    /// key between its note and its change would send the old value, and
    /// the change's own flush would then find nothing left to send.
    changing: RwLock<()>,
}

/// Proof that changes were noted; the changes are made while it is held.
pub(super) struct Noted<'a> {
    _held: Option<RwLockReadGuard<'a, ()>>,
}

impl Noted<'_> {
    /// For an index without a bucket: nothing to note.
    pub(super) fn none() -> Noted<'static> {
        Noted { _held: None }
    }
}

impl Notes {
    /// The notes `db` holds, left by a previous run.
    fn load(db: sled::Db) -> Result<Notes> {
        let mut keys = BTreeSet::new();
        for kv in db.scan_prefix(DIRTY) {
            let (k, _) = kv.map_err(|e| Error::storage("reading the index", e))?;
            keys.insert(k[DIRTY.len()..].to_vec());
        }
        Ok(Notes {
            db,
            keys: Mutex::new(keys),
            changing: RwLock::new(()),
        })
    }

    fn keys(&self) -> MutexGuard<'_, BTreeSet<Vec<u8>>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes that records `keys` are about to change: call it before the
    /// change, and make the change while the returned guard is held.
    fn note<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) -> sled::Result<Noted<'_>> {
        let guard = self.changing.read().unwrap_or_else(PoisonError::into_inner);
        let mut d = self.keys();
        for k in keys {
            if durable(k) && d.insert(k.to_vec()) {
                self.db.insert(marker(k), &[])?;
            }
        }
        Ok(Noted { _held: Some(guard) })
    }

    /// Takes every key noted so far, each with its change made (a change
    /// noted but not made yet is waited for). Their marks stay until the
    /// bucket has the records.
    fn take(&self) -> Taken<'_> {
        let _all = self
            .changing
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        Taken {
            notes: self,
            keys: std::mem::take(&mut *self.keys()),
        }
    }
}

/// The keys a flush took. Those it has not settled when it is dropped
/// (its caller went away mid-flush) go back to the notes, so the next
/// flush sends them: otherwise a push waiting for that next flush would
/// be acknowledged with its records still missing from the bucket.
struct Taken<'a> {
    notes: &'a Notes,
    keys: BTreeSet<Vec<u8>>,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if !self.keys.is_empty() {
            let keys = std::mem::take(&mut self.keys);
            self.notes.keys().extend(keys);
        }
    }
}

impl Journal {
    /// The journal of `db`, with the changes a previous run left unsent.
    pub(super) fn open(bucket: Arc<Bucket>, db: sled::Db) -> Result<Journal> {
        let notes = Notes::load(db)?;
        let n = notes.keys().len();
        if n > 0 {
            tracing::info!(
                records = n,
                "index changes the bucket may lack: sending them with the next flush"
            );
        }
        Ok(Journal { bucket, notes })
    }

    /// Notes that records `keys` are about to change: call it before the
    /// change, and make the change while the returned guard is held.
    pub(super) fn note<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k [u8]>,
    ) -> sled::Result<Noted<'_>> {
        self.notes.note(keys)
    }

    /// Forgets every noted change (the records were replaced from the
    /// bucket).
    fn clear(&self) -> Result<()> {
        let mut d = self.notes.keys();
        let mut b = sled::Batch::default();
        for k in d.iter() {
            b.remove(marker(k));
        }
        d.clear();
        self.notes
            .db
            .apply_batch(b)
            .map_err(|e| Error::storage("clearing the index", e))
    }

    /// Writes the current value of every changed record to the bucket.
    /// It stops at the first failure (the store is likely down: no point
    /// waiting for every timeout); what was not written stays noted and
    /// the flush fails.
    pub(super) async fn push(&self) -> Result<()> {
        let mut taken = self.notes.take();
        if taken.keys.is_empty() {
            return Ok(());
        }
        let failed = std::sync::atomic::AtomicBool::new(false);
        let (bucket, db, failed) = (&self.bucket, &self.notes.db, &failed);
        let results: Vec<(Vec<u8>, Result<()>)> =
            futures_util::stream::iter(taken.keys.iter().cloned())
                .map(|k| async move {
                    use std::sync::atomic::Ordering::Relaxed;
                    if failed.load(Relaxed) {
                        let skipped = Error::storage(
                            "writing to the bucket",
                            crate::error::StorageUnavailable("an earlier write failed".into()),
                        );
                        return (k, Err(skipped));
                    }
                    let r = match db.get(&k) {
                        Ok(Some(v)) => match to_text(&k, &v) {
                            Some((tk, tv)) => {
                                bucket.put_small(&object_name(&tk), Bytes::from(tv)).await
                            }
                            None => unsendable(&k),
                        },
                        Ok(None) => match text_key(&k) {
                            Some(tk) => bucket.delete(&object_name(&tk)).await,
                            None => unsendable(&k),
                        },
                        Err(e) => Err(Error::storage("reading the index", e)),
                    };
                    if r.is_err() {
                        failed.store(true, Relaxed);
                    }
                    (k, r)
                })
                .buffer_unordered(PARALLEL)
                .collect()
                .await;
        // Settled below, with no await left: nothing to give back.
        taken.keys.clear();
        drop(taken);
        let mut first_error = None;
        let mut d = self.notes.keys();
        let mut done = sled::Batch::default();
        for (k, r) in results {
            match r {
                // Changed again meanwhile: its marker stays for that change.
                Ok(()) if d.contains(&k) => {}
                Ok(()) => done.remove(marker(&k)),
                Err(e) => {
                    d.insert(k);
                    first_error.get_or_insert(e);
                }
            }
        }
        self.notes
            .db
            .apply_batch(done)
            .map_err(|e| Error::storage("updating the index", e))?;
        match first_error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

/// Refuses a data directory that belongs to the other backend: with
/// `--storage fs` one that caches a bucket (most of its blobs are not in
/// it), with `--storage s3` one that holds a filesystem store (its content
/// is nowhere else, and the local cache would evict it).
pub(super) fn check_kind(db: &sled::Db, s3: bool) -> Result<()> {
    let err = |e: sled::Error| Error::storage("reading the index", e);
    let origin = db.get(ORIGIN).map_err(err)?;
    let message = match (s3, origin) {
        (false, Some(o)) => format!(
            "this data directory is the local cache of {} (--storage s3): start with --storage s3 and that bucket, or use another data directory for --storage fs",
            String::from_utf8_lossy(&o)
        ),
        (true, None) => {
            let mut holds = false;
            for kv in db.iter() {
                let (k, _) = kv.map_err(err)?;
                if durable(&k) {
                    holds = true;
                    break;
                }
            }
            if !holds {
                return Ok(());
            }
            "this data directory holds a --storage fs store, whose content is only here: use another (empty) data directory for --storage s3 and copy the local repositories over (README: Storage, moving between backends)".to_string()
        }
        _ => return Ok(()),
    };
    Err(Error::storage(
        "opening the data directory",
        std::io::Error::other(message),
    ))
}

/// Fills `db` with the bucket's records unless it already holds them: a
/// data directory that is new, was deleted, or last served another bucket
/// gets every durable record from the bucket (and loses any local record
/// the bucket does not have). Returns how many records were read, or
/// `None` when the data directory already held them.
pub(super) async fn restore(journal: &Journal) -> Result<Option<usize>> {
    let (bucket, db) = (&journal.bucket, &journal.notes.db);
    let origin = bucket.identity();
    let err = |what: &'static str| move |e: sled::Error| Error::storage(what, e);
    if db.get(ORIGIN).map_err(err("reading the index"))?.as_deref() == Some(origin.as_bytes()) {
        return Ok(None);
    }
    tracing::info!(
        bucket = %origin,
        "the data directory does not hold this bucket's records: reading them from the bucket"
    );
    // Local durable records are a cache of another bucket, or of none.
    let mut clear = sled::Batch::default();
    for kv in db.iter() {
        let (k, _) = kv.map_err(err("scanning the index"))?;
        if durable(&k) {
            clear.remove(k);
        }
    }
    db.apply_batch(clear).map_err(err("clearing the index"))?;
    journal.clear()?;
    let names = bucket.list(DIR).await?;
    let records: Vec<(Vec<u8>, Bytes, String)> = futures_util::stream::iter(names)
        .filter_map(|o| async move { key_of(&o.name).filter(|k| durable(k)).map(|k| (k, o.name)) })
        .map(|(k, name)| async move {
            let v = bucket.get_small(&name, MAX_RECORD).await?;
            Ok::<_, Error>(v.map(|v| (k, v, name)))
        })
        .buffer_unordered(PARALLEL)
        .try_filter_map(|r| async move { Ok(r) })
        .try_collect()
        .await?;
    let mut n = 0;
    let mut batch = sled::Batch::default();
    for (tk, tv, name) in records {
        match from_text(&tk, &tv) {
            Some((k, v)) => {
                batch.insert(k, v);
                n += 1;
            }
            None => {
                tracing::warn!(object = %name, "an index record in the bucket does not parse: left out")
            }
        }
    }
    batch.insert(ORIGIN, origin.as_bytes());
    db.apply_batch(batch).map_err(err("restoring the index"))?;
    let db = db.clone();
    tokio::task::spawn_blocking(move || db.flush())
        .await
        .map_err(|e| Error::storage("flushing the restored index", e))?
        .map_err(err("flushing the restored index"))?;
    tracing::info!(records = n, "index restored from the bucket");
    Ok(Some(n))
}

/// The largest record object read back (a referrer descriptor with its
/// annotations is the largest kind).
const MAX_RECORD: u64 = 4 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_stay_readable() {
        let k = b"t/library/alpine\0latest".to_vec();
        let n = object_name(&k);
        assert_eq!(n, "index/t/library/alpine!00latest");
        assert_eq!(key_of(&n).unwrap(), k);
        let k = b"B/127.0.0.1:5000\0sha256:ab!cd".to_vec();
        assert_eq!(key_of(&object_name(&k)).unwrap(), k);
        assert_eq!(key_of("index/t/bad!zz"), None);
        assert_eq!(key_of("blobs/x"), None);
    }

    #[test]
    fn only_durable_records_are_journaled() {
        assert!(durable(b"t/x\0y") && durable(b"B/u\0d") && durable(b"p/x"));
        assert!(!durable(b"s/d") && !durable(b"A/d") && !durable(b"u/id") && !durable(b"S/origin"));
    }

    /// CI caught an acknowledged push missing from the bucket: a
    /// concurrent flush took the tag's key between its note and its
    /// change, sent the old value, and the push's own flush then had
    /// nothing to send. A flush now takes a key only with its change made.
    #[test]
    fn a_flush_takes_a_noted_key_only_once_its_change_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let notes = std::sync::Arc::new(Notes::load(db.clone()).unwrap());
        let k: &[u8] = b"t/golden/app\0v1";
        let noted = notes.note([k]).unwrap();
        assert!(
            db.contains_key(marker(k)).unwrap(),
            "the mark is durable first"
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let taker = {
            let notes = notes.clone();
            std::thread::spawn(move || {
                let mut taken = notes.take();
                tx.send(std::mem::take(&mut taken.keys)).unwrap()
            })
        };
        let early = rx.recv_timeout(std::time::Duration::from_millis(200));
        assert!(
            early.is_err(),
            "taken before the change was made: {early:?}"
        );
        db.insert(k, b"sha256:new".as_slice()).unwrap();
        drop(noted);
        let taken = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        taker.join().unwrap();
        assert!(taken.contains(k));
        assert!(notes.keys().is_empty());
        assert!(
            db.contains_key(marker(k)).unwrap(),
            "the mark stays until sent"
        );
        // Noted again after the take: the next flush has it again.
        drop(notes.note([k]).unwrap());
        let mut again = notes.take();
        assert!(again.keys.contains(k));
        again.keys.clear();
        drop(again);
        // Records that never go to the bucket are not noted.
        drop(notes.note([b"A/x".as_slice()]).unwrap());
        assert!(notes.take().keys.is_empty());
    }

    /// A flush dropped half way (its caller went away) gives back the
    /// keys it took, so the next flush sends them.
    #[test]
    fn a_dropped_flush_gives_its_keys_back() {
        let dir = tempfile::tempdir().unwrap();
        let notes = Notes::load(sled::open(dir.path()).unwrap()).unwrap();
        let k: &[u8] = b"t/golden/app\0v1";
        drop(notes.note([k]).unwrap());
        let taken = notes.take();
        assert!(notes.keys().is_empty());
        drop(taken);
        assert!(notes.keys().contains(k), "given back");
        assert!(notes.take().keys.contains(k));
    }
}
