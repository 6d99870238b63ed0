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
//! send it. At most [`MAX_STREAMS`] streams are open at once (one more is a JSON 503); a comment every
//! [`KEEP_ALIVE`] keeps proxies from closing an idle stream and finds a client that went away (the stream, and
//! its place, end at the first write that fails); a stream ends after [`MAX_LIFETIME`] (the browser's
//! EventSource reconnects, going through the login again, so that a stream does not outlive a logout).

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

/// The streams' shared state: their places, and the overview of the last round, computed once for all.
pub struct Live {
    pub(crate) streams: Arc<tokio::sync::Semaphore>,
    overview: tokio::sync::Mutex<Option<(u64, Arc<Value>)>>,
}

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

/// The overview after round `round` (the one cached when it is that round's, else computed and cached).
async fn overview_of_round(ctx: &Ctx, round: u64) -> Result<Arc<Value>, Fail> {
    let mut cached = ctx.live.overview.lock().await;
    if let Some((r, v)) = cached.as_ref() {
        if *r == round {
            return Ok(v.clone());
        }
    }
    let turn = crate::api::read_turn(&ctx.reads, crate::api::READ_WAIT).await?;
    let c = ctx.clone();
    let v = tokio::task::spawn_blocking(move || {
        let _turn = turn;
        crate::api::overview(&c, &[], &crate::api::Query::default())
    })
    .await
    .map_err(|e| unavailable(format!("the overview failed: {e}")))??;
    let v = Arc::new(v);
    *cached = Some((round, v.clone()));
    Ok(v)
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

fn sse<S>(stream: S) -> Response
where
    S: futures_util::Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

/// What a stream carries along between events.
struct Stream<T> {
    ctx: Ctx,
    rounds: tokio::sync::watch::Receiver<u64>,
    /// Time of the last point sent.
    last_ms: i64,
    /// The first event, sent before waiting for a round.
    first: Option<Event>,
    until: Instant,
    what: T,
    _place: tokio::sync::OwnedSemaphorePermit,
}

impl<T> Stream<T> {
    /// Waits for the next sampling round: its number, or None when the stream is to end (its lifetime is over,
    /// or the sampler stopped).
    async fn next_round(&mut self) -> Option<u64> {
        let left = self.until.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, self.rounds.changed()).await {
            Ok(Ok(())) => Some(*self.rounds.borrow_and_update()),
            _ => None,
        }
    }
}

/// `GET /api/overview/stream`.
pub(crate) async fn overview_stream(ctx: &Ctx) -> Response {
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
    let state = Stream {
        ctx: ctx.clone(),
        rounds,
        last_ms,
        first: Some(Event::default().event("history").data(first.to_string())),
        until: Instant::now() + MAX_LIFETIME,
        what: (),
        _place: place,
    };
    sse(futures_util::stream::unfold(state, |mut s| async move {
        if let Some(e) = s.first.take() {
            return Some((Ok::<_, Infallible>(e), s));
        }
        loop {
            let round = s.next_round().await?;
            // A busy dashboard (no read turn) skips this round; the next one sends the points missed.
            let Ok(v) = overview_of_round(&s.ctx, round).await else {
                continue;
            };
            let (points, last) = points_after(&v["history"], s.last_ms);
            if points.is_empty() {
                // No rate yet (one sample), or this round was sent already.
                continue;
            }
            s.last_ms = last;
            let mut v = (*v).clone();
            v["history"] = Value::Array(points);
            return Some((Ok(Event::default().event("sample").data(v.to_string())), s));
        }
    }))
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
pub(crate) async fn group_lag_stream(ctx: &Ctx, id: &str) -> Response {
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
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            crate::api::group_exists(&c.state, &g)
        })
        .await
        .unwrap_or(false)
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
    let state = Stream {
        ctx: ctx.clone(),
        rounds,
        last_ms,
        first: Some(Event::default().event("history").data(first.to_string())),
        until: Instant::now() + MAX_LIFETIME,
        what: id.to_string(),
        _place: place,
    };
    sse(futures_util::stream::unfold(state, |mut s| async move {
        if let Some(e) = s.first.take() {
            return Some((Ok::<_, Infallible>(e), s));
        }
        loop {
            s.next_round().await?;
            let (v, last) = group_lag(&s.ctx, &s.what, s.last_ms);
            if last == s.last_ms {
                // No new sample of this group (deleted, or no longer among the groups whose lag is kept).
                continue;
            }
            s.last_ms = last;
            return Some((Ok(Event::default().event("sample").data(v.to_string())), s));
        }
    }))
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
}
