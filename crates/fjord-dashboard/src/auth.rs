//! Who may use the dashboard, decided once at start-up from the broker's `dashboard.*` properties and the address
//! the listener binds, then enforced on every request to the pages and `/api/` (never on `/metrics`, `/health`
//! and `/ready`, which the binary serves outside this router for Prometheus and probes):
//!
//! - on a loopback address without users, as before: no login;
//! - users configured (`dashboard.auth.basic.users`, `dashboard.auth.basic.users.file`), or
//!   `dashboard.auth=basic`: HTTP basic auth, on any address;
//! - on any other address without users: the platform refuses to start, naming the options, unless
//!   `dashboard.enable=false` (serve only the metrics endpoints) or `dashboard.auth=none` (no login, logged as a
//!   warning at start-up: for an authenticating proxy in front).
//!
//! A password is given in clear or as `sha256:<64 hex digits>` (its SHA-256), and is checked by comparing
//! SHA-256 digests in constant time, over every configured user (no early exit on the name).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::json;
use sha2::{Digest, Sha256};

pub const ENABLE: &str = "dashboard.enable";
pub const AUTH: &str = "dashboard.auth";
pub const USERS: &str = "dashboard.auth.basic.users";
pub const USERS_FILE: &str = "dashboard.auth.basic.users.file";
/// The realm browsers show in their login dialog.
const REALM: &str = "Fjord dashboard";

/// One configured user: SHA-256 digests of the name and of the password.
#[derive(Clone)]
struct User {
    name: String,
    name_hash: [u8; 32],
    password_hash: [u8; 32],
}

/// Whether and how the dashboard is served on a listener.
#[derive(Clone)]
pub enum Access {
    /// `dashboard.enable=false`: not served.
    Off,
    /// No login: a loopback listener without users, or `dashboard.auth=none`.
    Open,
    /// HTTP basic auth against these users.
    Basic(Arc<Users>),
}

/// The configured users (at least one).
pub struct Users(Vec<User>);

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Off => f.write_str("Off"),
            Access::Open => f.write_str("Open"),
            // Names only: the digests stay out of logs.
            Access::Basic(u) => f
                .debug_tuple("Basic")
                .field(&u.0.iter().map(|u| u.name.as_str()).collect::<Vec<_>>())
                .finish(),
        }
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Equality of two digests in time independent of where they differ.
fn digest_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Equality of two byte strings in time independent of where they differ (their lengths are not secret).
pub(crate) fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && digest_eq(&sha256(a), &sha256(b))
}

fn parse_secret(secret: &str, at: &str) -> Result<[u8; 32], String> {
    if let Some(hex) = secret.strip_prefix("sha256:") {
        let b = hex.as_bytes();
        let ok = b.len() == 64 && b.iter().all(u8::is_ascii_hexdigit);
        if !ok {
            return Err(format!(
                "{at}: `sha256:` must be followed by the 64 hex digits of the password's SHA-256 (e.g. from `printf %s 'PASSWORD' | sha256sum`)"
            ));
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks(2).enumerate() {
            let s = std::str::from_utf8(pair).unwrap_or("00");
            out[i] = u8::from_str_radix(s, 16).unwrap_or(0);
        }
        Ok(out)
    } else {
        Ok(sha256(secret.as_bytes()))
    }
}

/// One `NAME:PASSWORD` (or `NAME:sha256:HEX`) entry.
fn parse_user(entry: &str, at: &str) -> Result<User, String> {
    let Some((name, secret)) = entry.split_once(':') else {
        return Err(format!(
            "{at}: `{}` is not NAME:PASSWORD (or NAME:sha256:HEX)",
            redact(entry)
        ));
    };
    let name = name.trim();
    if name.is_empty() || secret.is_empty() {
        return Err(format!(
            "{at}: a user needs a name and a password (NAME:PASSWORD)"
        ));
    }
    Ok(User {
        name: name.to_string(),
        name_hash: sha256(name.as_bytes()),
        password_hash: parse_secret(secret, at)?,
    })
}

/// An entry shown in an error without what could be its password.
fn redact(entry: &str) -> String {
    let n: String = entry.chars().take(3).collect();
    format!("{n}…")
}

/// The users of `dashboard.auth.basic.users` (comma-separated) and of the file that
/// `dashboard.auth.basic.users.file` names (one per line; blank lines and `#` comments skipped).
fn users(props: &BTreeMap<String, String>) -> Result<Vec<User>, String> {
    let mut out: Vec<User> = Vec::new();
    if let Some(list) = props.get(USERS) {
        for e in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            out.push(parse_user(e, USERS)?);
        }
    }
    if let Some(path) = props.get(USERS_FILE).filter(|p| !p.is_empty()) {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{USERS_FILE}: cannot read `{path}`: {e}"))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            out.push(parse_user(line, &format!("{path} line {}", i + 1))?);
        }
    }
    for (i, u) in out.iter().enumerate() {
        if out[..i].iter().any(|o| o.name == u.name) {
            return Err(format!("dashboard user `{}` is configured twice", u.name));
        }
    }
    Ok(out)
}

