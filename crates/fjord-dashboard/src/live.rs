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
//! A page that has just read `GET /api/overview` opens the overview stream with `?after=<at_ms>` (the time of
//! the last point it has): the first event is then a `sample` with only the points after it, not the whole
//! history again.
//!
//! **Bounds**: every stream waits on the sampler's round counter (a `watch` channel: no timer per client), and
//! the overview of a round is computed once (on a blocking thread, with a read turn) for all the streams that
//! send it. At most [`MAX_STREAMS`] streams are open at once (one more is a JSON 503), and at most
//! [`MAX_STREAMS_PER_CLIENT`] of them for one client (one more is a JSON 429), so that no single login can take
//! every place. Each stream is a task that
//! holds its place, waits on the rounds and queues its events (at most a few) for the response body, which only
//! takes them from the queue: the task, not the body, decides when the stream ends, because hyper stops polling
//! the body of a client that does not read once the socket's buffers are full. The stream (and its place) ends
//! after [`MAX_LIFETIME`] (the browser's EventSource reconnects, through the login again); when its client has
//! gone (a comment every [`KEEP_ALIVE`] keeps proxies from closing an idle stream, and a write that fails drops
//! the body and its queue); when the client has left its queue full for [`STALL_LIMIT`]; and at the first round
//! after the login session it was opened with has ended (logout or expiry; a basic-auth request without a
//! session cookie has no session to end).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::api::{Ctx, Fail};

/// Live streams open at once on one dashboard; one more is refused with 503.
pub const MAX_STREAMS: usize = 64;
/// Live streams one client holds at once: one logged-in user (every session and basic-auth request of that
/// user together, since credentials can open any number of sessions), or one address other than loopback
/// without a login (a local client without a login counts only against [`MAX_STREAMS`]: without a login the
/// dashboard listens on loopback alone, and everyone there shares the machine). A browser holds one stream per
/// open overview or group page and opens at most six connections to a host over HTTP/1.1, so a user can keep a
/// couple of browsers open, and no user can take every place.
pub const MAX_STREAMS_PER_CLIENT: usize = 16;
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
    /// Streams open per client (see [`MAX_STREAMS_PER_CLIENT`]); a client with none has no entry.
    clients: Clients,
    /// The round and its overview, or the reason it could not be read that round (one attempt per round).
    overview: tokio::sync::Mutex<Option<(u64, RoundOverview)>>,
}

/// Streams open per client.
type Clients = Arc<std::sync::Mutex<HashMap<String, usize>>>;

/// A round's overview, or why it could not be read.
type RoundOverview = Result<Arc<Value>, String>;

impl Default for Live {
    fn default() -> Self {
        Live {
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
            clients: Arc::default(),
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

/// Who opens a stream, for [`MAX_STREAMS_PER_CLIENT`]: the user it is logged in as, else the address it came
/// from unless that is loopback.
pub(crate) fn client_of(user: Option<&str>, peer: Option<IpAddr>) -> Option<String> {
    match (user, peer) {
        (Some(u), _) => Some(format!("user {u}")),
        (None, Some(ip)) if !ip.to_canonical().is_loopback() => {
            Some(format!("address {}", crate::auth::client_key(ip)))
        }
        _ => None,
    }
}

/// A stream's place: one of [`MAX_STREAMS`] and, for a known client, one of its [`MAX_STREAMS_PER_CLIENT`];
/// both given back when it is dropped.
pub(crate) struct Place {
    client: Option<(Clients, String)>,
    _global: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some((clients, key)) = self.client.take() {
            let mut c = clients.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = c.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    c.remove(&key);
                }
            }
        }
    }
}

