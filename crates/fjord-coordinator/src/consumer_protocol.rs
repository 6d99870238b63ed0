//! Just enough of the consumer protocol's embedded formats (ConsumerProtocolSubscription and
//! ConsumerProtocolAssignment, versions 0-3) to answer questions about a group: which topics its members
//! subscribe to. Clients own these bytes; the coordinator otherwise passes them through untouched.

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
}
