//! The dashboard's live state: one poller reads the views for every connected client and
//! fans frames out to them, so 1,000 clients cost what one does.
//!
//! While at least one client is connected, the poller looks at every view's checkpoint at
//! most every [`POLL_EVERY`] and re-reads only the sections whose views moved (or whose
//! day or range moved with the clock). When a section's JSON changed it builds one frame:
//! a `delta` event with the sections that changed (each whole) and a `snapshot` event with
//! the whole state, both serialized once and shared by every client through a broadcast
//! channel, and kept in a ring of the last [`RING`] frames for clients that resume with
//! `Last-Event-ID`. With no client it does not poll at all.
//!
//! A frame's id is the lowest checkpoint of the views it was read from (the position
//! string `X-Projection-Position` shows). When the data changed but that position did not
//! advance past the previous frame's (another view moved, the day turned), the id is the
//! previous frame's position followed by `.` and a counter of 8 hex digits
//! (`…-000000000000002a.00000001`). Ids therefore strictly increase, and compare as strings.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::response::sse::Event;
use chrono::{NaiveDate, Utc};
use domain::Position;
use futures_util::{Stream, StreamExt};
use serde_json::{Map, Value};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::model::{
    AlertStatus, DashboardState, OpenAlerts, ProjectionLag, RecentMinutes, ViewLag, WindowKind,
    time,
};
use crate::query::WindowRange;
use crate::routes::alerts::{alerts, open_count};
use crate::routes::dashboard::{day_sales, low_stock, orders_by_status, top_products};
use crate::routes::windows::{default_range, windows};
use crate::store::{View, ViewPositions, ViewState, ViewStoreError, Views};

/// Shortest time between two polls: at most four frames a second.
pub const POLL_EVERY: Duration = Duration::from_millis(250);
/// Frames kept for clients that resume.
pub const RING: usize = 256;
/// Most open alerts a frame lists (it counts them all).
const OPEN_ALERTS: i64 = 20;

/// A frame's SSE id: the position it reflects, and a counter for frames at one position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FrameId {
    pub position: Position,
    pub n: u32,
}

impl fmt::Display for FrameId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.n == 0 {
            write!(f, "{}", self.position)
        } else {
            write!(f, "{}.{:08x}", self.position, self.n)
        }
    }
}

impl FromStr for FrameId {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (position, n) = match s.split_once('.') {
            None => (s, 0),
            Some((p, n)) if n.len() == 8 && n.bytes().all(|b| b.is_ascii_hexdigit()) => {
                (p, u32::from_str_radix(n, 16).map_err(|_| ())?)
            }
            Some(_) => return Err(()),
        };
        Ok(Self {
            position: position.parse().map_err(|_| ())?,
            n,
        })
    }
}

/// One change of the state, ready to send.
pub struct Frame {
    pub id: FrameId,
    /// The sections that changed since the previous frame.
    delta: Event,
    /// The whole state at this frame, for clients that start or fell behind.
    snapshot: Event,
}

#[derive(Default)]
struct Ring {
    frames: VecDeque<Arc<Frame>>,
    latest: Option<Arc<Frame>>,
    /// The sections of the latest frame, to tell which changed.
    sections: Map<String, Value>,
    /// No poll since clients were last connected: the latest frame may be old.
    stale: bool,
}

struct Inner {
    views: Views,
    shutdown: CancellationToken,
    clients: watch::Sender<usize>,
    /// Counts the polls done, so a client can wait for a fresh one.
    polls: watch::Sender<u64>,
    frames: broadcast::Sender<Arc<Frame>>,
    ring: Mutex<Ring>,
}

impl Inner {
    fn ring(&self) -> MutexGuard<'_, Ring> {
        // A panic while holding it cannot leave the ring half-updated in a way that
        // matters more than stopping every stream would.
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The shared poller and its frames. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// Counts a connected client for as long as its stream lives.
struct Client(Arc<Inner>);

impl Client {
    fn start(inner: &Arc<Inner>) -> Self {
        inner.clients.send_modify(|n| *n += 1);
        metrics::gauge!("read_dashboard_clients").increment(1.0);
        Self(inner.clone())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.0.clients.send_modify(|n| *n = n.saturating_sub(1));
        metrics::gauge!("read_dashboard_clients").decrement(1.0);
    }
}

/// What each section was read from: a section is read again only when this changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Inputs {
    today: (Option<ViewState>, NaiveDate),
    orders: Option<ViewState>,
    inventory: Option<ViewState>,
    minutes: (Option<ViewState>, WindowRange),
    alerts: Option<ViewState>,
}

impl Inputs {
    fn of(snapshot: &ViewPositions) -> Self {
        let view = |v: View| snapshot.view(v).copied();
        Self {
            today: (view(View::DailySales), Utc::now().date_naive()),
            orders: view(View::Orders),
            inventory: view(View::Inventory),
            minutes: (
                view(View::SalesByMinute),
                default_range(snapshot, WindowKind::Minute),
            ),
            alerts: view(View::Alerts),
        }
    }
}