/// A place for one more stream of `client`: a 429 when the client holds [`MAX_STREAMS_PER_CLIENT`] already, a
/// 503 when the dashboard holds [`MAX_STREAMS`].
fn place(live: &Live, client: Option<String>) -> Result<Place, Fail> {
    let mut place = Place {
        client: None,
        _global: None,
    };
    if let Some(key) = client {
        let mut c = live.clients.lock().unwrap_or_else(|p| p.into_inner());
        let n = c.entry(key.clone()).or_insert(0);
        if *n >= MAX_STREAMS_PER_CLIENT {
            return Err(Fail {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: format!(
                    "this user (or address) has {MAX_STREAMS_PER_CLIENT} live streams open already (each open overview or group page holds one); close some pages first"
                ),
                code: None,
                not_running: None,
            });
        }
        *n += 1;
        place.client = Some((live.clients.clone(), key));
    }
    // On a refusal here `place` is dropped, which gives the client's count back.
    place._global = Some(live.streams.clone().try_acquire_owned().map_err(|_| {
        unavailable(format!(
            "{MAX_STREAMS} live streams are open on this dashboard (each open overview or group page holds one); close some pages or try again later"
        ))
    })?);
    Ok(place)
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
    let c = ctx.clone();
    let computed = crate::api::blocking_read(ctx, move || {
        crate::api::overview(&c, &[], &crate::api::Query::default())
    })
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

/// The items of `rx` as a response body's stream, until the sender is dropped (a write that fails drops the body
/// and with it `rx`, which the sender sees closed).
pub(crate) fn queued<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = Result<T, Infallible>> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    })
}

/// What every event stream of the dashboard answers with besides its events: not cached, and not buffered by
/// nginx and the proxies that follow it (they would hold the events back).
pub(crate) fn unbuffered(mut r: Response) -> Response {
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r.headers_mut().insert(
        axum::http::HeaderName::from_static("x-accel-buffering"),
        axum::http::HeaderValue::from_static("no"),
    );
    r
}

/// The response of a stream: its events as [`feed`] queues them, and a comment every [`KEEP_ALIVE`].
fn sse(rx: tokio::sync::mpsc::Receiver<Event>) -> Response {
    unbuffered(
        Sse::new(queued(rx))
            .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
            .into_response(),
    )
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
    _place: Place,
}

/// Starts a stream: `first` is queued at once, then `source`'s event after each round (see [`feed`]).
fn start<S: Source>(
    place: Place,
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
        Some(sample(&v, points))
    }
}

/// A `sample` event: the overview `v` with `points` as its history (its other fields are copied, never the
/// whole history).
fn sample(v: &Value, points: Vec<Value>) -> Event {
    let mut out = serde_json::Map::new();
    if let Some(fields) = v.as_object() {
        for (k, x) in fields {
            if k != "history" {
                out.insert(k.clone(), x.clone());
            }
        }
    }
    out.insert("history".into(), Value::Array(points));
    Event::default()
        .event("sample")
        .data(Value::Object(out).to_string())
}

/// `GET /api/overview/stream[?after=AT_MS]`: with `after` (the time of the last point the page has, one the
/// history holds), the first event is a `sample` with only the points after it, else the `history`.
pub(crate) async fn overview_stream(
    ctx: &Ctx,
    session: Option<crate::auth::SessionCheck>,
    client: Option<String>,
    after: Option<i64>,
) -> Response {
    let place = match place(&ctx.live, client) {
        Ok(p) => p,
        Err(f) => return f.into_response(),
    };
    let mut rounds = ctx.history.subscribe();
    let round = *rounds.borrow_and_update();
    let first = match overview_of_round(ctx, round).await {
        Ok(v) => v,
        Err(f) => return f.into_response(),
    };
    // `after` counts only when it is the time of a point this history holds: one from before a restart of the
    // dashboard (whose clock may be behind it) or older than the history gets the whole history instead, which
    // the page takes in place of its points.
    let known = |t: i64| {
        first["history"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["at_ms"].as_i64() == Some(t)))
    };
    let (event, last_ms) = match after.filter(|t| known(*t)) {
        Some(after) => {
            let (points, last) = points_after(&first["history"], after);
            (sample(&first, points), last)
        }
        None => (
            Event::default().event("history").data(first.to_string()),
            first["history"]
                .as_array()
                .and_then(|a| a.last())
                .and_then(|p| p["at_ms"].as_i64())
                .unwrap_or(i64::MIN),
        ),
    };
    start(
        place,
        rounds,
        session,
        event,
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
    client: Option<String>,
) -> Response {
    let place = match place(&ctx.live, client) {
        Ok(p) => p,
        Err(f) => return f.into_response(),
    };
    let (c, g) = (ctx.clone(), id.to_string());
    let exists =
        match crate::api::blocking_read(ctx, move || Ok(crate::api::group_exists(&c.state, &g)))
            .await
        {
            Ok(e) => e,
            Err(f) => return f.into_response(),
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
            _followed: ctx.lag_history.follow(id),
        },
    )
}

