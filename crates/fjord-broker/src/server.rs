//! TCP accept loop and per-connection framing.
//!
//! A Kafka frame is a 4-byte big-endian length followed by that many bytes of request. Each connection is served
//! by one task that reads a frame, handles it and writes the response before reading the next one, so responses
//! leave in request order (Kafka's broker likewise processes one request per connection at a time); pipelined
//! requests wait in the socket buffer. A frame that is oversized, truncated or undecodable closes that
//! connection only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::api::{self, Outcome};
use crate::BrokerState;

/// How long a connection may take to deliver the rest of a frame once its length arrived.
const FRAME_READ_TIMEOUT: Duration = Duration::from_secs(30);

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
    stream: &mut TcpStream,
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
    let mut buf = BytesMut::zeroed(len);
    match tokio::time::timeout(FRAME_READ_TIMEOUT, stream.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Ok(Some(buf.freeze())),
        Ok(Err(e)) => Err(FrameError::Io(e)),
        Err(_) => Err(FrameError::Timeout),
    }
}

async fn serve_connection(
    mut socket: TcpStream,
    peer: SocketAddr,
    state: &Arc<BrokerState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = socket.set_nodelay(true);
    let idle = Duration::from_millis(state.config.connections_max_idle_ms);
    loop {
        let frame = tokio::select! {
            f = read_frame(&mut socket, state.config.socket_request_max_bytes, idle) => f,
            _ = shutdown.changed() => return,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(FrameError::Io(e)) => {
                tracing::debug!(%peer, error = %e, "connection closed");
                return;
            }
            Err(e @ FrameError::Idle(_)) => {
                tracing::debug!(%peer, error = %e, "closing idle connection");
                return;
            }
            Err(e) => {
                state.metrics.malformed_frames.inc();
                tracing::warn!(%peer, error = %e, "bad frame; closing connection");
                return;
            }
        };
        let started = Instant::now();
        match api::handle_frame(state, frame, peer).await {
            Outcome::Respond { api, body } => {
                if let Err(e) = socket.write_all(&body).await {
                    tracing::debug!(%peer, error = %e, "write failed; closing connection");
                    return;
                }
                state
                    .metrics
                    .request_latency
                    .get_or_create(&api)
                    .observe(started.elapsed().as_secs_f64());
            }
            Outcome::NoResponse { api } => {
                state
                    .metrics
                    .request_latency
                    .get_or_create(&api)
                    .observe(started.elapsed().as_secs_f64());
            }
            Outcome::Close(reason) => {
                state.metrics.malformed_frames.inc();
                tracing::warn!(%peer, %reason, "closing connection");
                return;
            }
        }
    }
}