/// The last state read and what it was read from.
#[derive(Default)]
struct Poller {
    last: Option<(Inputs, DashboardState)>,
}

/// The previous value when its inputs did not change, else a fresh read.
async fn reuse_or<T: Clone>(
    previous: Option<&T>,
    read: impl Future<Output = Result<T, ViewStoreError>>,
) -> Result<T, ViewStoreError> {
    match previous {
        Some(p) => Ok(p.clone()),
        None => read.await,
    }
}

fn lag(snapshot: &ViewPositions) -> ProjectionLag {
    let head = snapshot.log_head.map(|h| h.max_global_position);
    let views: Vec<ViewLag> = snapshot
        .views
        .iter()
        .map(|v| ViewLag {
            view: v.view.name().to_owned(),
            generation: v.generation,
            position: v.position.to_string(),
            behind_head: head.map_or(0, |h| h.saturating_sub(v.position.global_position).max(0)),
        })
        .collect();
    ProjectionLag {
        events: views.iter().map(|v| v.behind_head).max().unwrap_or(0),
        log_head: head,
        position: snapshot.position().to_string(),
        views,
    }
}

impl Poller {
    /// Reads the state at the views' current checkpoints, re-reading only what moved.
    async fn poll(&mut self, views: &Views) -> Result<(Position, DashboardState), ViewStoreError> {
        let snapshot = views.snapshot(View::ALL).await?;
        let inputs = Inputs::of(&snapshot);
        let was = |pick: fn(&Inputs, &Inputs) -> bool| {
            self.last
                .as_ref()
                .filter(|(old, _)| pick(old, &inputs))
                .map(|(_, s)| s)
        };
        let (today, by_status, top_products, low_stock, minutes, alerts) = tokio::try_join!(
            reuse_or(
                was(|a, b| a.today == b.today).map(|s| &s.today),
                day_sales(views, &snapshot, inputs.today.1),
            ),
            reuse_or(
                was(|a, b| a.orders == b.orders).map(|s| &s.by_status),
                orders_by_status(views, &snapshot),
            ),
            reuse_or(
                was(|a, b| a.inventory == b.inventory).map(|s| &s.top_products),
                top_products(views, &snapshot),
            ),
            reuse_or(
                was(|a, b| a.inventory == b.inventory).map(|s| &s.low_stock),
                low_stock(views, &snapshot),
            ),
            reuse_or(
                was(|a, b| a.minutes == b.minutes).map(|s| &s.minutes),
                async {
                    Ok(RecentMinutes {
                        watermark: time(snapshot.watermark(View::SalesByMinute)),
                        windows: windows(views, &snapshot, inputs.minutes.1).await?,
                    })
                },
            ),
            reuse_or(was(|a, b| a.alerts == b.alerts).map(|s| &s.alerts), async {
                let (count, items) = tokio::try_join!(
                    open_count(views, &snapshot),
                    alerts(views, &snapshot, Some(AlertStatus::Open), None, OPEN_ALERTS),
                )?;
                Ok(OpenAlerts { count, items })
            }),
        )?;
        let state = DashboardState {
            today,
            by_status,
            top_products,
            low_stock,
            minutes,
            alerts,
            lag: lag(&snapshot),
        };
        self.last = Some((inputs, state.clone()));
        Ok((snapshot.position(), state))
    }
}

impl Hub {
    /// Must be called inside a Tokio runtime: it starts the poller, which waits for a
    /// client and ends on `shutdown`.
    pub fn new(views: Views, shutdown: CancellationToken) -> Self {
        let inner = Arc::new(Inner {
            views,
            shutdown,
            clients: watch::channel(0).0,
            polls: watch::channel(0).0,
            frames: broadcast::channel(64).0,
            ring: Mutex::new(Ring::default()),
        });
        tokio::spawn(run(inner.clone()));
        Self { inner }
    }

    /// Clients connected right now.
    pub fn clients(&self) -> usize {
        *self.inner.clients.borrow()
    }

    /// The events for one client: after `last` when the ring still holds it, else one
    /// snapshot; then every frame as it comes. Ends on shutdown.
    pub fn subscribe(
        &self,
        last: Option<FrameId>,
    ) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
        let client = Client::start(&self.inner);
        // Subscribed before the ring is read: no frame falls between the two.
        let subscription = Subscription {
            rx: self.inner.frames.subscribe(),
            inner: self.inner.clone(),
            resume: last,
            started: false,
            pending: VecDeque::new(),
            sent: None,
            _client: client,
        };
        futures_util::stream::unfold(subscription, Subscription::next)
            .take_until(self.inner.shutdown.clone().cancelled_owned())
    }
}

struct Subscription {
    inner: Arc<Inner>,
    rx: broadcast::Receiver<Arc<Frame>>,
    resume: Option<FrameId>,
    started: bool,
    pending: VecDeque<Event>,
    /// The id of the last frame sent: anything not after it is skipped.
    sent: Option<FrameId>,
    _client: Client,
}

