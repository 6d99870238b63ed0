//! The live charts: `GET /api/overview/stream` and `GET /api/groups/{id}/lag/stream`, server-sent event streams
//! that push each new sample of the history ([`crate::history`]) as it is taken, instead of the page re-fetching
//! the whole overview on a timer.
//!
//! - Overview stream: first a `history` event, the overview as `GET /api/overview` answers it (cards and the
//!   rates of the last 15 minutes in `history`); then after each sampling round a `sample` event, the same
//!   object whose `history` holds only the points the stream has not sent yet (one, unless the client fell
//!   behind). The page updates its cards and appends the points.
//! - Group lag stream: first a `history` event `{id, lag, lag_history, catch_up, sample_interval_ms}` (as the
//!   group page has them), then after each round a `sample` event with the new points of `lag_history` and the
//!   lag and catch-up estimate they give. A group not known to this broker is a JSON 404 before any event.
//!
//! Two streams rather than one carrying both: each page subscribes to what it shows, and the overview's tabs are
//! not sent every group's lag (up to `MAX_LAG_GROUPS` of them) every five seconds.
//!
//! **Bounds**: every stream waits on the sampler's round counter (a `watch` channel: no timer per client), and
//! the overview of a round is computed once (on a blocking thread, with a read turn) for all the streams that
//! send it. At most [`MAX_STREAMS`] streams are open at once (one more is a JSON 503). Each stream is a task that
//! holds its place, waits on the rounds and queues its events (at most a few) for the response body, which only
//! takes them from the queue: the task, not the body, decides when the stream ends, because hyper stops polling
//! the body of a client that does not read once the socket's buffers are full. The stream (and its place) ends
//! after [`MAX_LIFETIME`] (the browser's EventSource reconnects, through the login again); when its client has
//! gone (a comment every [`KEEP_ALIVE`] keeps proxies from closing an idle stream, and a write that fails drops
//! the body and its queue); when the client has left its queue full for [`STALL_LIMIT`]; and at the first round
//! after the login session it was opened with has ended (logout or expiry; a basic-auth request without a
//! session cookie has no session to end).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::api::{Ctx, Fail};

/// Live streams open at once on one dashboard; one more is refused with 503.
pub const MAX_STREAMS: usize = 64;
/// Longest silence on a stream: a comment line is sent after it.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Longest a stream stays open; the browser's EventSource then opens a new one.
pub const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// How long a stream's client may leave its events untaken (its queue full: it does not read, and the
/// socket's buffers are full) before the stream ends and gives its place back.
pub const STALL_LIMIT: Duration = Duration::from_secs(60);
/// Events queued for one stream's client.
const QUEUE: usize = 4;

/// The streams' shared state: their places, and the overview of the last round, computed once for all.
pub struct Live {
    pub(crate) streams: Arc<tokio::sync::Semaphore>,
    /// The round and its overview, or the reason it could not be read that round (one attempt per round).
    overview: tokio::sync::Mutex<Option<(u64, RoundOverview)>>,
}

/// A round's overview, or why it could not be read.
type RoundOverview = Result<Arc<Value>, String>;

impl Default for Live {
    fn default() -> Self {
        Live {
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
            overview: tokio::sync::Mutex::new(None),
        }
    }
}

fn unavailable(message: String) -> Fail {
    Fail {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message,
        code: None,
        not_running: None,
    }
}

/// A place for one more stream, or the 503 that says there is none.
fn place(ctx: &Ctx) -> Result<tokio::sync::OwnedSemaphorePermit, Fail> {
    ctx.live.streams.clone().try_acquire_owned().map_err(|_| {
        unavailable(format!(
            "{MAX_STREAMS} live streams are open on this dashboard (each open overview or group page holds one); close some pages or try again later"
        ))
    })
}

/// The overview after round `round`: computed once per round for every stream, and a failure is cached for the
/// round too, so that a busy dashboard (no read turn within `READ_WAIT`) costs the streams one wait per round,
/// not one each in turn behind the lock.
async fn overview_of_round(ctx: &Ctx, round: u64) -> Result<Arc<Value>, Fail> {
    let mut cached = ctx.live.overview.lock().await;
    if let Some((r, v)) = cached.as_ref() {
        if *r == round {
            return v.clone().map_err(unavailable);
        }
    }
    let computed = async {
        let turn = crate::api::read_turn(&ctx.reads, crate::api::READ_WAIT).await?;
        let c = ctx.clone();
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            crate::api::overview(&c, &[], &crate::api::Query::default())
        })
        .await
        .map_err(|e| unavailable(format!("the overview failed: {e}")))?
    }
    .await;
    match computed {
        Ok(v) => {
            let v = Arc::new(v);
            *cached = Some((round, Ok(v.clone())));
            Ok(v)
        }
        Err(f) => {
            *cached = Some((round, Err(f.message.clone())));
            Err(f)
        }
    }
}

