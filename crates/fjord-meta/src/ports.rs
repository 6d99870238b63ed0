//! Free TCP ports that must be known before anything listens on them: a controller quorum names every voter's
//! port in `controller.quorum.voters` before any voter starts.
//!
//! A port found by binding port 0 and releasing it comes from the kernel's ephemeral range
//! (`net.ipv4.ip_local_port_range`), the range every outgoing connection also takes its local port from: between
//! the release and the voter's bind, any connection on the machine may take it, and the voter then fails with
//! "address in use". Ports chosen below (or above) that range are never handed out by the kernel on its own, so
//! only another process choosing fixed ports the same way can race for them, and each port is checked free.

use std::net::TcpListener;

/// The kernel's ephemeral port range, or Linux's default where it cannot be read.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// A pseudo-random number differing between processes and calls (no dependency on a RNG crate is needed for
/// picking a starting port).
fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

/// `n` distinct ports on `host`, each free when checked, chosen outside the ephemeral port range (see the module
/// documentation). Falls back to ports the kernel picks when no range outside it is large enough.
pub fn free_ports(host: &str, n: usize) -> std::io::Result<Vec<u16>> {
    let (lo, hi) = ephemeral_range();
    // The candidate ranges: 10000..lo below the ephemeral range, hi+1..=65535 above it.
    let below = (10000u32, u32::from(lo));
    let above = (u32::from(hi) + 1, 65536u32);
    let (start, end) = if below.1.saturating_sub(below.0) >= above.1.saturating_sub(above.0) {
        below
    } else {
        above
    };
    let span = end.saturating_sub(start);
    if span < 64 * n as u32 {
        return kernel_ports(host, n);
    }
    let mut ports = Vec::with_capacity(n);
    // Keep each checked port bound until all are found, so the same port is never picked twice.
    let mut held = Vec::with_capacity(n);
    let mut next = seed() % u64::from(span);
    for _ in 0..span.min(4096) {
        if ports.len() == n {
            break;
        }
        let port = (u64::from(start) + next) as u16;
        next = (next + 1 + seed() % 97) % u64::from(span);
        if let Ok(l) = TcpListener::bind((host, port)) {
            ports.push(port);
            held.push(l);
        }
    }
    if ports.len() < n {
        return kernel_ports(host, n);
    }
    Ok(ports)
}

/// `n` distinct ports the kernel picks (port 0), bound together and released.
fn kernel_ports(host: &str, n: usize) -> std::io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((host, 0)))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_outside_the_ephemeral_range() {
        let (lo, hi) = ephemeral_range();
        let ports = free_ports("127.0.0.1", 8).unwrap();
        assert_eq!(ports.len(), 8);
        let mut sorted = ports.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 8, "ports are distinct: {ports:?}");
        for p in &ports {
            assert!(
                *p < lo || *p > hi,
                "port {p} is inside the ephemeral range {lo}-{hi}"
            );
            TcpListener::bind(("127.0.0.1", *p)).expect("a returned port is free");
        }
    }

    #[test]
    fn a_port_taken_meanwhile_is_skipped() {
        // Two calls in a row while the first call's ports are held: no port is returned twice.
        let first = free_ports("127.0.0.1", 4).unwrap();
        let _held: Vec<_> = first
            .iter()
            .map(|p| TcpListener::bind(("127.0.0.1", *p)).unwrap())
            .collect();
        let second = free_ports("127.0.0.1", 4).unwrap();
        assert!(
            second.iter().all(|p| !first.contains(p)),
            "{first:?} vs {second:?}"
        );
    }
}
