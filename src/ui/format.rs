//! How the web UI writes numbers and times for people: sizes in binary
//! units, times as "5 minutes ago" (with the exact time beside it), short
//! digests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `1.5 MiB`, `512 B`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `3 hours ago` for unix seconds, against `now`.
pub fn ago(unix: u64, now: SystemTime) -> String {
    let then = UNIX_EPOCH + Duration::from_secs(unix);
    let secs = now.duration_since(then).map_or(0, |d| d.as_secs());
    let (n, unit) = match secs {
        0..=59 => return "just now".into(),
        60..=3599 => (secs / 60, "minute"),
        3600..=86_399 => (secs / 3600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// The exact time, for a tooltip.
pub fn exact(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// `sha256:0123456789ab` from a full digest.
pub fn short_digest(d: &str) -> &str {
    let cut = d.find(':').map_or(12, |i| i + 13);
    d.get(..cut).unwrap_or(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_times_digests() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(5 << 30), "5.0 GiB");
        let now = UNIX_EPOCH + Duration::from_secs(100_000);
        assert_eq!(ago(100_000 - 30, now), "just now");
        assert_eq!(ago(100_000 - 60, now), "1 minute ago");
        assert_eq!(ago(100_000 - 7200, now), "2 hours ago");
        assert_eq!(ago(200_000, now), "just now");
        assert_eq!(
            short_digest(&format!("sha256:{}", "a".repeat(64))),
            "sha256:aaaaaaaaaaaa"
        );
        assert_eq!(short_digest("odd"), "odd");
    }
}
