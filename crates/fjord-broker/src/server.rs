//! TCP accept loop and per-connection framing.
//!
//! A Kafka frame is a 4-byte big-endian length followed by that many bytes of request. Each connection has a
//! reader task that cuts frames (at most one ahead) and a serving task that handles them strictly in order, as
//! Kafka's broker does, with one exception: a run of consecutive Produce requests is pipelined. Each one
//! appends at once, in order, and only its wait for durability (acks=all) overlaps the next ones, so pipelined
//! producers share fsyncs. Responses always leave in request order, and any other request waits until the
//! pending produces are answered before it starts. A frame that is oversized, truncated or undecodable closes
//! that connection only.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::api::{self, Handled, Outcome};
use crate::BrokerState;

/// How long a connection may take to deliver the rest of a frame once its length arrived.
const FRAME_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Produce requests of one connection that may wait for durability at the same time.
const MAX_PIPELINED_PRODUCES: usize = 32;

pub async fn accept_loop(
    listener: TcpListener,
    state: Arc<BrokerState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(state.config.max_connections));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (socket, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Running out of file descriptors must not end the accept loop; back off briefly.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            state.metrics.connections_rejected.inc();
            tracing::warn!(%peer, limit = state.config.max_connections, "max.connections reached; closing");
            continue;
        };
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            state.metrics.connections.inc();
            serve_connection(socket, peer, &state, shutdown).await;
            state.metrics.connections.dec();
            drop(permit);
        });
    }
}

#[derive(Debug)]
enum FrameError {
    Io(std::io::Error),
    TooLarge(usize),
    Negative(i32),
    Timeout,
    Idle(Duration),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "I/O error: {e}"),
            FrameError::TooLarge(n) => {
                write!(f, "frame of {n} bytes exceeds socket.request.max.bytes")
            }
            FrameError::Negative(n) => write!(f, "negative frame length {n}"),
            FrameError::Timeout => write!(f, "frame not completed within {FRAME_READ_TIMEOUT:?}"),
            FrameError::Idle(d) => write!(f, "idle for {d:?} (connections.max.idle.ms)"),
        }
    }
}

/// Reads one frame. `Ok(None)` is a clean end of stream between frames.
async fn read_frame(
    stream: &mut OwnedReadHalf,
    max: usize,
    idle: Duration,
) -> Result<Option<Bytes>, FrameError> {
    let mut len = [0u8; 4];
    match tokio::time::timeout(idle, stream.read_exact(&mut len)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Ok(Err(e)) => return Err(FrameError::Io(e)),
        Err(_) => return Err(FrameError::Idle(idle)),
    }
    let len = i32::from_be_bytes(len);
    if len < 0 {
        return Err(FrameError::Negative(len));
    }
    let len = len as usize;
    if len > max {
        return Err(FrameError::TooLarge(len));
    }
    // Read into uninitialised capacity (no memset of up to a whole request before the socket overwrites it).
    let mut buf = BytesMut::with_capacity(len);
    let read = async {
        while buf.len() < len {
            let left = len - buf.len();
            let mut limited = (&mut buf).limit(left);
            if stream.read_buf(&mut limited).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
        }
        Ok(())
    };
    match tokio::time::timeout(FRAME_READ_TIMEOUT, read).await {
        Ok(Ok(())) => Ok(Some(buf.freeze())),
        Ok(Err(e)) => Err(FrameError::Io(e)),
        Err(_) => Err(FrameError::Timeout),
    }
}