/// The group lag stream's source.
struct GroupLag {
    ctx: Ctx,
    id: String,
    last_ms: i64,
    /// Keeps the group sampled while the stream lives, also when it is not among the groups with the largest
    /// lags that are always sampled.
    _followed: crate::history::Followed,
}

impl Source for GroupLag {
    async fn next(&mut self, _round: u64) -> Option<Event> {
        let (v, last) = group_lag(&self.ctx, &self.id, self.last_ms);
        if last == self.last_ms {
            // No new sample of this group (deleted).
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

    /// A client (a session, or an address other than loopback) holds at most `MAX_STREAMS_PER_CLIENT` places
    /// (429 past that) while other clients still get theirs; a place dropped is given back to both counts, also
    /// when the dashboard-wide limit refused it after the client's count was taken.
    #[test]
    fn a_client_holds_at_most_its_share_of_places_and_gives_them_back() {
        let live = Live::default();
        let a = || Some("user a".to_string());
        let mut held: Vec<Place> = (0..MAX_STREAMS_PER_CLIENT)
            .map(|_| place(&live, a()).expect("a place"))
            .collect();
        let refused = place(&live, a()).err().expect("refused");
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(
            refused.message.contains("16 live streams"),
            "{}",
            refused.message
        );
        let b = place(&live, Some("user b".into())).expect("another client");
        let local = place(&live, None).expect("a local client");
        held.pop();
        held.push(place(&live, a()).expect("a place given back"));
        // Fill the dashboard: a refusal there leaves client c's count as it was.
        let rest: Vec<Place> = (0..MAX_STREAMS - MAX_STREAMS_PER_CLIENT - 2)
            .map(|_| place(&live, None).expect("a place"))
            .collect();
        let full = place(&live, Some("user c".into())).err().expect("refused");
        assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!live.clients.lock().unwrap().contains_key("user c"));
        drop((held, b, local, rest));
        assert!(live.clients.lock().unwrap().is_empty());
        assert_eq!(live.streams.available_permits(), MAX_STREAMS);
    }

    #[test]
    fn a_client_is_its_session_else_an_address_other_than_loopback() {
        let v4 = |a, b, c, d| Some(IpAddr::from([a, b, c, d]));
        assert_eq!(client_of(None, v4(127, 0, 0, 1)), None);
        assert_eq!(client_of(None, Some("::1".parse().unwrap())), None);
        assert_eq!(
            client_of(None, Some("::ffff:127.0.0.1".parse().unwrap())),
            None
        );
        assert_eq!(client_of(None, None), None);
        assert_eq!(
            client_of(None, v4(192, 0, 2, 9)).as_deref(),
            Some("address 192.0.2.9")
        );
        // IPv6 clients by their /64, as the login lock-out counts them.
        assert_eq!(
            client_of(None, Some("2001:db8::1".parse().unwrap())),
            client_of(None, Some("2001:db8::2".parse().unwrap()))
        );
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
            _place: Place {
                client: None,
                _global: Some(places.clone().try_acquire_owned().unwrap()),
            },
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
