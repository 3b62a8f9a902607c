//! Opening the index at its current layout, and keeping builds that
//! cannot read it away from it. The records live in `DATA/index.v2`;
//! `DATA/index` is a small file naming the layout. Wharf builds before
//! layout 2 kept their records in a sled directory at `DATA/index`: a
//! file there stops them at start-up instead of letting them misread
//! binary digests (their garbage collection would find no references and
//! remove local blobs). `DATA/index.lock` is held while the index is open,
//! so a second process never touches a migration in progress.
//!
//! A layout 1 directory found at `DATA/index` is rewritten once: the new
//! index is built beside it (`index.v2.migrating`), flushed, renamed to
//! `index.v2`; then the old directory is set aside (`index.layout1`), the
//! file written, and the old directory removed. A stop at any point
//! resumes from the step it reached; the old records are removed only
//! once the new index and the file are in place. An index of a newer
//! layout is refused, never changed. The bucket's records keep their text
//! form whatever the local layout (see `store::journal`), so a bucket
//! needs no migration.

use super::layout::{self, FileRecord, LAYOUT, LAYOUT_KEY};
use crate::error::{Error, Result};
use fs2::FileExt;
use std::path::{Path, PathBuf};

/// Records written per batch while migrating.
const BATCH: usize = 4096;

/// What the file at `DATA/index` says after its first line (`layout N`).
const NOTE: &str = "This data directory's index is in index.v2 (Wharf index layout 2).
Wharf builds before index layout 2 read a directory at this path; this
file keeps them from starting on a data directory they would misread.
";

fn err(what: &'static str) -> impl FnOnce(sled::Error) -> Error {
    move |e| Error::storage(what, e)
}

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::storage(what, e)
}

fn refuse(message: String) -> Error {
    Error::storage("opening the index", std::io::Error::other(message))
}

/// `index` → `index.<suffix>`, beside it.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

fn open_db(path: &Path, cache_bytes: u64) -> Result<sled::Db> {
    sled::Config::new()
        .path(path)
        .cache_capacity(cache_bytes)
        .open()
        .map_err(err(
            "opening the index (is a wharf server running on this data directory?)",
        ))
}

/// The lock held while an index is open: the `DATA/index.lock` file,
/// locked exclusively (released when the last handle closes).
pub(super) fn lock(path: &Path) -> Result<std::fs::File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err("creating the data directory"))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(sibling(path, "lock"))
        .map_err(io_err("opening the index lock"))?;
    f.try_lock_exclusive().map_err(|_| {
        refuse("the index is in use (is a wharf server running on this data directory?)".into())
    })?;
    Ok(f)
}

/// Opens the index whose marker is at `path` (`DATA/index`), migrating a
/// layout 1 index found there first. The caller holds [`lock`].
pub(super) fn open(path: &Path, cache_bytes: u64) -> Result<sled::Db> {
    let live = sibling(path, "v2");
    let staged = sibling(path, "v2.migrating");
    let parked = sibling(path, "layout1");
    if path.is_file() {
        let text = std::fs::read_to_string(path).map_err(io_err("reading DATA/index"))?;
        let first = text.lines().next().unwrap_or_default();
        if first != format!("layout {}", String::from_utf8_lossy(LAYOUT)) {
            return Err(refuse(format!(
                "{} says {first:?}: a newer wharf wrote this data directory; run a newer wharf on it",
                path.display()
            )));
        }
    } else if path.is_dir() {
        if !live.exists() {
            migrate(path, &staged, &live, cache_bytes)?;
        }
        std::fs::rename(path, &parked).map_err(io_err("setting the old index aside"))?;
        sync_parent(path)?;
    }
    if !path.exists() {
        let tmp = sibling(path, "tmp");
        let text = format!("layout {}\n{NOTE}", String::from_utf8_lossy(LAYOUT));
        std::fs::write(&tmp, text).map_err(io_err("writing DATA/index"))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err("writing DATA/index"))?;
        std::fs::rename(&tmp, path).map_err(io_err("writing DATA/index"))?;
        sync_parent(path)?;
    }
    for leftover in [&parked, &staged] {
        if leftover.exists() {
            std::fs::remove_dir_all(leftover).map_err(io_err("removing the old index"))?;
        }
    }
    let db = open_db(&live, cache_bytes)?;
    match db.get(LAYOUT_KEY).map_err(err("reading the index"))? {
        Some(v) if v == LAYOUT => {}
        Some(v) => {
            return Err(refuse(format!(
                "its layout {} is newer than this wharf's ({}): run a newer wharf on this data directory",
                String::from_utf8_lossy(&v),
                String::from_utf8_lossy(LAYOUT)
            )))
        }
        None => {
            db.insert(LAYOUT_KEY, LAYOUT)
                .map_err(err("writing the index"))?;
            db.flush().map_err(err("flushing the index"))?;
        }
    }
    Ok(db)
}