impl Subscription {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        if !self.started {
            self.started = true;
            self.catch_up().await;
        }
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            let event = match self.rx.recv().await {
                Ok(frame) if self.sent.is_none_or(|s| frame.id > s) => {
                    self.sent = Some(frame.id);
                    frame.delta.clone()
                }
                Ok(_) => continue,
                // Fell more than the channel behind: the whole state, once.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let latest = self.inner.ring().latest.clone();
                    match latest {
                        Some(l) if self.sent.is_none_or(|s| l.id > s) => {
                            self.sent = Some(l.id);
                            l.snapshot.clone()
                        }
                        _ => continue,
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            return Some((Ok(event), self));
        }
    }

    /// Queues what the client lacks: the frames after its last one, or the whole state.
    /// Waits for a poll made while it is connected, so it never starts from an old state.
    async fn catch_up(&mut self) {
        let mut polls = self.inner.polls.subscribe();
        loop {
            {
                let ring = self.inner.ring();
                if let (false, Some(latest)) = (ring.stale, &ring.latest) {
                    let after = self
                        .resume
                        .and_then(|r| ring.frames.iter().position(|f| f.id == r));
                    match after {
                        Some(i) => self
                            .pending
                            .extend(ring.frames.iter().skip(i + 1).map(|f| f.delta.clone())),
                        None => self.pending.push_back(latest.snapshot.clone()),
                    }
                    self.sent = Some(latest.id);
                    return;
                }
            }
            if polls.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Polls while any client is connected, at most every [`POLL_EVERY`].
async fn run(inner: Arc<Inner>) {
    let mut clients = inner.clients.subscribe();
    let mut poller = Poller::default();
    let mut failing = false;
    loop {
        tokio::select! {
            waited = clients.wait_for(|n| *n > 0) => if waited.is_err() { return },
            () = inner.shutdown.cancelled() => return,
        }
        while *clients.borrow_and_update() > 0 {
            let started = tokio::time::Instant::now();
            match poller.poll(&inner.views).await {
                Ok((position, state)) => {
                    failing = false;
                    publish(&inner, position, &state);
                }
                // Once per outage, not four times a second.
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "dashboard: reading the views failed");
                }
                Err(_) => {}
            }
            inner.polls.send_modify(|n| *n += 1);
            tokio::select! {
                () = tokio::time::sleep_until(started + POLL_EVERY) => {}
                () = inner.shutdown.cancelled() => return,
            }
        }
        inner.ring().stale = true;
    }
}

/// Builds and sends a frame when any section changed.
fn publish(inner: &Inner, position: Position, state: &DashboardState) {
    let Ok(Value::Object(sections)) = serde_json::to_value(state) else {
        return;
    };
    let mut ring = inner.ring();
    ring.stale = false;
    let changed: Map<String, Value> = sections
        .iter()
        .filter(|(k, v)| ring.sections.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if changed.is_empty() {
        return;
    }
    let id = match &ring.latest {
        Some(l) if position <= l.id.position => FrameId {
            position: l.id.position,
            n: l.id.n.saturating_add(1),
        },
        _ => FrameId { position, n: 0 },
    };
    let event = |name: &str, data: &Map<String, Value>| {
        Event::default()
            .event(name)
            .id(id.to_string())
            .data(Value::Object(data.clone()).to_string())
    };
    let frame = Arc::new(Frame {
        id,
        delta: event("delta", &changed),
        snapshot: event("snapshot", &sections),
    });
    ring.frames.push_back(frame.clone());
    while ring.frames.len() > RING {
        ring.frames.pop_front();
    }
    ring.latest = Some(frame.clone());
    ring.sections = sections;
    metrics::counter!("read_dashboard_frames_total").increment(1);
    // Under the lock: a client reading the ring sees every frame either there or here.
    let _ = inner.frames.send(frame);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_ids_round_trip_and_sort_as_strings() {
        let p: Position = "0000000000000010-000000000000002a".parse().unwrap();
        let ids = [
            FrameId { position: p, n: 0 },
            FrameId { position: p, n: 1 },
            FrameId { position: p, n: 16 },
            FrameId {
                position: Position {
                    tx_id: 16,
                    global_position: 43,
                },
                n: 0,
            },
        ];
        for w in ids.windows(2) {
            assert!(w[0] < w[1]);
            assert!(w[0].to_string() < w[1].to_string());
        }
        for id in ids {
            assert_eq!(id.to_string().parse::<FrameId>(), Ok(id));
        }
        assert_eq!(
            ids[2].to_string(),
            "0000000000000010-000000000000002a.00000010"
        );
        for bad in [
            "",
            "x",
            "0000000000000010-000000000000002a.1",
            "0000000000000010-000000000000002a.",
        ] {
            assert!(bad.parse::<FrameId>().is_err(), "{bad}");
        }
    }
}
