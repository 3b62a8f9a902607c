//! What one connection is doing, and when it must be closed: requests in
//! flight, those whose handler is still working (the server's time, never
//! counted against the client), when anything last moved, and the body
//! wrappers that record it.
//! A response body counts as moving each time hyper asks it for more
//! (hyper only asks once the client has taken what was sent, so a client
//! that stops reading stops the clock); a request body counts each time a
//! piece arrives, and is cut off when it brings less than
//! [`MIN_BODY_BYTES`] in a `--body-timeout` window. [`verdict`] is the pure
//! rule the connection's watchdog applies.

use crate::error::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub use crate::body::{TooSlow, MIN_BODY_BYTES};

/// The connection limits the watchdog enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From accept to the first request's headers (TLS handshake and
    /// protocol detection included).
    pub first_request: Duration,
    /// With nothing in flight, after the last request ended.
    pub idle: Duration,
    /// With answers in flight but nothing moving either way (and no
    /// handler still working).
    pub stall: Duration,
    /// The window in which a request body must bring [`MIN_BODY_BYTES`].
    pub body: Duration,
}

/// The watchdog looks at a connection at least this often, so deadlines
/// are kept to within this much.
pub const WATCHDOG_TICK: Duration = Duration::from_secs(5);

impl Limits {
    /// How long the watchdog may sleep at most.
    pub fn tick(&self) -> Duration {
        WATCHDOG_TICK
            .min(self.first_request)
            .min(self.idle)
            .min(self.stall)
    }
}

/// Why a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// No request within `first_request` of accepting it.
    NoRequest,
    /// Idle for `idle` between requests.
    Idle,
    /// Requests in flight, nothing moved for `stall`.
    Stalled,
}

impl Close {
    pub fn as_str(self) -> &'static str {
        match self {
            Close::NoRequest => "no request in time",
            Close::Idle => "idle",
            Close::Stalled => "stalled",
        }
    }
}

/// What the watchdog does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Look again after this long.
    Wait(Duration),
    Close(Close),
}

/// The rule: `quiet` is how long nothing has moved, `in_flight` the
/// requests not yet answered in full, `working` those whose handler has
/// not answered yet, `served` whether any request came. While a handler
/// works (a cold fill, a tag walk, a commit re-hashing a large upload) the
/// wait is the server's: its own deadlines bound it, not this one. A
/// client that stops sending a request body meanwhile is cut off by the
/// body's own timeout.
pub fn verdict(
    quiet: Duration,
    in_flight: usize,
    working: usize,
    served: bool,
    limits: &Limits,
) -> Verdict {
    if working > 0 {
        return Verdict::Wait(limits.stall);
    }
    let (limit, reason) = match (in_flight, served) {
        (0, false) => (limits.first_request, Close::NoRequest),
        (0, true) => (limits.idle, Close::Idle),
        _ => (limits.stall, Close::Stalled),
    };
    match limit.checked_sub(quiet) {
        Some(left) if !left.is_zero() => Verdict::Wait(left),
        _ => Verdict::Close(reason),
    }
}

/// One connection's clock and request count, shared by its watchdog, its
/// service and the bodies in flight.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last movement.
    last: AtomicU64,
    in_flight: AtomicUsize,
    working: AtomicUsize,
    requests: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            working: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    /// Whether any request has arrived on this connection.
    pub fn served(&self) -> bool {
        self.requests.load(Ordering::Relaxed) > 0
    }

    /// The watchdog's verdict now.
    pub fn verdict(&self, limits: &Limits) -> Verdict {
        let now = self.start.elapsed();
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        verdict(
            now.saturating_sub(last),
            self.in_flight.load(Ordering::Relaxed),
            self.working.load(Ordering::Relaxed),
            self.served(),
            limits,
        )
    }

    /// A request arrived; it is in flight until the returned [`InFlight`]
    /// drops (with the response body, once it is sent or abandoned), and
    /// its handler works until the [`Working`] drops.
    pub fn begin(self: &Arc<Self>) -> (InFlight, Working) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.working.fetch_add(1, Ordering::Relaxed);
        self.touch();
        (InFlight(self.clone()), Working(self.clone()))
    }
}

/// A request whose handler has not answered yet.
#[derive(Debug)]
pub struct Working(Arc<Activity>);