/// The points of `history` (objects with `at_ms`) after `after`, and the last one's time.
fn points_after(history: &Value, after: i64) -> (Vec<Value>, i64) {
    let mut last = after;
    let new: Vec<Value> = history
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|p| p["at_ms"].as_i64().is_some_and(|t| t > after))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if let Some(t) = new.last().and_then(|p| p["at_ms"].as_i64()) {
        last = t;
    }
    (new, last)
}

/// The response of a stream: its events as [`feed`] queues them, and a comment every [`KEEP_ALIVE`] (a write
/// that fails drops the body and with it the queue's receiver, which ends the feeding task).
fn sse(rx: tokio::sync::mpsc::Receiver<Event>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    // nginx and the proxies that follow it would otherwise buffer the events.
    r.headers_mut().insert(
        axum::http::HeaderName::from_static("x-accel-buffering"),
        axum::http::HeaderValue::from_static("no"),
    );
    r
}

/// What a stream sends after each sampling round.
trait Source: Send + 'static {
    /// The event for round `round`, or None when there is nothing new to send.
    fn next(&mut self, round: u64) -> impl std::future::Future<Output = Option<Event>> + Send;
}

/// What a stream's task holds: its place, the rounds it waits on, its end and its queue. The task, not the
/// response body, holds them: hyper stops polling the body of a client that does not read once the socket's
/// buffers are full, and a body that is not polled could neither end at [`MAX_LIFETIME`] nor give its place
/// back.
struct Feed {
    rounds: tokio::sync::watch::Receiver<u64>,
    tx: tokio::sync::mpsc::Sender<Event>,
    until: tokio::time::Instant,
    /// How long the queue may stay full (the client not taking events) before the stream ends.
    stall: Duration,
    /// The session the stream was opened with (none for a basic-auth login): the stream ends at the first
    /// round after it has ended (logout, expiry).
    session: Option<crate::auth::SessionCheck>,
    _place: tokio::sync::OwnedSemaphorePermit,
}

/// Starts a stream: `first` is queued at once, then `source`'s event after each round (see [`feed`]).
fn start<S: Source>(
    place: tokio::sync::OwnedSemaphorePermit,
    rounds: tokio::sync::watch::Receiver<u64>,
    session: Option<crate::auth::SessionCheck>,
    first: Event,
    source: S,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
    let _ = tx.try_send(first);
    let f = Feed {
        rounds,
        tx,
        until: tokio::time::Instant::now() + MAX_LIFETIME,
        stall: STALL_LIMIT,
        session,
        _place: place,
    };
    tokio::spawn(feed(f, source));
    sse(rx)
}

/// A stream's task: queues `source`'s event after each round until the stream's lifetime is over, the sampler
/// stops, the client has gone or has not taken events for `f.stall`, or the stream's session has ended; then
/// it ends, and the stream's place is free. A round that finds the queue full is skipped (the next event
/// carries the points missed).
async fn feed<S: Source>(mut f: Feed, mut source: S) {
    let mut stalled_since: Option<Instant> = None;
    loop {
        let round = tokio::select! {
            r = f.rounds.changed() => match r {
                Ok(()) => *f.rounds.borrow_and_update(),
                Err(_) => return,
            },
            _ = tokio::time::sleep_until(f.until) => return,
            _ = f.tx.closed() => return,
        };
        if f.session.as_ref().is_some_and(|s| !s.alive()) {
            return;
        }
        if f.tx.capacity() == 0 {
            let since = *stalled_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= f.stall {
                return;
            }
            continue;
        }
        stalled_since = None;
        if let Some(e) = source.next(round).await {
            // Only this task sends, and there was room: an error is a client that went away.
            if f.tx.try_send(e).is_err() {
                return;
            }
        }
    }
}

/// The overview stream's source.
struct Overview {
    ctx: Ctx,
    /// Time of the last point sent.
    last_ms: i64,
}

impl Source for Overview {
    async fn next(&mut self, round: u64) -> Option<Event> {
        // A busy dashboard (no read turn) skips this round; the next one sends the points missed.
        let v = overview_of_round(&self.ctx, round).await.ok()?;
        let (points, last) = points_after(&v["history"], self.last_ms);
        if points.is_empty() {
            // No rate yet (one sample), or this round was sent already.
            return None;
        }
        self.last_ms = last;
        let mut v = (*v).clone();
        v["history"] = Value::Array(points);
        Some(Event::default().event("sample").data(v.to_string()))
    }
}

/// `GET /api/overview/stream`.
pub(crate) async fn overview_stream(
    ctx: &Ctx,
    session: Option<crate::auth::SessionCheck>,
) -> Response {
    let place = match place(ctx) {
        Ok(p) => p,
        Err(f) => return f.into_response(),
    };
    let mut rounds = ctx.history.subscribe();
    let round = *rounds.borrow_and_update();
    let first = match overview_of_round(ctx, round).await {
        Ok(v) => v,
        Err(f) => return f.into_response(),
    };
    let (_, last_ms) = points_after(&first["history"], i64::MIN);
    start(
        place,
        rounds,
        session,
        Event::default().event("history").data(first.to_string()),
        Overview {
            ctx: ctx.clone(),
            last_ms,
        },
    )
}

