//! The process's logging: `tracing` events to stderr, filtered by `FJORD_LOG` (EnvFilter syntax) or the command's
//! default, with two additions for servers: the levels can change while the process runs (Connect's
//! `/admin/loggers`), and the last [`KEEP_LINES`] lines are kept in memory, formatted as on stderr, for
//! `/admin/logs` and `fjord connect logs`.
//!
//! The filter is rebuilt from three parts whenever a level changes: the root level (what a bare level such as
//! `info` in `FJORD_LOG` says; OFF when it names none, as EnvFilter has it), one level per target (`openraft=warn`,
//! or one set over REST), and the directives this module does not manage (span and field filters), kept as given.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

/// How many log lines are kept in memory.
pub const KEEP_LINES: usize = 5_000;
/// A longer line is cut there (a huge error message must not hold megabytes).
const MAX_LINE_BYTES: usize = 4_096;

/// The log levels in force and what they were set from.
#[derive(Debug, Clone, PartialEq)]
struct Levels {
    /// Upper case: TRACE, DEBUG, INFO, WARN, ERROR or OFF.
    root: &'static str,
    root_modified: Option<i64>,
    /// target => (level, when it was set over REST).
    targets: BTreeMap<String, (&'static str, Option<i64>)>,
    /// Directives with span or field filters: passed through unchanged.
    other: Vec<String>,
}

fn canonical_level(s: &str) -> Option<&'static str> {
    Some(match s.trim().to_ascii_lowercase().as_str() {
        "trace" => "TRACE",
        "debug" => "DEBUG",
        "info" => "INFO",
        "warn" => "WARN",
        "error" => "ERROR",
        "off" => "OFF",
        _ => return None,
    })
}

impl Levels {
    fn parse(filter: &str) -> Levels {
        let mut levels = Levels {
            root: "OFF",
            root_modified: None,
            targets: BTreeMap::new(),
            other: Vec::new(),
        };
        for d in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            if let Some(l) = canonical_level(d) {
                levels.root = l;
            } else if d.contains(['[', '{']) {
                levels.other.push(d.to_string());
            } else {
                match d.rsplit_once('=') {
                    Some((t, l)) => match canonical_level(l) {
                        Some(l) => {
                            levels.targets.insert(t.to_string(), (l, None));
                        }
                        None => levels.other.push(d.to_string()),
                    },
                    // A bare target: everything it logs (EnvFilter's meaning).
                    None => {
                        levels.targets.insert(d.to_string(), ("TRACE", None));
                    }
                }
            }
        }
        levels
    }

    fn render(&self) -> String {
        let mut out = self.root.to_ascii_lowercase();
        for (t, (l, _)) in &self.targets {
            out.push_str(&format!(",{t}={}", l.to_ascii_lowercase()));
        }
        for d in &self.other {
            out.push(',');
            out.push_str(d);
        }
        out
    }

    /// The level of `name`: its own, else the longest target it starts with (EnvFilter's matching), else root.
    fn level_of(&self, name: &str) -> (&'static str, Option<i64>) {
        if name == "root" {
            return (self.root, self.root_modified);
        }
        self.targets
            .iter()
            .filter(|(t, _)| name.starts_with(t.as_str()))
            .max_by_key(|(t, _)| t.len())
            .map(|(_, v)| *v)
            .unwrap_or((self.root, self.root_modified))
    }

    /// Sets `name`'s level; its descendants' own levels go (they follow it now). The loggers that changed.
    fn set(&mut self, name: &str, level: &'static str, now: i64) -> Vec<String> {
        let mut changed = vec![name.to_string()];
        if name == "root" {
            changed.extend(std::mem::take(&mut self.targets).into_keys());
            self.root = level;
            self.root_modified = Some(now);
        } else {
            let descendants: Vec<String> = self
                .targets
                .keys()
                .filter(|t| t.len() > name.len() && t.starts_with(name))
                .cloned()
                .collect();
            for t in descendants {
                self.targets.remove(&t);
                changed.push(t);
            }
            self.targets.insert(name.to_string(), (level, Some(now)));
        }
        changed
    }
}

/// The last lines logged, with increasing sequence numbers.
struct Ring {
    lines: Mutex<(VecDeque<(u64, String)>, u64)>,
}

impl Ring {
    fn push(&self, mut line: String) {
        if line.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str(" [...]");
        }
        let mut guard = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let (lines, next) = &mut *guard;
        if lines.len() == KEEP_LINES {
            lines.pop_front();
        }
        lines.push_back((*next, line));
        *next += 1;
    }
}

/// One event's formatted line, added to the ring when the formatter is done with it.
struct LineBuf<'a> {
    ring: &'a Ring,
    buf: Vec<u8>,
}

impl Write for LineBuf<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        // Bounded: the rest of an oversized line is dropped (the line is cut at MAX_LINE_BYTES anyway).
        let room = (MAX_LINE_BYTES + 1).saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&data[..data.len().min(room)]);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineBuf<'_> {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end_matches(['\n', '\r']);
        if !text.is_empty() {
            self.ring.push(text.to_string());
        }
    }
}

