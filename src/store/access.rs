//! With a bucket, when each blob was last used goes there too, batched:
//! the access times gathered in a minute become one object
//! `access/<unix ms>-<id>` of `digest millis` lines, never one write per
//! use. Every [`COMPACT_AFTER`] batches, the batches are replaced by one
//! snapshot of the access times the index holds (evicted and collected
//! blobs have left it). A data directory filled from the bucket reads
//! them back, so eviction's least-recently-used order survives a new
//! machine.

use super::bucket::Bucket;
use super::Index;
use crate::error::Result;
use crate::oci::Digest;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use std::collections::HashMap;

const DIR: &str = "access/";

/// Batches written before they are compacted into one snapshot.
pub(super) const COMPACT_AFTER: usize = 60;

/// The largest access object read back (a snapshot of a few million
/// blobs).
const MAX_OBJECT: u64 = 256 << 20;

fn encode(times: &[(Digest, u64)]) -> Bytes {
    let mut out = String::with_capacity(times.len() * 90);
    for (d, t) in times {
        out.push_str(&format!("{d} {t}\n"));
    }
    Bytes::from(out)
}

fn decode(bytes: &[u8], into: &mut HashMap<Digest, u64>) {
    for line in String::from_utf8_lossy(bytes).lines() {
        let Some((d, t)) = line.split_once(' ') else {
            continue;
        };
        if let (Ok(d), Ok(t)) = (d.parse::<Digest>(), t.parse::<u64>()) {
            let e = into.entry(d).or_insert(0);
            *e = (*e).max(t);
        }
    }
}

fn batch_name() -> String {
    format!(
        "{DIR}{:013}-{}",
        super::cache::unix_now(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Writes one batch of access times.
pub(super) async fn push(bucket: &Bucket, times: &[(Digest, u64)]) -> Result<()> {
    if times.is_empty() {
        return Ok(());
    }
    bucket.put_small(&batch_name(), encode(times)).await
}

/// Replaces every access object with one snapshot of the index's times.
pub(super) async fn compact(bucket: &Bucket, index: &Index) -> Result<()> {
    let old = bucket.list(DIR).await?;
    let mut times: Vec<(Digest, u64)> = index.access_times()?.into_iter().collect();
    times.sort();
    let snapshot = batch_name();
    bucket.put_small(&snapshot, encode(&times)).await?;
    for o in old.into_iter().filter(|o| o.name != snapshot) {
        bucket.delete(&o.name).await?;
    }
    Ok(())
}

/// Reads every access object into the index (the latest time of each
/// blob wins). Returns how many blobs have a time.
pub(super) async fn restore(bucket: &Bucket, index: &Index) -> Result<usize> {
    let names = bucket.list(DIR).await?;
    let objects: Vec<Bytes> = futures_util::stream::iter(names)
        .map(|o| async move { bucket.get_small(&o.name, MAX_OBJECT).await })
        .buffer_unordered(8)
        .try_filter_map(|b| async move { Ok(b) })
        .try_collect()
        .await?;
    let mut times = HashMap::new();
    for o in &objects {
        decode(o, &mut times);
    }
    let times: Vec<(Digest, u64)> = times.into_iter().collect();
    index.put_access_times(&times)?;
    Ok(times.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::digest::Algorithm;

    #[test]
    fn batches_round_trip_and_the_latest_time_wins() {
        let a = Digest::of(Algorithm::Sha256, b"a");
        let b = Digest::of(Algorithm::Sha256, b"b");
        let mut times = HashMap::new();
        decode(&encode(&[(a.clone(), 5), (b.clone(), 7)]), &mut times);
        decode(&encode(&[(a.clone(), 9)]), &mut times);
        decode(b"garbage line\nsha256:zz 1\n", &mut times);
        assert_eq!(times.len(), 2);
        assert_eq!(times[&a], 9);
        assert_eq!(times[&b], 7);
    }
}