impl Drop for Working {
    fn drop(&mut self) {
        // The answer's clock starts now.
        self.0.touch();
        self.0.working.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One request in flight.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request in flight (and its share of
/// the server's requests in flight, if it holds one) and records each time
/// hyper asks it for more.
pub struct Sending<B> {
    inner: B,
    flight: InFlight,
    _share: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl<B> Sending<B> {
    pub fn new(
        inner: B,
        flight: InFlight,
        share: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Self {
        Sending {
            inner,
            flight,
            _share: share,
        }
    }
}

impl<B: Body + Unpin> Body for Sending<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.flight.0.touch();
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that records each piece that arrives and is cut off
/// when it trickles.
pub struct Receiving<B> {
    inner: B,
    activity: Arc<Activity>,
    window: Duration,
    /// The current window's end, armed at the first wait for data.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Bytes that arrived in the current window.
    got: u64,
}

impl<B> Receiving<B> {
    pub fn new(inner: B, activity: Arc<Activity>, window: Duration) -> Self {
        Receiving {
            inner,
            activity,
            window,
            deadline: None,
            got: 0,
        }
    }
}

impl<B> Body for Receiving<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.activity.touch();
                this.got += frame.data_ref().map_or(0, |d| d.len() as u64);
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        let window = this.window;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(window)));
        if deadline.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if this.got < MIN_BODY_BYTES {
            return Poll::Ready(Some(Err(Box::new(TooSlow(window)))));
        }
        // Enough came in this window: start the next one.
        this.got = 0;
        let next = tokio::time::Instant::now() + window;
        deadline.as_mut().reset(next);
        let _ = deadline.as_mut().poll(cx);
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    const LIMITS: Limits = Limits {
        first_request: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        stall: Duration::from_secs(120),
        body: Duration::from_secs(30),
    };

    #[test]
    fn the_rule() {
        let s = Duration::from_secs;
        for (quiet, in_flight, working, served, want) in [
            (s(0), 0, 0, false, Verdict::Wait(s(10))),
            (s(9), 0, 0, false, Verdict::Wait(s(1))),
            (s(10), 0, 0, false, Verdict::Close(Close::NoRequest)),
            (s(11), 0, 0, false, Verdict::Close(Close::NoRequest)),
            (s(11), 0, 0, true, Verdict::Wait(s(49))),
            (s(60), 0, 0, true, Verdict::Close(Close::Idle)),
            (s(60), 1, 0, true, Verdict::Wait(s(60))),
            (s(119), 3, 0, true, Verdict::Wait(s(1))),
            (s(120), 1, 0, true, Verdict::Close(Close::Stalled)),
            // A request in flight on the first-request clock: stall rules.
            (s(30), 1, 0, false, Verdict::Wait(s(90))),
            // A handler still working: the server's time, never a stall.
            (s(500), 1, 1, true, Verdict::Wait(s(120))),
            (s(500), 3, 1, true, Verdict::Wait(s(120))),
        ] {
            assert_eq!(
                verdict(quiet, in_flight, working, served, &LIMITS),
                want,
                "quiet {quiet:?}, {in_flight} in flight, {working} working, served {served}"
            );
        }
    }

    #[test]
    fn requests_are_in_flight_until_their_body_is_dropped() {
        let a = Activity::new();
        assert!(!a.served());
        let (flight, working) = a.begin();
        assert!(a.served());
        assert_eq!(a.working.load(Ordering::Relaxed), 1);
        drop(working);
        let body = Sending::new(http_body_util::Empty::<Bytes>::new(), flight, None);
        assert_eq!(a.in_flight.load(Ordering::Relaxed), 1);
        assert_eq!(a.working.load(Ordering::Relaxed), 0);
        assert!(matches!(a.verdict(&LIMITS), Verdict::Wait(d) if d > Duration::from_secs(100)));
        drop(body);
        assert_eq!(a.in_flight.load(Ordering::Relaxed), 0);
        assert!(matches!(a.verdict(&LIMITS), Verdict::Wait(d) if d <= Duration::from_secs(60)));
    }

    fn chunks(
        rx: tokio::sync::mpsc::Receiver<Bytes>,
    ) -> impl Body<Data = Bytes, Error = std::io::Error> + Unpin {
        let s = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, std::io::Error>(Frame::data(b)), rx))
        });
        StreamBody::new(Box::pin(s))
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickling_body_is_cut_off_and_a_steady_one_is_not() {
        let window = Duration::from_secs(30);
        // 1 byte every 5 s: cut off at the end of the first window.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut body = Receiving::new(chunks(rx), Activity::new(), window);
        let started = tokio::time::Instant::now();
        let feeder = tokio::spawn(async move {
            loop {
                if tx.send(Bytes::from_static(b"x")).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        let mut got = 0;
        let err = loop {
            match body.frame().await {
                Some(Ok(f)) => got += f.data_ref().map_or(0, |d| d.len()),
                Some(Err(e)) => break e,
                None => panic!("the body ended"),
            }
        };
        assert!(err.downcast_ref::<TooSlow>().is_some(), "{err}");
        assert!(got >= 5, "{got}");
        assert_eq!(started.elapsed().as_secs(), 30);
        feeder.abort();

        // 64 KiB every 20 s, for 100 s: never cut off.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut body = Receiving::new(chunks(rx), Activity::new(), window);
        tokio::spawn(async move {
            for _ in 0..5 {
                tx.send(Bytes::from(vec![0u8; MIN_BODY_BYTES as usize]))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_secs(20)).await;
            }
        });
        let mut frames = 0;
        while let Some(f) = body.frame().await {
            f.unwrap();
            frames += 1;
        }
        assert_eq!(frames, 5);
    }
}
