//! The rate-limited summary of an upstream's 404s. Each miss is logged at
//! debug where it happens; this counts them and says how many there were
//! at info at most once a [`SUMMARY_EVERY`], so a scanner asking for
//! hundreds of missing digests a second costs a log line a minute.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shortest time between two summary lines.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// 404s counted since the last summary line.
pub struct Misses {
    state: Mutex<Window>,
}

struct Window {
    since: Instant,
    count: u64,
}

impl Default for Misses {
    fn default() -> Misses {
        Misses {
            state: Mutex::new(Window {
                since: Instant::now(),
                count: 0,
            }),
        }
    }
}

impl Misses {
    /// Counts one 404 of `upstream` and logs the summary when it is due.
    pub fn count(&self, upstream: &str) {
        if let Some((n, over)) = self.count_at(Instant::now()) {
            tracing::info!(
                upstream,
                "{n} upstream 404{} in the last {} (each logged at debug)",
                if n == 1 { "" } else { "s" },
                humantime::format_duration(Duration::from_secs(over.as_secs()))
            );
        }
    }

    /// Counts one 404 at `now`; returns the count and the time it covers
    /// when a summary is due.
    fn count_at(&self, now: Instant) -> Option<(u64, Duration)> {
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        w.count += 1;
        let over = now.saturating_duration_since(w.since);
        if over < SUMMARY_EVERY {
            return None;
        }
        let n = w.count;
        *w = Window {
            since: now,
            count: 0,
        };
        Some((n, over))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_summary_a_minute_at_most() {
        let m = Misses::default();
        let t0 = m.state.lock().unwrap().since;
        for i in 0..1000 {
            assert_eq!(m.count_at(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(m.count_at(t0 + SUMMARY_EVERY), Some((1001, SUMMARY_EVERY)));
        assert_eq!(
            m.count_at(t0 + SUMMARY_EVERY + Duration::from_secs(1)),
            None
        );
        // A quiet spell: the next miss reports the one before it too.
        let later = t0 + SUMMARY_EVERY * 10;
        assert_eq!(m.count_at(later), Some((2, SUMMARY_EVERY * 9)));
    }
}
