//! Just enough of the consumer protocol's embedded formats (ConsumerProtocolSubscription and
//! ConsumerProtocolAssignment, versions 0-3) to answer questions about a group: which topics its members
//! subscribe to, and which partitions each was given. Clients own these bytes; the coordinator otherwise passes them through untouched.

use bytes::Buf;

fn get_str(b: &mut &[u8]) -> Option<String> {
    if b.remaining() < 2 {
        return None;
    }
    let n = b.get_i16();
    if n < 0 || b.remaining() < n as usize {
        return None;
    }
    let s = String::from_utf8(b[..n as usize].to_vec()).ok();
    b.advance(n as usize);
    s
}

/// Topic names in a subscription; empty when the bytes are not a consumer-protocol subscription.
pub fn subscription_topics(metadata: &[u8]) -> Vec<String> {
    let mut b = metadata;
    if b.remaining() < 6 {
        return Vec::new();
    }
    let _version = b.get_i16();
    let n = b.get_i32();
    if n < 0 || n as usize > b.remaining() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        match get_str(&mut b) {
            Some(t) => out.push(t),
            None => return Vec::new(),
        }
    }
    out
}

/// The (topic, partitions) of a ConsumerProtocolAssignment (any version: the topic array comes first), sorted;
/// bytes that are not one end the list where they stop making sense (a count is never trusted beyond the bytes
/// that could hold it).
pub fn assignment_partitions(assignment: &[u8]) -> Vec<(String, Vec<i32>)> {
    let mut b = assignment;
    let mut out = Vec::new();
    if b.remaining() < 6 {
        return out;
    }
    let _version = b.get_i16();
    let n = b.get_i32();
    if n < 0 {
        return out;
    }
    for _ in 0..n {
        let Some(topic) = get_str(&mut b) else { break };
        if b.remaining() < 4 {
            break;
        }
        let np = b.get_i32();
        if np < 0 || np as usize > b.remaining() / 4 {
            break;
        }
        let parts = (0..np).map(|_| b.get_i32()).collect();
        out.push((topic, parts));
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_topics_of_a_v0_subscription() {
        let mut b = vec![0, 0, 0, 0, 0, 2];
        for t in ["orders", "pay"] {
            b.extend_from_slice(&(t.len() as i16).to_be_bytes());
            b.extend_from_slice(t.as_bytes());
        }
        b.extend_from_slice(&(-1i32).to_be_bytes()); // null user data
        assert_eq!(
            subscription_topics(&b),
            vec!["orders".to_string(), "pay".to_string()]
        );
        assert!(subscription_topics(&[0, 0, 0x7f, 0xff, 0xff, 0xff]).is_empty());
        assert!(subscription_topics(b"").is_empty());
    }

    #[test]
    fn reads_partitions_of_an_assignment_and_stops_at_garbage() {
        let mut b = vec![0, 1, 0, 0, 0, 2];
        for (t, ps) in [("pay", vec![3i32]), ("orders", vec![0, 2])] {
            b.extend_from_slice(&(t.len() as i16).to_be_bytes());
            b.extend_from_slice(t.as_bytes());
            b.extend_from_slice(&(ps.len() as i32).to_be_bytes());
            for p in ps {
                b.extend_from_slice(&p.to_be_bytes());
            }
        }
        b.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            assignment_partitions(&b),
            vec![
                ("orders".to_string(), vec![0, 2]),
                ("pay".to_string(), vec![3])
            ]
        );
        // A partition count larger than the bytes left: nothing is allocated for it.
        let bad = [0, 0, 0, 0, 0, 1, 0, 1, b'a', 0x7f, 0xff, 0xff, 0xff];
        assert!(assignment_partitions(&bad).is_empty());
        assert!(assignment_partitions(b"").is_empty());
    }
}
