//! Summaries of events that can come in floods (a scanner's 404s, failed
//! accepts while out of file descriptors): the first is reported at once,
//! then at most one summary line a [`SUMMARY_EVERY`] with how many there
//! were, so a flood costs a log line a minute. Each event can still be
//! logged at debug where it happens.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shortest time between two summary lines.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Events counted since the last summary line.
#[derive(Default)]
pub struct Summary {
    state: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    /// When the last summary was due; `None` before the first event.
    since: Option<Instant>,
    count: u64,
}

impl Summary {
    /// Counts one event. When a summary line is due, returns how many
    /// events it covers and over how long.
    pub fn tick(&self) -> Option<(u64, Duration)> {
        self.tick_at(Instant::now())
    }

    fn tick_at(&self, now: Instant) -> Option<(u64, Duration)> {
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        w.count += 1;
        let over = match w.since {
            None => Duration::ZERO,
            Some(since) => {
                let over = now.saturating_duration_since(since);
                if over < SUMMARY_EVERY {
                    return None;
                }
                over
            }
        };
        let n = w.count;
        *w = Window {
            since: Some(now),
            count: 0,
        };
        Some((n, over))
    }
}

/// `over` for a log line: whole seconds, as `1m 30s`.
pub fn span(over: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(over.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_at_once_then_one_summary_a_minute_at_most() {
        let s = Summary::default();
        let t0 = Instant::now();
        assert_eq!(s.tick_at(t0), Some((1, Duration::ZERO)));
        for i in 1..1000 {
            assert_eq!(s.tick_at(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(s.tick_at(t0 + SUMMARY_EVERY), Some((1000, SUMMARY_EVERY)));
        assert_eq!(s.tick_at(t0 + SUMMARY_EVERY + Duration::from_secs(1)), None);
        // A quiet spell: the next event reports the one before it too.
        let later = t0 + SUMMARY_EVERY * 10;
        assert_eq!(s.tick_at(later), Some((2, SUMMARY_EVERY * 9)));
    }
}