/// Reads frames into `tx` until the peer closes, a frame is bad, or the serving side goes away. The channel
/// holds one frame, so at most two requests are read ahead of the one being served.
async fn read_frames(
    mut rd: OwnedReadHalf,
    max: usize,
    idle: Duration,
    tx: mpsc::Sender<Result<Bytes, FrameError>>,
) {
    loop {
        match read_frame(&mut rd, max, idle).await {
            Ok(Some(f)) => {
                if tx.send(Ok(f)).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

/// A request whose response is not written yet, in request order: the task computing it, and its arrival.
struct InFlight(JoinHandle<Outcome>, Instant);

/// Writes a frame given as chunks with vectored writes (the record data of a fetch is its own chunk).
async fn write_chunks(wr: &mut OwnedWriteHalf, mut chunks: Vec<Bytes>) -> std::io::Result<()> {
    use bytes::Buf;
    chunks.retain(|c| !c.is_empty());
    let mut i = 0;
    while i < chunks.len() {
        let slices: Vec<std::io::IoSlice<'_>> = chunks[i..]
            .iter()
            .take(64)
            .map(|c| std::io::IoSlice::new(c))
            .collect();
        let mut n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let len = chunks[i].len();
            if n >= len {
                n -= len;
                i += 1;
            } else {
                chunks[i].advance(n);
                n = 0;
            }
        }
    }
    Ok(())
}

/// Writes one outcome; false means the connection must close.
async fn deliver(
    wr: &mut OwnedWriteHalf,
    state: &BrokerState,
    peer: SocketAddr,
    outcome: Outcome,
    started: Instant,
) -> bool {
    let api = match outcome {
        Outcome::Respond { api, body } => {
            if let Err(e) = write_chunks(wr, body).await {
                tracing::debug!(%peer, error = %e, "write failed; closing connection");
                return false;
            }
            api
        }
        Outcome::NoResponse { api } => api,
        Outcome::Close(reason) => {
            state.metrics.malformed_frames.inc();
            tracing::warn!(%peer, %reason, "closing connection");
            return false;
        }
    };
    state
        .metrics
        .request_latency
        .get_or_create(&api)
        .observe(started.elapsed().as_secs_f64());
    true
}

async fn finish(InFlight(task, started): InFlight) -> (Outcome, Instant) {
    match task.await {
        Ok(o) => (o, started),
        Err(e) => (Outcome::Close(format!("request task failed: {e}")), started),
    }
}

async fn serve_connection(
    socket: TcpStream,
    peer: SocketAddr,
    state: &Arc<BrokerState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = socket.set_nodelay(true);
    let idle = Duration::from_millis(state.config.connections_max_idle_ms);
    let (rd, mut wr) = socket.into_split();
    let (tx, mut rx) = mpsc::channel(1);
    let reader = tokio::spawn(read_frames(
        rd,
        state.config.socket_request_max_bytes,
        idle,
        tx,
    ));
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    loop {
        let next = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            // Answer the oldest pending produce as soon as it is durable.
            r = async {
                match inflight.front_mut() {
                    Some(InFlight(task, _)) => task.await,
                    None => std::future::pending().await,
                }
            }, if !inflight.is_empty() => Err(r),
            f = rx.recv(), if inflight.len() < MAX_PIPELINED_PRODUCES => Ok(f),
        };
        let frame = match next {
            Ok(f) => f,
            Err(joined) => {
                let Some(InFlight(_, started)) = inflight.pop_front() else {
                    unreachable!("the select branch runs only with a front entry");
                };
                let outcome =
                    joined.unwrap_or_else(|e| Outcome::Close(format!("request task failed: {e}")));
                if !deliver(&mut wr, state, peer, outcome, started).await {
                    break;
                }
                continue;
            }
        };
        let frame = match frame {
            Some(Ok(f)) => f,
            None => {
                // The peer finished sending; still answer what it already asked.
                while let Some(entry) = inflight.pop_front() {
                    let (o, t) = finish(entry).await;
                    if !deliver(&mut wr, state, peer, o, t).await {
                        break;
                    }
                }
                break;
            }
            Some(Err(FrameError::Io(e))) => {
                tracing::debug!(%peer, error = %e, "connection closed");
                break;
            }
            Some(Err(e @ FrameError::Idle(_))) => {
                tracing::debug!(%peer, error = %e, "closing idle connection");
                break;
            }
            Some(Err(e)) => {
                state.metrics.malformed_frames.inc();
                tracing::warn!(%peer, error = %e, "bad frame; closing connection");
                break;
            }
        };
        let started = Instant::now();
        let is_produce =
            api::peek_api_key(&frame) == Some(kafka_protocol::messages::ApiKey::Produce);
        if !is_produce {
            // Anything but a produce starts only after every earlier request is answered.
            let mut ok = true;
            while let Some(entry) = inflight.pop_front() {
                let (o, t) = finish(entry).await;
                if !deliver(&mut wr, state, peer, o, t).await {
                    ok = false;
                    break;
                }
            }
            if !ok {
                break;
            }
        }
        match api::handle_frame(state, frame, peer).await {
            Handled::Done(o) if inflight.is_empty() => {
                if !deliver(&mut wr, state, peer, o, started).await {
                    break;
                }
            }
            // Behind pending produces, even a ready answer waits its turn.
            Handled::Done(o) => {
                inflight.push_back(InFlight(tokio::spawn(async move { o }), started))
            }
            Handled::Pending(fut) => inflight.push_back(InFlight(tokio::spawn(fut), started)),
        }
    }
    reader.abort();
}