struct RingWriter(Arc<Ring>);

impl<'a> MakeWriter<'a> for RingWriter {
    type Writer = LineBuf<'a>;
    fn make_writer(&'a self) -> LineBuf<'a> {
        LineBuf {
            ring: &self.0,
            buf: Vec::new(),
        }
    }
}

/// The installed logging: change levels, read recent lines.
pub struct Logging {
    filter: reload::Handle<EnvFilter, Registry>,
    levels: Mutex<Levels>,
    ring: Arc<Ring>,
}

/// Sets up logging for the process: `FJORD_LOG` when it is a valid filter, else `default_filter`.
pub fn init(default_filter: &str, ansi: bool) -> Arc<Logging> {
    let spec = std::env::var("FJORD_LOG")
        .ok()
        .filter(|s| EnvFilter::try_new(s).is_ok())
        .unwrap_or_else(|| default_filter.to_string());
    let levels = Levels::parse(&spec);
    let filter = EnvFilter::try_new(levels.render()).unwrap_or_else(|_| EnvFilter::new(&spec));
    let (filter, handle) = reload::Layer::new(filter);
    let ring = Arc::new(Ring {
        lines: Mutex::new((VecDeque::new(), 1)),
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_ansi(ansi).with_writer(std::io::stderr))
        .with(
            fmt::layer()
                .with_ansi(false)
                .with_writer(RingWriter(ring.clone())),
        )
        .init();
    Arc::new(Logging {
        filter: handle,
        levels: Mutex::new(levels),
        ring,
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Whether `line` was logged with `connector=NAME` (in the event or one of its spans).
fn mentions_connector(line: &str, name: &str) -> bool {
    let needle = format!("connector={name}");
    line.match_indices(&needle).any(|(i, _)| {
        matches!(
            line.as_bytes().get(i + needle.len()),
            None | Some(b' ' | b'}' | b',' | b':')
        )
    })
}

impl Logging {
    fn levels(&self) -> std::sync::MutexGuard<'_, Levels> {
        self.levels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets a level: the filter is reloaded first, and the levels shown change only if that worked.
    fn set_level(&self, name: &str, level: &'static str) -> Result<Vec<String>, String> {
        let mut levels = self.levels();
        let mut next = levels.clone();
        let changed = next.set(name, level, now_ms());
        let filter = EnvFilter::try_new(next.render()).map_err(|e| e.to_string())?;
        self.filter.reload(filter).map_err(|e| e.to_string())?;
        *levels = next;
        Ok(changed)
    }

    /// Up to `max` lines (of one connector when given): those after `after`, oldest first, or with no `after` the
    /// last `max`. Sequence numbers are consecutive, so the lines after `after` are found by position, and the
    /// last ones by walking back: the lock every log line takes is held for `max` matches, not for a copy of all.
    fn lines(&self, after: Option<u64>, connector: Option<&str>, max: usize) -> Vec<(u64, String)> {
        let guard = self.ring.lines.lock().unwrap_or_else(|e| e.into_inner());
        let lines = &guard.0;
        let wanted =
            |(_, line): &&(u64, String)| connector.is_none_or(|c| mentions_connector(line, c));
        match after {
            Some(after) => {
                let first = lines.front().map_or(0, |l| l.0);
                let skip = usize::try_from(after.saturating_add(1).saturating_sub(first))
                    .unwrap_or(usize::MAX);
                lines
                    .iter()
                    .skip(skip)
                    .filter(wanted)
                    .take(max)
                    .cloned()
                    .collect()
            }
            None => {
                let mut last: Vec<_> = lines
                    .iter()
                    .rev()
                    .filter(wanted)
                    .take(max)
                    .cloned()
                    .collect();
                last.reverse();
                last
            }
        }
    }
}

#[cfg(feature = "connect")]
impl fjord_connect::admin_logging::LogAdmin for Logging {
    fn loggers(&self) -> Vec<(String, fjord_connect::admin_logging::LoggerLevel)> {
        let levels = self.levels();
        let level = |&(level, last_modified): &(&'static str, Option<i64>)| {
            fjord_connect::admin_logging::LoggerLevel {
                level,
                last_modified,
            }
        };
        std::iter::once((
            "root".to_string(),
            level(&(levels.root, levels.root_modified)),
        ))
        .chain(levels.targets.iter().map(|(t, l)| (t.clone(), level(l))))
        .collect()
    }

    fn level_of(&self, name: &str) -> fjord_connect::admin_logging::LoggerLevel {
        let (level, last_modified) = self.levels().level_of(name);
        fjord_connect::admin_logging::LoggerLevel {
            level,
            last_modified,
        }
    }

    fn set_level(&self, name: &str, level: &'static str) -> Result<Vec<String>, String> {
        Logging::set_level(self, name, level)
    }

    fn lines(
        &self,
        after: Option<u64>,
        connector: Option<&str>,
        max: usize,
    ) -> Vec<fjord_connect::admin_logging::LogLine> {
        Logging::lines(self, after, connector, max)
            .into_iter()
            .map(|(seq, text)| fjord_connect::admin_logging::LogLine { seq, text })
            .collect()
    }

    fn next_seq(&self) -> u64 {
        self.ring.lines.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_render_back() {
        let l = Levels::parse("info,openraft=warn,fjord_connect::pg_sink,h2[conn]=debug,bad=loud");
        assert_eq!(l.root, "INFO");
        assert_eq!(l.targets["openraft"].0, "WARN");
        assert_eq!(l.targets["fjord_connect::pg_sink"].0, "TRACE");
        assert_eq!(l.other, vec!["h2[conn]=debug", "bad=loud"]);
        assert_eq!(
            l.render(),
            "info,fjord_connect::pg_sink=trace,openraft=warn,h2[conn]=debug,bad=loud"
        );
        // No bare level: root is OFF, as EnvFilter has it.
        assert_eq!(Levels::parse("fjord=debug").root, "OFF");
    }

    #[test]
    fn a_level_applies_to_descendants_and_replaces_theirs() {
        let mut l = Levels::parse(
            "warn,fjord_connect::pg_sink=trace,fjord_connect::api=error,openraft=warn",
        );
        assert_eq!(l.level_of("fjord_connect::pg_sink::copy").0, "TRACE");
        assert_eq!(l.level_of("fjord_broker").0, "WARN");
        let changed = l.set("fjord_connect", "DEBUG", 7);
        assert_eq!(
            changed,
            vec![
                "fjord_connect",
                "fjord_connect::api",
                "fjord_connect::pg_sink"
            ]
        );
        assert_eq!(l.level_of("fjord_connect::pg_sink").0, "DEBUG");
        assert_eq!(l.level_of("fjord_connect::pg_sink").1, Some(7));
        assert_eq!(l.level_of("openraft::core").0, "WARN");
        let changed = l.set("root", "ERROR", 8);
        assert_eq!(changed, vec!["root", "fjord_connect", "openraft"]);
        assert_eq!(l.render(), "error");
        assert_eq!(l.level_of("anything"), ("ERROR", Some(8)));
    }

    #[test]
    fn connector_lines_match_the_whole_name() {
        let line = "2026-11-30T18:00:00Z  INFO task{connector=orders task=0}: fjord_connect::file_sink: started";
        assert!(mentions_connector(line, "orders"));
        assert!(!mentions_connector(line, "order"));
        assert!(mentions_connector("x connector=a-b", "a-b"));
        assert!(!mentions_connector("x connector=a-bc", "a-b"));
    }

    #[test]
    fn the_ring_keeps_the_last_lines_bounded() {
        let ring = Ring {
            lines: Mutex::new((VecDeque::new(), 1)),
        };
        for i in 0..KEEP_LINES + 10 {
            ring.push(format!("line {i}"));
        }
        ring.push("é".repeat(MAX_LINE_BYTES));
        let guard = ring.lines.lock().unwrap();
        assert_eq!(guard.0.len(), KEEP_LINES);
        assert_eq!(guard.0.front().unwrap(), &(12, "line 11".to_string()));
        let last = &guard.0.back().unwrap().1;
        assert!(
            last.len() <= MAX_LINE_BYTES + 6 && last.ends_with(" [...]"),
            "{}",
            last.len()
        );
        assert_eq!(guard.1, (KEEP_LINES + 12) as u64);
    }

    #[test]
    fn lines_after_a_sequence_number_and_the_last_ones_per_connector() {
        let logging = Logging {
            filter: reload::Layer::<EnvFilter, Registry>::new(EnvFilter::new("info")).1,
            levels: Mutex::new(Levels::parse("info")),
            ring: Arc::new(Ring {
                lines: Mutex::new((VecDeque::new(), 1)),
            }),
        };
        for i in 0..KEEP_LINES + 20 {
            let c = if i % 2 == 0 { "a" } else { "b" };
            logging.ring.push(format!("line {i} connector={c}"));
        }
        // The ring starts at seq 21 now; after 30: seq 31, 32, ...
        let after = logging.lines(Some(30), None, 3);
        assert_eq!(after.iter().map(|l| l.0).collect::<Vec<_>>(), [31, 32, 33]);
        // Before the ring's start: from its first line; past the end or u64::MAX: nothing, no overflow.
        assert_eq!(logging.lines(Some(0), None, 1)[0].0, 21);
        assert!(logging.lines(Some(u64::MAX), None, 5).is_empty());
        // The last lines of one connector, oldest first.
        let last = logging.lines(None, Some("b"), 2);
        let end = (KEEP_LINES + 20) as u64;
        assert_eq!(last.iter().map(|l| l.0).collect::<Vec<_>>(), [end - 2, end]);
        assert!(last.iter().all(|l| l.1.ends_with("connector=b")));
    }
}
