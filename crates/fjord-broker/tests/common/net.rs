//! Loopback fault injection: TCP proxies on 127.0.0.1 whose links can be switched per node between pass, drop
//! (new connections closed at once, existing ones severed) and stall (accepted, nothing forwarded until the
//! mode changes).
//!
//! A link runs from a source node (or an outside client, `None`) to a destination node; its mode is the worse of
//! the two nodes' modes, so setting node X to `Drop` cuts every link X has, in both directions. Each proxy knows
//! its destination; a controller proxy (one per ordered pair of nodes, dialed through
//! `Meta::route_peer_for_test`) also knows its source, and a client-listener proxy learns it from the first
//! request's client id (`fjord-replica-N`, `fjord-txn-coordinator-N`; anything else is an outside client).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    Pass,
    Stall,
    Drop,
}

/// Every node's mode; proxies watch it.
#[derive(Clone)]
pub struct Faults {
    tx: Arc<watch::Sender<BTreeMap<i32, Mode>>>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            tx: Arc::new(watch::channel(BTreeMap::new()).0),
        }
    }
}

impl Faults {
    pub fn set(&self, node: i32, mode: Mode) {
        self.tx.send_modify(|m| {
            m.insert(node, mode);
        });
    }

    /// Every node back to `Pass`.
    pub fn heal_all(&self) {
        self.tx.send_modify(|m| m.clear());
    }

    pub fn mode(&self, node: i32) -> Mode {
        self.tx.borrow().get(&node).copied().unwrap_or(Mode::Pass)
    }

    fn subscribe(&self) -> watch::Receiver<BTreeMap<i32, Mode>> {
        self.tx.subscribe()
    }
}

fn link(modes: &BTreeMap<i32, Mode>, src: Option<i32>, dst: i32) -> Mode {
    let m = |n: i32| modes.get(&n).copied().unwrap_or(Mode::Pass);
    src.map_or(Mode::Pass, m).max(m(dst))
}

