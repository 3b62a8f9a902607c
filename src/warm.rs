//! The server's own prefetch: each `[[prefetch]]` list of the config is
//! pulled through the server's mirror at start-up and then every `every`,
//! with the walk `wharf prefetch` uses ([`crate::prefetch`]) over an
//! in-process source instead of HTTP. So golden bases stay cached and their
//! moving tags fresh (a tag whose TTL passed is asked about again, and a
//! new digest fetched), within the pull budget: short of pulls, tags stay
//! at their last known digest ([`crate::upstream::budget`]).

use crate::app::App;
use crate::body::Body;
use crate::config::PrefetchList;
use crate::prefetch::{self, Failed, Options, Progress, Source};
use http::Response;
use std::time::Duration;

/// How long after start-up the first runs begin (the server is serving by
/// then).
const FIRST_RUN_AFTER: Duration = Duration::from_secs(2);

/// The server's mirror as a prefetch source.
struct Own<'a>(&'a App);

impl Source for Own<'_> {
    async fn get(&self, name: &str, what: &str, accept: &[&str]) -> Result<Response<Body>, Failed> {
        self.0
            .get_mirrored(&format!("/v2/{name}/{what}"), accept)
            .await
            .map_err(|e| Failed {
                not_found: e.code().status() == http::StatusCode::NOT_FOUND,
                message: e.to_string(),
            })
    }
}

/// Runs list `i` of the config at start-up and then on its schedule, until
/// `shutdown` changes.
pub async fn keep_warm(app: &App, i: usize, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let Some(list) = app.config.prefetch.get(i) else {
        return;
    };
    if app.config.offline {
        tracing::info!(list = i + 1, "prefetch list not run: Wharf is offline");
        return;
    }
    let start = tokio::time::Instant::now() + FIRST_RUN_AFTER;
    let mut ticks = tokio::time::interval_at(start, list.every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = ticks.tick() => {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    () = run(app, i, list) => {}
                }
            }
        }
    }
}

async fn run(app: &App, i: usize, list: &PrefetchList) {
    let opts = Options {
        platforms: list.platforms.clone(),
        referrers: list.referrers,
    };
    let (totals, failures) =
        prefetch::run(&Own(app), &list.images, &opts, &Progress::logged()).await;
    tracing::info!(
        list = i + 1,
        images = totals.images,
        of = list.images.len(),
        failed = failures.len(),
        fetched_bytes = totals.fetched,
        cached_bytes = totals.cached,
        next_in = %humantime::format_duration(list.every),
        "prefetch list done"
    );
}