/// The group page's live part: its lag now (the last sample's) and the catch-up estimate, with the samples after
/// `after`.
fn group_lag(ctx: &Ctx, id: &str, after: i64) -> (Value, i64) {
    let samples = ctx.lag_history.samples(id);
    let lag = samples.last().map_or(0, |s| s.1);
    let points: Vec<Value> = samples
        .iter()
        .filter(|s| s.0 > after)
        .map(|(at, lag)| json!({"at_ms": at, "lag": lag}))
        .collect();
    let last = samples.last().map_or(after, |s| s.0.max(after));
    (
        json!({
            "id": id, "lag": lag, "lag_history": points,
            "catch_up": crate::history::catch_up(&samples, lag),
            "sample_interval_ms": crate::SAMPLE_INTERVAL.as_millis() as u64,
        }),
        last,
    )
}

/// `GET /api/groups/{id}/lag/stream`.
pub(crate) async fn group_lag_stream(
    ctx: &Ctx,
    id: &str,
    session: Option<crate::auth::SessionCheck>,
) -> Response {
    let place = match place(ctx) {
        Ok(p) => p,
        Err(f) => return f.into_response(),
    };
    let exists = {
        let (c, g) = (ctx.clone(), id.to_string());
        let turn = match crate::api::read_turn(&ctx.reads, crate::api::READ_WAIT).await {
            Ok(t) => t,
            Err(f) => return f.into_response(),
        };
        match tokio::task::spawn_blocking(move || {
            let _turn = turn;
            crate::api::group_exists(&c.state, &g)
        })
        .await
        {
            Ok(e) => e,
            // The check panicked: not an answer about the group.
            Err(e) => return unavailable(format!("the group check failed: {e}")).into_response(),
        }
    };
    if !exists {
        return crate::api::not_found(format!(
            "group `{id}` does not exist on this broker (a group lives on its coordinator; list groups with `fjord groups list`)"
        ))
        .into_response();
    }
    let mut rounds = ctx.history.subscribe();
    let _ = rounds.borrow_and_update();
    let (first, last_ms) = group_lag(ctx, id, i64::MIN);
    start(
        place,
        rounds,
        session,
        Event::default().event("history").data(first.to_string()),
        GroupLag {
            ctx: ctx.clone(),
            id: id.to_string(),
            last_ms,
        },
    )
}

/// The group lag stream's source.
struct GroupLag {
    ctx: Ctx,
    id: String,
    last_ms: i64,
}

impl Source for GroupLag {
    async fn next(&mut self, _round: u64) -> Option<Event> {
        let (v, last) = group_lag(&self.ctx, &self.id, self.last_ms);
        if last == self.last_ms {
            // No new sample of this group (deleted, or no longer among the groups whose lag is kept).
            return None;
        }
        self.last_ms = last;
        Some(Event::default().event("sample").data(v.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_after_keeps_the_new_points_and_their_last_time() {
        let h = json!([{"at_ms": 1}, {"at_ms": 2}, {"at_ms": 3}]);
        assert_eq!(
            points_after(&h, i64::MIN),
            (h.as_array().unwrap().clone(), 3)
        );
        assert_eq!(points_after(&h, 2), (vec![json!({"at_ms": 3})], 3));
        assert_eq!(points_after(&h, 3), (vec![], 3));
        assert_eq!(points_after(&json!(null), 7), (vec![], 7));
    }

    /// A source with an event every round.
    struct Every;

    impl Source for Every {
        async fn next(&mut self, round: u64) -> Option<Event> {
            Some(Event::default().event("sample").data(round.to_string()))
        }
    }

    /// A stream whose client takes no events (`take` false) or takes them all, with rounds every 10 ms: whether
    /// its task ended (its place free again) within two seconds.
    async fn ends(take: bool) -> bool {
        let places = Arc::new(tokio::sync::Semaphore::new(1));
        let (rounds_tx, rounds) = tokio::sync::watch::channel(0u64);
        let (tx, mut rx) = tokio::sync::mpsc::channel(QUEUE);
        let f = Feed {
            rounds,
            tx,
            until: tokio::time::Instant::now() + MAX_LIFETIME,
            stall: Duration::from_millis(200),
            session: None,
            _place: places.clone().try_acquire_owned().unwrap(),
        };
        let task = tokio::spawn(feed(f, Every));
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut taken = 0;
        while Instant::now() < deadline && !task.is_finished() {
            rounds_tx.send_modify(|r| *r += 1);
            tokio::time::sleep(Duration::from_millis(10)).await;
            while take && rx.try_recv().is_ok() {
                taken += 1;
            }
        }
        let ended = task.is_finished();
        assert_eq!(places.available_permits(), usize::from(ended));
        assert!(!take || taken > 10, "{taken}");
        ended
    }

    /// A client that does not take its events (hyper no longer polls the body once the socket's buffers are
    /// full) loses its stream after the stall limit, and its place is free; one that reads keeps it.
    #[tokio::test]
    async fn a_stream_whose_client_takes_no_events_ends_and_frees_its_place() {
        assert!(ends(false).await);
        assert!(!ends(true).await);
    }
}
