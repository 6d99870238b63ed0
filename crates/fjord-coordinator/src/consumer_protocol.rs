//! Just enough of the consumer protocol's embedded formats (ConsumerProtocolSubscription and
//! ConsumerProtocolAssignment) to answer questions about a group: which topics its members subscribe to, and
//! which partitions each was given. Clients own these bytes; the coordinator otherwise passes them through
//! untouched. The one decoder of them: the coordinator, the dashboard and `fjord groups describe` use it.

/// A cursor over the big-endian, non-flexible encoding of the consumer protocol's embedded structs.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Option<String> {
        let n = usize::try_from(self.i16()?).ok()?;
        Some(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
    /// An array length (None when null), capped at what the remaining bytes could hold so that a hostile
    /// length costs nothing.
    fn len(&mut self, min_item: usize) -> Option<usize> {
        let n = usize::try_from(self.i32()?).ok()?;
        Some(n.min(self.buf.len() / min_item))
    }
}

/// The (topic, partitions) of a ConsumerProtocolAssignment, sorted. v0-v3 (the layout never changed): version,
/// [topic, [partition]], user_data; newer versions keep this prefix, so they decode too. A truncated tail keeps
/// what was read, and a count is never trusted beyond the bytes that could hold it.
pub fn assignment_partitions(bytes: &[u8]) -> Vec<(String, Vec<i32>)> {
    let mut r = Reader { buf: bytes };
    let mut out = Vec::new();
    if r.i16().is_none() {
        return out;
    }
    let Some(n) = r.len(6) else { return out };
    for _ in 0..n {
        let Some(topic) = r.string() else { break };
        let Some(np) = r.len(4) else { break };
        out.push((topic, (0..np).map_while(|_| r.i32()).collect()));
    }
    out.sort();
    out
}

/// The topics of a ConsumerProtocolSubscription (any version: the topic array comes first); a truncated tail
/// keeps what was read, and bytes that are not one give none.
pub fn subscription_topics(bytes: &[u8]) -> Vec<String> {
    let mut r = Reader { buf: bytes };
    if r.i16().is_none() {
        return Vec::new();
    }
    let Some(n) = r.len(2) else {
        return Vec::new();
    };
    (0..n).map_while(|_| r.string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(version: i16, topics: &[(&str, &[i32])], user_data: Option<&[u8]>) -> Vec<u8> {
        let mut b = version.to_be_bytes().to_vec();
        b.extend((topics.len() as i32).to_be_bytes());
        for (t, ps) in topics {
            b.extend((t.len() as i16).to_be_bytes());
            b.extend(t.as_bytes());
            b.extend((ps.len() as i32).to_be_bytes());
            for p in *ps {
                b.extend(p.to_be_bytes());
            }
        }
        match user_data {
            None => b.extend((-1i32).to_be_bytes()),
            Some(u) => {
                b.extend((u.len() as i32).to_be_bytes());
                b.extend(u);
            }
        }
        b
    }

    #[test]
    fn assignments_of_every_version_decode() {
        for v in 0..=3 {
            let b = assignment(v, &[("orders", &[0, 2]), ("audit", &[1])], Some(b"xyz"));
            assert_eq!(
                assignment_partitions(&b),
                vec![("audit".into(), vec![1]), ("orders".into(), vec![0, 2])]
            );
        }
        let b = assignment(1, &[("t", &[])], None);
        assert_eq!(assignment_partitions(&b), vec![("t".into(), vec![])]);
        assert!(assignment_partitions(&[]).is_empty());
    }

    #[test]
    fn truncated_or_hostile_assignments_keep_what_was_read() {
        let b = assignment(0, &[("a", &[3]), ("b", &[4, 5])], None);
        // Cut inside the second topic's partitions.
        let cut = &b[..b.len() - 4 - 4];
        assert_eq!(
            assignment_partitions(cut),
            vec![("a".into(), vec![3]), ("b".into(), vec![4])]
        );
        // An absurd array length allocates nothing and yields nothing.
        let mut evil = 0i16.to_be_bytes().to_vec();
        evil.extend(i32::MAX.to_be_bytes());
        assert!(assignment_partitions(&evil).is_empty());
    }

    #[test]
    fn subscription_topics_decode() {
        let mut b = 3i16.to_be_bytes().to_vec();
        b.extend(2i32.to_be_bytes());
        for t in ["x", "yy"] {
            b.extend((t.len() as i16).to_be_bytes());
            b.extend(t.as_bytes());
        }
        b.extend((-1i32).to_be_bytes());
        assert_eq!(subscription_topics(&b), vec!["x", "yy"]);
    }

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
        assert_eq!(assignment_partitions(&bad), vec![("a".to_string(), vec![])]);
        assert!(assignment_partitions(b"").is_empty());
    }
}