/// How the dashboard is served on a listener bound to `ip`, from the broker's properties; `Err` says why the
/// platform must not start and which option to set.
pub fn access(props: &BTreeMap<String, String>, ip: IpAddr) -> Result<Access, String> {
    let users = users(props)?;
    let mode = props.get(AUTH).map(|s| s.trim().to_ascii_lowercase());
    match mode.as_deref() {
        None | Some("" | "basic" | "none") => {}
        Some(other) => {
            return Err(format!(
                "{AUTH}=`{other}` is not a login mode: use basic (HTTP basic auth with {USERS}) or none"
            ))
        }
    }
    if props.get(ENABLE).map(String::as_str) == Some("false") {
        return Ok(Access::Off);
    }
    let listener = props
        .get("metrics.listener")
        .cloned()
        .unwrap_or_else(|| ip.to_string());
    match (mode.as_deref(), users.is_empty()) {
        (Some("none"), false) => Err(format!(
            "{AUTH}=none contradicts the users in {USERS} / {USERS_FILE}: remove one or the other"
        )),
        (Some("none"), true) => Ok(Access::Open),
        (Some("basic"), true) => Err(format!(
            "{AUTH}=basic needs at least one user: set {USERS}=NAME:PASSWORD (or NAME:sha256:HEX), or {USERS_FILE}=PATH"
        )),
        (_, false) => Ok(Access::Basic(Arc::new(Users(users)))),
        (_, true) if ip.is_loopback() => Ok(Access::Open),
        (_, true) => Err(format!(
            "the dashboard on metrics.listener {listener} (not a loopback address) needs a login: set {USERS}=NAME:PASSWORD (or NAME:sha256:HEX, or {USERS_FILE}=PATH); or {ENABLE}=false to serve only /metrics, /health and /ready there; or {AUTH}=none to serve it without a login (only behind a proxy that authenticates)"
        )),
    }
}

impl Users {
    /// The user these `Authorization` credentials name, if the password is right.
    fn check(&self, headers: &HeaderMap) -> Option<&str> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, creds) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(creds.trim())
            .ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (name, password) = raw.split_once(':')?;
        let (n, p) = (sha256(name.as_bytes()), sha256(password.as_bytes()));
        // Every user is compared, the name and the password alike, whichever matches.
        let mut found = None;
        for u in &self.0 {
            let hit = digest_eq(&n, &u.name_hash) & digest_eq(&p, &u.password_hash);
            if hit {
                found = Some(u.name.as_str());
            }
        }
        found
    }
}

