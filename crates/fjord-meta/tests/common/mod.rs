//! Helpers shared by the quorum and liveness tests: bounded waits, broker infos, free ports.

#![allow(dead_code)] // each test binary uses a different part of it

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fjord_meta::BrokerInfo;

/// Bound on every wait, generous for a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(60);

pub async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Polls `cond` until it holds, at most `within`.
pub async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn broker(id: i32) -> BrokerInfo {
    BrokerInfo {
        id,
        host: "localhost".into(),
        port: 9092 + id,
        rack: None,
    }
}

/// Free ports on 127.0.0.1 outside the kernel's ephemeral range (`fjord_meta::ports`), so an outgoing connection
/// of a test running in parallel cannot take one before the node binds it.
pub fn free_addrs(n: usize) -> Vec<SocketAddr> {
    fjord_meta::ports::free_ports("127.0.0.1", n)
        .unwrap()
        .into_iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect()
}