/// Resolves once the link is `Drop` (or the fault state is gone).
async fn dropped(mut rx: watch::Receiver<BTreeMap<i32, Mode>>, src: Option<i32>, dst: i32) {
    loop {
        let mode = link(&rx.borrow_and_update(), src, dst);
        if mode == Mode::Drop {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Waits while the link is stalled; `false` if it is dropped (or the fault state is gone).
async fn passable(
    rx: &mut watch::Receiver<BTreeMap<i32, Mode>>,
    src: Option<i32>,
    dst: i32,
) -> bool {
    loop {
        let mode = link(&rx.borrow_and_update(), src, dst);
        match mode {
            Mode::Pass => return true,
            Mode::Drop => return false,
            Mode::Stall => {
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}

/// Who is on the other end of an accepted connection.
#[derive(Clone, Copy)]
pub enum Source {
    Node(i32),
    /// Read from the first Kafka request's client id.
    KafkaClientId,
}

/// A proxy on a free 127.0.0.1 port towards node `dst`'s listener (settable: a restarted broker listens elsewhere).
/// Dropping it stops the proxy and closes every connection through it.
pub struct Proxy {
    pub addr: SocketAddr,
    upstream: Arc<Mutex<Option<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    pub async fn start(faults: &Faults, source: Source, dst: i32) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let up = upstream.clone();
        let faults = faults.clone();
        let task = tokio::spawn(async move {
            // Aborting this task drops the set, which aborts every connection's task.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((inbound, _)) = accepted else { continue };
                        let target = *up.lock().unwrap();
                        conns.spawn(serve(inbound, source, dst, target, faults.subscribe()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Proxy {
            addr,
            upstream,
            task,
        }
    }

    pub fn set_upstream(&self, addr: SocketAddr) {
        *self.upstream.lock().unwrap() = Some(addr);
    }
}

/// The node id in an inter-broker client id (`fjord-replica-2` → 2).
fn node_of(client_id: &[u8]) -> Option<i32> {
    let s = std::str::from_utf8(client_id).ok()?;
    if !s.starts_with("fjord-") {
        return None;
    }
    s.rsplit('-').next()?.parse().ok()
}

/// Reads the first request's header up to and including the client id: (bytes read, the sending node if any).
async fn sniff(inbound: &mut TcpStream) -> Option<(Vec<u8>, Option<i32>)> {
    // length (4), api key (2), api version (2), correlation id (4), client id length (2)
    let mut head = vec![0u8; 14];
    inbound.read_exact(&mut head).await.ok()?;
    let len = i16::from_be_bytes([head[12], head[13]]);
    let mut id = vec![0u8; usize::try_from(len).unwrap_or(0)];
    inbound.read_exact(&mut id).await.ok()?;
    let node = node_of(&id);
    head.extend_from_slice(&id);
    Some((head, node))
}

async fn serve(
    mut inbound: TcpStream,
    source: Source,
    dst: i32,
    upstream: Option<SocketAddr>,
    faults: watch::Receiver<BTreeMap<i32, Mode>>,
) {
    // A link that is down when the connection arrives closes it at once.
    if link(&faults.borrow(), None, dst) == Mode::Drop {
        return;
    }
    let (first, src) = match source {
        Source::Node(n) => (Vec::new(), Some(n)),
        Source::KafkaClientId => {
            let sniffed = tokio::select! {
                s = sniff(&mut inbound) => s,
                _ = dropped(faults.clone(), None, dst) => None,
            };
            let Some(s) = sniffed else { return };
            s
        }
    };
    let mut rx = faults.clone();
    let run = async {
        if !passable(&mut rx, src, dst).await {
            return;
        }
        let Some(up) = upstream else { return };
        let Ok(Ok(mut outbound)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(up)).await
        else {
            return;
        };
        let _ = outbound.set_nodelay(true);
        let _ = inbound.set_nodelay(true);
        if outbound.write_all(&first).await.is_err() {
            return;
        }
        let (ri, wi) = inbound.split();
        let (ro, wo) = outbound.split();
        tokio::select! {
            _ = pump(ri, wo, faults.clone(), src, dst) => {}
            _ = pump(ro, wi, faults.clone(), src, dst) => {}
        }
    };
    tokio::select! {
        _ = run => {}
        _ = dropped(faults.clone(), src, dst) => {}
    }
}

/// Copies one direction, holding what it read while the link is stalled.
async fn pump(
    mut r: impl tokio::io::AsyncRead + Unpin,
    mut w: impl tokio::io::AsyncWrite + Unpin,
    mut rx: watch::Receiver<BTreeMap<i32, Mode>>,
    src: Option<i32>,
    dst: i32,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if !passable(&mut rx, src, dst).await {
            return;
        }
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !passable(&mut rx, src, dst).await {
            return;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The proxies of a cluster of `n` nodes: one in front of each node's client listener (its advertised address)
/// and one per ordered pair (a, b) of nodes for a's controller connections to b.
pub struct Net {
    pub faults: Faults,
    /// Index `id - 1`.
    pub client: Vec<Proxy>,
    /// `(from, to)` → proxy towards `to`'s controller listener.
    pub controller: BTreeMap<(i32, i32), Proxy>,
}

impl Net {
    pub async fn start(n: usize, controller_ports: &[u16]) -> Net {
        let faults = Faults::default();
        let mut client = Vec::new();
        let mut controller = BTreeMap::new();
        for to in 1..=n as i32 {
            client.push(Proxy::start(&faults, Source::KafkaClientId, to).await);
            for from in (1..=n as i32).filter(|f| *f != to) {
                let p = Proxy::start(&faults, Source::Node(from), to).await;
                p.set_upstream(SocketAddr::from((
                    [127, 0, 0, 1],
                    controller_ports[(to - 1) as usize],
                )));
                controller.insert((from, to), p);
            }
        }
        Net {
            faults,
            client,
            controller,
        }
    }

    /// Makes broker `b` (node `id`, just started) reachable through its client proxy and sends its controller
    /// traffic through the pair proxies.
    pub fn attach(&self, id: i32, b: &fjord_broker::Broker) {
        self.client[(id - 1) as usize].set_upstream(b.local_addr());
        for ((from, to), p) in &self.controller {
            if *from == id {
                b.state().meta.route_peer_for_test(*to, Some(p.addr));
            }
        }
    }
}