/// The login check in front of the pages and `/api/`: 401 with a `WWW-Authenticate` challenge (so a browser
/// asks) and a JSON message, unless the credentials are right.
pub async fn require_login(State(users): State<Arc<Users>>, req: Request, next: Next) -> Response {
    if users.check(req.headers()).is_some() {
        return next.run(req).await;
    }
    let sent = req.headers().contains_key(header::AUTHORIZATION);
    let message = if sent {
        tracing::info!(path = %req.uri().path(), "dashboard login refused: wrong user name or password");
        "wrong user name or password for the Fjord dashboard"
    } else {
        "the Fjord dashboard needs a login (HTTP basic auth with a user of dashboard.auth.basic.users)"
    };
    let mut r = (
        StatusCode::UNAUTHORIZED,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        json!({ "error": message }).to_string(),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{REALM}\", charset=\"UTF-8\"")) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {v}")).unwrap(),
        );
        h
    }

    #[test]
    fn loopback_without_users_is_open_any_other_address_refuses_to_start() {
        for a in ["127.0.0.1", "127.0.0.2", "::1"] {
            assert!(
                matches!(access(&props(&[]), ip(a)), Ok(Access::Open)),
                "{a}"
            );
        }
        for a in ["0.0.0.0", "10.1.2.3", "::", "192.0.2.1"] {
            let e = access(&props(&[("metrics.listener", "x")]), ip(a)).unwrap_err();
            assert!(
                e.contains("dashboard.auth.basic.users=NAME:PASSWORD"),
                "{e}"
            );
            assert!(e.contains("dashboard.enable=false"), "{e}");
            assert!(e.contains("dashboard.auth=none"), "{e}");
            // The opt-outs.
            let off = access(&props(&[("dashboard.enable", "false")]), ip(a));
            assert!(matches!(off, Ok(Access::Off)), "{a}");
            let none = access(&props(&[("dashboard.auth", "none")]), ip(a));
            assert!(matches!(none, Ok(Access::Open)), "{a}");
            // `dashboard.enable=true` no longer means "without a login".
            assert!(access(&props(&[("dashboard.enable", "true")]), ip(a)).is_err());
        }
    }

    #[test]
    fn users_turn_the_login_on_on_any_address() {
        for a in ["127.0.0.1", "0.0.0.0"] {
            let p = props(&[("dashboard.auth.basic.users", "alice:secret")]);
            assert!(matches!(access(&p, ip(a)), Ok(Access::Basic(_))), "{a}");
        }
        let e = access(&props(&[("dashboard.auth", "basic")]), ip("127.0.0.1")).unwrap_err();
        assert!(e.contains("needs at least one user"), "{e}");
        let p = props(&[
            ("dashboard.auth", "none"),
            ("dashboard.auth.basic.users", "alice:secret"),
        ]);
        assert!(access(&p, ip("127.0.0.1"))
            .unwrap_err()
            .contains("contradicts"));
        let e = access(&props(&[("dashboard.auth", "digest")]), ip("127.0.0.1")).unwrap_err();
        assert!(e.contains("not a login mode"), "{e}");
    }

    #[test]
    fn passwords_in_clear_or_as_sha256_and_bad_entries_named() {
        // sha256("s3cret:with,colon") is not needed: commas split the list, so such a password goes in the file.
        let hex = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"; // sha256("secret")
        let p = props(&[(
            "dashboard.auth.basic.users",
            &format!("alice:pa:ss, bob:sha256:{hex}"),
        )]);
        let Ok(Access::Basic(u)) = access(&p, ip("0.0.0.0")) else {
            panic!()
        };
        assert_eq!(u.check(&basic("alice", "pa:ss")), Some("alice"));
        assert_eq!(u.check(&basic("bob", "secret")), Some("bob"));
        assert_eq!(u.check(&basic("bob", "Secret")), None);
        assert_eq!(u.check(&basic("alice", "secret")), None);
        assert_eq!(u.check(&basic("carol", "secret")), None);
        assert_eq!(u.check(&HeaderMap::new()), None);
        let mut bearer = HeaderMap::new();
        bearer.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(u.check(&bearer), None);

        for (bad, says) in [
            ("alice", "is not NAME:PASSWORD"),
            ("alice:", "needs a name and a password"),
            (":pw", "needs a name and a password"),
            ("alice:sha256:12", "64 hex digits"),
            ("alice:a,alice:b", "configured twice"),
        ] {
            let e = access(
                &props(&[("dashboard.auth.basic.users", bad)]),
                ip("127.0.0.1"),
            )
            .unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains("sha256:12"), "an error shows no secret: {e}");
        }
    }

    #[test]
    fn users_from_a_file() {
        let dir = std::env::temp_dir().join(format!("fjord-dash-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("users");
        std::fs::write(&f, "# users\n\nalice: with spaces, and commas \nbob:x\n").unwrap();
        let p = props(&[("dashboard.auth.basic.users.file", f.to_str().unwrap())]);
        let Ok(Access::Basic(u)) = access(&p, ip("127.0.0.1")) else {
            panic!()
        };
        // The line is trimmed; the password is everything after the first colon.
        assert_eq!(
            u.check(&basic("alice", " with spaces, and commas")),
            Some("alice")
        );
        assert_eq!(u.check(&basic("alice", "with spaces, and commas")), None);
        assert_eq!(u.check(&basic("bob", "x")), Some("bob"));
        std::fs::write(&f, "alice\n").unwrap();
        let e = access(&p, ip("127.0.0.1")).unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        let p = props(&[("dashboard.auth.basic.users.file", "/nonexistent/users")]);
        let e = access(&p, ip("127.0.0.1")).unwrap_err();
        assert!(e.contains("cannot read `/nonexistent/users`"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