/// Builds `live` from the layout 1 index at `old`, through `staged`.
fn migrate(old: &Path, staged: &Path, live: &Path, cache_bytes: u64) -> Result<()> {
    let started = std::time::Instant::now();
    tracing::info!(
        index = %old.display(),
        "the index has layout 1 (written by a wharf before index layout 2): rewriting it in layout 2, once"
    );
    if staged.exists() {
        tracing::info!("dropping a partial index migration: it runs again");
        std::fs::remove_dir_all(staged).map_err(io_err("removing a partial migration"))?;
    }
    let (records, skipped) = {
        let db = open_db(old, cache_bytes)?;
        let new = open_db(staged, cache_bytes)?;
        let counts = copy_layout1(&db, &new)?;
        new.insert(LAYOUT_KEY, LAYOUT)
            .map_err(err("writing the migrated index"))?;
        new.flush().map_err(err("flushing the migrated index"))?;
        counts
    };
    std::fs::rename(staged, live).map_err(io_err("putting the migrated index in place"))?;
    sync_parent(live)?;
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "index records that did not parse were left out of the migrated index"
        );
    }
    tracing::info!(
        records,
        took_ms = started.elapsed().as_millis() as u64,
        "index migrated to layout 2"
    );
    Ok(())
}

/// Makes renames in the data directory durable.
fn sync_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io_err("syncing the data directory"))?;
    }
    Ok(())
}

/// Writes every layout 1 record of `old` into `new` in layout 2. Returns
/// how many records were read and how many did not parse.
fn copy_layout1(old: &sled::Db, new: &sled::Db) -> Result<(u64, u64)> {
    let (mut records, mut skipped) = (0u64, 0u64);
    let mut batch = sled::Batch::default();
    let mut pending = 0;
    // Whether every access time is in `new` (they all sort before seals).
    let mut times_written = false;
    for kv in old.iter() {
        let (k, v) = kv.map_err(err("reading the index to migrate"))?;
        records += 1;
        let converted: Option<(Vec<u8>, Vec<u8>)> = match k.get(..2) {
            _ if crate::store::journal::durable(&k) => layout::from_text(&k, &v),
            // `A/<digest>` → the digest's file record, with its time.
            Some(b"A/") => layout::binary_key(&[b"s/", &k[2..]].concat()).and_then(|nk| {
                let access = std::str::from_utf8(&v).ok()?.parse().ok()?;
                let seal = String::new();
                Some((nk, FileRecord { access, seal }.encode()))
            }),
            // `s/<digest>` → the seal joins the record its time started.
            Some(b"s/") => {
                if !times_written {
                    new.apply_batch(std::mem::take(&mut batch))
                        .map_err(err("writing the migrated index"))?;
                    pending = 0;
                    times_written = true;
                }
                match layout::binary_key(&k) {
                    Some(nk) => {
                        let access = new
                            .get(&nk)
                            .map_err(err("reading the migrated index"))?
                            .and_then(|r| FileRecord::decode(&r))
                            .map_or(0, |r| r.access);
                        let seal = String::from_utf8_lossy(&v).into_owned();
                        Some((nk, FileRecord { access, seal }.encode()))
                    }
                    None => None,
                }
            }
            // A journal mark names a record by its key.
            Some(b"J/") => layout::binary_key(&k[2..]).map(|nk| {
                let mut m = b"J/".to_vec();
                m.extend_from_slice(&nk);
                (m, Vec::new())
            }),
            // Upload sessions, the bucket's origin, saved totals: as they are.
            _ => Some((k.to_vec(), v.to_vec())),
        };
        let Some((nk, nv)) = converted else {
            skipped += 1;
            continue;
        };
        batch.insert(nk, nv);
        pending += 1;
        if pending >= BATCH {
            new.apply_batch(std::mem::take(&mut batch))
                .map_err(err("writing the migrated index"))?;
            pending = 0;
        }
    }
    new.apply_batch(batch)
        .map_err(err("writing the migrated index"))?;
    Ok((records, skipped))
}

#[cfg(test)]
mod tests {
    use super::super::{Index, ManifestMeta};
    use super::*;
    use crate::oci::digest::Algorithm;
    use crate::oci::{Digest, RepoName, Tag};

    fn d(x: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, x)
    }

    /// An index as a wharf before layout 2 wrote it.
    fn write_layout1(path: &Path) {
        let (cfg, layer, m, sig) = (d(b"c"), d(b"l"), d(b"m"), d(b"s"));
        let db = sled::open(path).unwrap();
        let meta = |subject: Option<&Digest>| {
            serde_json::to_vec(&ManifestMeta {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                size: 472,
                subject: subject.cloned(),
                stored: 1_796_080_525,
            })
            .unwrap()
        };
        let records: Vec<(String, Vec<u8>)> = vec![
            ("p/lib/app".into(), vec![]),
            (format!("l/lib/app\0{cfg}"), vec![]),
            (format!("l/lib/app\0{layer}"), vec![]),
            (format!("l/lib/app\0{m}"), vec![]),
            (format!("m/lib/app\0{m}"), meta(None)),
            (format!("m/lib/app\0{sig}"), meta(Some(&m))),
            ("t/lib/app\0v1".into(), m.to_string().into_bytes()),
            (
                format!("r/lib/app\0{m}\0{sig}"),
                format!(r#"{{"mediaType":"x","digest":"{sig}","size":3}}"#).into_bytes(),
            ),
            (
                "u/abc".into(),
                br#"{"repo":"lib/app","started_unix":5}"#.to_vec(),
            ),
            (format!("B/docker.io\0{layer}"), b"1234".to_vec()),
            (format!("M/docker.io\0{m}"), meta(None)),
            (
                "T/docker.io\0library/alpine\x003.20".into(),
                m.to_string().into_bytes(),
            ),
            (format!("s/{cfg}"), b"1.5:10".to_vec()),
            (format!("A/{cfg}"), b"777".to_vec()),
            (format!("s/{layer}"), b"2.5:1234".to_vec()),
            (format!("A/{m}"), b"888".to_vec()),
            ("J/t/lib/app\0v1".to_string(), vec![]),
            ("C/counts".into(), b"{}".to_vec()),
            ("l/bad\0sha256:nothex".into(), vec![]),
        ];
        for (k, v) in records {
            db.insert(k.as_bytes(), v).unwrap();
        }
        db.flush().unwrap();
    }

    fn check_migrated(idx: &Index) {
        let (cfg, layer, m, sig) = (d(b"c"), d(b"l"), d(b"m"), d(b"s"));
        let app = RepoName::parse("lib/app").unwrap();
        assert_eq!(idx.repos(None, 10).unwrap(), ["lib/app"]);
        assert_eq!(
            idx.tag(&app, &Tag::parse("v1").unwrap()).unwrap(),
            Some(m.clone())
        );
        for b in [&cfg, &layer, &m] {
            assert!(idx.blob_linked(&app, b).unwrap());
        }
        let meta = idx.manifest(&app, &sig).unwrap().unwrap();
        assert_eq!((meta.size, meta.subject), (472, Some(m.clone())));
        let refs: Vec<Digest> = idx
            .referrers_after(&app, &m, None)
            .map(|r| r.unwrap().digest)
            .collect();
        assert_eq!(refs, [sig]);
        assert_eq!(idx.upload("abc").unwrap().unwrap().repo, "lib/app");
        assert_eq!(
            idx.mirror_blob_size("docker.io", &layer).unwrap(),
            Some(1234)
        );
        assert_eq!(
            idx.mirror_manifest("docker.io", &m).unwrap().unwrap().size,
            472
        );
        assert_eq!(
            idx.mirror_tag("docker.io", "library/alpine", "3.20")
                .unwrap(),
            Some(m.clone())
        );
        assert_eq!(idx.seal(&cfg).unwrap().as_deref(), Some("1.5:10"));
        assert_eq!(idx.access_time(&cfg).unwrap(), Some(777));
        assert_eq!(idx.seal(&layer).unwrap().as_deref(), Some("2.5:1234"));
        assert_eq!(idx.access_time(&layer).unwrap(), None);
        assert_eq!(idx.seal(&m).unwrap(), None);
        assert_eq!(idx.access_time(&m).unwrap(), Some(888));
        let mark = {
            let mut k = b"J/".to_vec();
            k.extend(layout::tag("lib/app", "v1"));
            k
        };
        assert!(idx.db().contains_key(mark).unwrap(), "journal marks follow");
        assert_eq!(
            idx.db().get(b"C/counts").unwrap().as_deref(),
            Some(&b"{}"[..])
        );
        assert_eq!(idx.db().get(LAYOUT_KEY).unwrap().as_deref(), Some(LAYOUT));
        let mut links = 0;
        idx.for_each_local_link(|_, _| links += 1).unwrap();
        assert_eq!(links, 3, "the record that did not parse is left out");
    }

    fn open(path: &Path) -> Index {
        Index::open(path, 1 << 20, None).unwrap()
    }

    #[test]
    fn a_layout1_index_is_migrated_once_and_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        write_layout1(&path);
        let idx = open(&path);
        check_migrated(&idx);
        drop(idx);
        assert!(path.is_file(), "a file stands where older builds look");
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("layout 2\n"));
        for gone in ["v2.migrating", "layout1"] {
            assert!(!sibling(&path, gone).exists(), "{gone}");
        }
        // Opening again changes nothing.
        let idx = open(&path);
        check_migrated(&idx);
        // Changes after the migration are in layout 2 too.
        let app = RepoName::parse("lib/app").unwrap();
        idx.delete_tag(&app, &Tag::parse("v1").unwrap()).unwrap();
        assert_eq!(idx.tags(&app, None, 10).unwrap(), Vec::<String>::new());
        // A second process cannot open it meanwhile.
        let e = Index::open(&path, 1 << 20, None).err().unwrap();
        assert!(e.to_string().contains("in use"), "{e}");
        drop(idx);
        // sled, as an older build opens it, cannot start on it.
        assert!(sled::open(&path).is_err());
    }

    #[test]
    fn an_interrupted_migration_finishes_or_starts_again() {
        // Stopped while building: the partial index is dropped.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        write_layout1(&path);
        let partial = sled::open(sibling(&path, "v2.migrating")).unwrap();
        partial.insert(b"p/half", b"").unwrap();
        partial.flush().unwrap();
        drop(partial);
        check_migrated(&open(&path));

        // Stopped after the new index was in place, before the old one was
        // set aside: the new one is used as it is.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        write_layout1(&path);
        drop(open(&path));
        std::fs::remove_file(&path).unwrap();
        let db = sled::open(&path).unwrap();
        db.insert(b"p/written-after", b"").unwrap();
        db.flush().unwrap();
        drop(db);
        let idx = open(&path);
        check_migrated(&idx);
        assert!(path.is_file() && !sibling(&path, "layout1").exists());
        drop(idx);

        // Stopped after the old one was set aside, before the file.
        std::fs::remove_file(&path).unwrap();
        write_layout1(&sibling(&path, "layout1"));
        check_migrated(&open(&path));
        assert!(path.is_file() && !sibling(&path, "layout1").exists());
    }

    #[test]
    fn a_newer_layout_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        drop(open(&path));
        std::fs::write(&path, "layout 3\n").unwrap();
        let e = Index::open(&path, 1 << 20, None).err().unwrap();
        assert!(e.to_string().contains("newer"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "layout 3\n");

        std::fs::write(&path, format!("layout 2\n{NOTE}")).unwrap();
        let db = sled::open(sibling(&path, "v2")).unwrap();
        db.insert(LAYOUT_KEY, b"3").unwrap();
        db.insert(b"p/x", b"").unwrap();
        db.flush().unwrap();
        drop(db);
        let e = Index::open(&path, 1 << 20, None).err().unwrap();
        assert!(e.to_string().contains("newer"), "{e}");
        let db = sled::open(sibling(&path, "v2")).unwrap();
        assert!(db.contains_key(b"p/x").unwrap());
    }
}
