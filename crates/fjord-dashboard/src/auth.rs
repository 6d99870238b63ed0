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
//! A password is stored as `pbkdf2-sha256:ITERATIONS:SALT_HEX:HASH_HEX` (PBKDF2-HMAC-SHA256, at least
//! [`MIN_ITERATIONS`] iterations, a salt of at least 8 bytes, a 32-byte hash), or given in clear (derived the same
//! way at start-up with a random salt). The old unsalted `sha256:HEX` still logs in, with a warning at start-up
//! saying how to replace it. A login is checked against one user's derived hash (a user that does not exist costs
//! the same derivation), compared in constant time.
//!
//! A successful login opens a **session**: an `HttpOnly`, `SameSite=Strict` cookie (`fjord_session`) that later
//! requests carry instead of the password (so the slow derivation runs once per login, not per request). It ends
//! after `dashboard.auth.session.timeout.ms` (8 hours by default) or at `POST /api/logout`, which forgets it on
//! the server (the cookie no longer logs in, even if kept). **Rate limit**: after
//! `dashboard.auth.max.failures` (5) wrong logins from one address within `dashboard.auth.lockout.ms` (5
//! minutes), its logins are refused with 429 and `Retry-After` until the lockout has passed (a correct password
//! too), without running the derivation.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};

use crate::api::cookie;
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
pub const SESSION_TIMEOUT: &str = "dashboard.auth.session.timeout.ms";
pub const MAX_FAILURES: &str = "dashboard.auth.max.failures";
pub const LOCKOUT: &str = "dashboard.auth.lockout.ms";
/// The realm browsers show in their login dialog.
const REALM: &str = "Fjord dashboard";
/// The session cookie.
pub const SESSION_COOKIE: &str = "fjord_session";
/// Fewest PBKDF2 iterations accepted in a stored password, and the most (a login must stay affordable).
pub const MIN_ITERATIONS: u32 = 100_000;
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Iterations of a password given in clear (derived at start-up).
const CLEAR_ITERATIONS: u32 = MIN_ITERATIONS;
/// Sessions kept at once; past this the oldest is forgotten.
const MAX_SESSIONS: usize = 10_000;
/// Client addresses whose failures are remembered at once.
const MAX_ADDRESSES: usize = 10_000;

/// How a password is stored.
#[derive(Clone)]
enum Secret {
    /// PBKDF2-HMAC-SHA256.
    Pbkdf2 {
        iterations: u32,
        salt: Vec<u8>,
        hash: [u8; 32],
    },
    /// The unsalted SHA-256 of the password (the old `sha256:` form).
    Sha256([u8; 32]),
}

impl Secret {
    fn matches(&self, password: &[u8]) -> bool {
        match self {
            Secret::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => digest_eq(&pbkdf2(password, salt, *iterations), hash),
            Secret::Sha256(d) => digest_eq(&sha256(password), d),
        }
    }
}

fn pbkdf2(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations)
}

/// One configured user.
#[derive(Clone)]
struct User {
    name: String,
    secret: Secret,
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

/// The configured users (at least one), their sessions and the failed logins by address.
pub struct Users {
    users: Vec<User>,
    /// What a login for a user that does not exist is checked against (the same cost).
    nobody: Secret,
    session_timeout: Duration,
    max_failures: u32,
    lockout: Duration,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    /// Password derivations running at once (each takes a blocking thread and a core for a while).
    derivations: Arc<tokio::sync::Semaphore>,
}

/// Password derivations running at once; more logins wait for a turn.
const MAX_DERIVATIONS: usize = 2;

/// The address failures are counted for: an IPv4 address, or an IPv6 address's /64 (one host usually holds a
/// whole /64, so counting single IPv6 addresses would not limit it).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

struct Session {
    user: String,
    expires: Instant,
}

/// Failed logins from one address: how many, the last one at `last` (older ones are forgotten with it).
struct Failures {
    count: u32,
    last: Instant,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Off => f.write_str("Off"),
            Access::Open => f.write_str("Open"),
            // Names only: the digests stay out of logs.
            Access::Basic(u) => f
                .debug_tuple("Basic")
                .field(&u.users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>())
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

/// The bytes of `hex`, or `None`.
fn from_hex(hex: &str) -> Option<Vec<u8>> {
    let b = hex.as_bytes();
    if !b.len().is_multiple_of(2) || !b.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    b.chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

/// How to make a stored password, for the error messages.
const HOW_TO_HASH: &str = "python3 -c 'import hashlib,os,sys; s=os.urandom(16); print(\"pbkdf2-sha256:600000:\"+s.hex()+\":\"+hashlib.pbkdf2_hmac(\"sha256\",sys.argv[1].encode(),s,600000).hex())' PASSWORD";

fn parse_secret(secret: &str, at: &str) -> Result<Secret, String> {
    if let Some(hex) = secret.strip_prefix("sha256:") {
        let d = from_hex(hex).filter(|d| d.len() == 32).ok_or_else(|| {
            format!(
                "{at}: `sha256:` must be followed by the 64 hex digits of the password's SHA-256; better, store it as pbkdf2-sha256 (salted and slow): {HOW_TO_HASH}"
            )
        })?;
        let mut out = [0u8; 32];
        out.copy_from_slice(&d);
        return Ok(Secret::Sha256(out));
    }
    if let Some(rest) = secret.strip_prefix("pbkdf2-sha256:") {
        let bad = |why: &str| {
            format!("{at}: {why}; a stored password is pbkdf2-sha256:ITERATIONS:SALT_HEX:HASH_HEX, e.g. from {HOW_TO_HASH}")
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let [iterations, salt, hash] = parts.as_slice() else {
            return Err(bad("pbkdf2-sha256 needs three fields after it"));
        };
        let iterations: u32 = iterations
            .parse()
            .ok()
            .filter(|i| (MIN_ITERATIONS..=MAX_ITERATIONS).contains(i))
            .ok_or_else(|| {
                bad(&format!(
                    "the iterations must be a number from {MIN_ITERATIONS} to {MAX_ITERATIONS}"
                ))
            })?;
        let salt = from_hex(salt)
            .filter(|s| s.len() >= 8)
            .ok_or_else(|| bad("the salt must be at least 8 bytes in hex"))?;
        let hash = from_hex(hash)
            .filter(|h| h.len() == 32)
            .ok_or_else(|| bad("the hash must be 32 bytes (64 hex digits)"))?;
        let mut out = [0u8; 32];
        out.copy_from_slice(&hash);
        return Ok(Secret::Pbkdf2 {
            iterations,
            salt,
            hash: out,
        });
    }
    Ok(clear(secret.as_bytes()))
}

/// A password given in clear, derived with a random salt.
fn clear(password: &[u8]) -> Secret {
    let salt = uuid::Uuid::new_v4().as_bytes().to_vec();
    Secret::Pbkdf2 {
        iterations: CLEAR_ITERATIONS,
        hash: pbkdf2(password, &salt, CLEAR_ITERATIONS),
        salt,
    }
}

/// One `NAME:PASSWORD` (or `NAME:pbkdf2-sha256:...`, or `NAME:sha256:HEX`) entry.
fn parse_user(entry: &str, at: &str) -> Result<User, String> {
    let Some((name, secret)) = entry.split_once(':') else {
        return Err(format!(
            "{at}: `{}` is not NAME:PASSWORD (or NAME:pbkdf2-sha256:ITERATIONS:SALT_HEX:HASH_HEX)",
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
        secret: parse_secret(secret, at)?,
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

/// A non-negative number of milliseconds (or a count) from the properties, `default` when absent.
fn number(
    props: &BTreeMap<String, String>,
    key: &str,
    default: u64,
    min: u64,
) -> Result<u64, String> {
    match props.get(key).map(|v| v.trim()) {
        None | Some("") => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| *n >= min)
            .ok_or_else(|| format!("{key}=`{v}` must be a whole number of at least {min}")),
    }
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
    let session_timeout = number(props, SESSION_TIMEOUT, 8 * 3600 * 1000, 1)?;
    let max_failures = number(props, MAX_FAILURES, 5, 1)?.min(u64::from(u32::MAX)) as u32;
    let lockout = number(props, LOCKOUT, 5 * 60 * 1000, 1)?;
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
            "{AUTH}=basic needs at least one user: set {USERS}=NAME:PASSWORD (or NAME:pbkdf2-sha256:ITERATIONS:SALT_HEX:HASH_HEX), or {USERS_FILE}=PATH"
        )),
        (_, false) => {
            for u in &users {
                if matches!(u.secret, Secret::Sha256(_)) {
                    tracing::warn!(
                        user = %u.name,
                        "dashboard user {}'s password is stored as an unsalted SHA-256 (sha256:...), which is quick to guess from a leaked config; store it as pbkdf2-sha256:ITERATIONS:SALT_HEX:HASH_HEX instead, e.g. from: {HOW_TO_HASH}",
                        u.name
                    );
                }
            }
            Ok(Access::Basic(Arc::new(Users {
                users,
                nobody: clear(b"no such user"),
                session_timeout: Duration::from_millis(session_timeout),
                max_failures,
                lockout: Duration::from_millis(lockout),
                sessions: Mutex::default(),
                failures: Mutex::default(),
                derivations: Arc::new(tokio::sync::Semaphore::new(MAX_DERIVATIONS)),
            })))
        }
        (_, true) if ip.is_loopback() => Ok(Access::Open),
        (_, true) => Err(format!(
            "the dashboard on metrics.listener {listener} (not a loopback address) needs a login: set {USERS}=NAME:PASSWORD (or NAME:pbkdf2-sha256:ITERATIONS:SALT_HEX:HASH_HEX, or {USERS_FILE}=PATH); or {ENABLE}=false to serve only /metrics, /health and /ready there; or {AUTH}=none to serve it without a login (only behind a proxy that authenticates)"
        )),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Users {
    /// The user these `Authorization` credentials name, if the password is right. Runs the slow derivation.
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
        // The name is compared with every user's (no early exit); one derivation either way.
        let n = sha256(name.as_bytes());
        let mut found = None;
        for u in &self.users {
            if digest_eq(&n, &sha256(u.name.as_bytes())) {
                found = Some(u);
            }
        }
        let secret = found.map_or(&self.nobody, |u| &u.secret);
        let ok = secret.matches(password.as_bytes());
        found.filter(|_| ok).map(|u| u.name.as_str())
    }

    /// A new session for `user`, its token.
    fn open_session(&self, user: &str, now: Instant) -> String {
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut sessions = lock(&self.sessions);
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, s| s.expires > now);
            if sessions.len() >= MAX_SESSIONS {
                let oldest = sessions
                    .iter()
                    .min_by_key(|(_, s)| s.expires)
                    .map(|(t, _)| t.clone());
                if let Some(t) = oldest {
                    sessions.remove(&t);
                }
            }
        }
        sessions.insert(
            token.clone(),
            Session {
                user: user.to_string(),
                expires: now + self.session_timeout,
            },
        );
        token
    }

    /// The user of a session that has not ended (an ended one is forgotten).
    fn session(&self, token: &str, now: Instant) -> Option<String> {
        let mut sessions = lock(&self.sessions);
        match sessions.get(token) {
            Some(s) if s.expires > now => Some(s.user.clone()),
            Some(_) => {
                sessions.remove(token);
                None
            }
            None => None,
        }
    }

    fn close_session(&self, token: &str) -> bool {
        lock(&self.sessions).remove(token).is_some()
    }

    /// How long `ip` must wait before it may try again, if it is locked out.
    fn locked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let failures = lock(&self.failures);
        let f = failures.get(&ip)?;
        let until = f.last + self.lockout;
        (f.count >= self.max_failures && until > now).then(|| until - now)
    }

    fn failed(&self, ip: IpAddr, now: Instant) {
        let mut failures = lock(&self.failures);
        if failures.len() >= MAX_ADDRESSES && !failures.contains_key(&ip) {
            let lockout = self.lockout;
            failures.retain(|_, f| f.last + lockout > now);
            if failures.len() >= MAX_ADDRESSES {
                tracing::warn!(
                    "dashboard: failed logins from over {MAX_ADDRESSES} addresses; forgetting them"
                );
                failures.clear();
            }
        }
        let f = failures.entry(ip).or_insert(Failures {
            count: 0,
            last: now,
        });
        // Failures older than the lockout are forgotten.
        if f.last + self.lockout <= now {
            f.count = 0;
        }
        f.count += 1;
        f.last = now;
    }

    fn succeeded(&self, ip: IpAddr) {
        lock(&self.failures).remove(&ip);
    }
}

fn json_answer(status: StatusCode, message: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        json!({ "error": message }).to_string(),
    )
        .into_response()
}

/// The session cookie's `Set-Cookie`: the token for `max_age`, or (`None`) its removal.
fn session_cookie(token: Option<(&str, Duration)>) -> Option<HeaderValue> {
    let v = match token {
        Some((t, age)) => format!(
            "{SESSION_COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
            age.as_secs().max(1)
        ),
        None => format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    };
    HeaderValue::from_str(&v).ok()
}

/// `POST /api/logout`: forgets the request's session on the server and clears its cookie. Needs the CSRF token,
/// like every other change.
fn logout(users: &Users, headers: &HeaderMap) -> Response {
    let csrf = crate::api::csrf_cookie(headers);
    let token = headers
        .get(crate::api::CSRF_HEADER)
        .and_then(|t| t.to_str().ok());
    let ok = matches!((csrf, token), (Some(c), Some(t)) if !c.is_empty() && bytes_eq(c.as_bytes(), t.as_bytes()));
    if !ok {
        return json_answer(
            StatusCode::FORBIDDEN,
            "logging out needs the CSRF token: the `fjord_csrf` cookie and an `X-CSRF-Token` header with the same value",
        );
    }
    let ended = cookie(headers, SESSION_COOKIE).is_some_and(|t| users.close_session(t));
    let mut r = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        json!({ "logged_out": ended, "message": if ended {
            "Logged out: the session has ended (a browser may still send the user and password it remembers; close it to forget them)."
        } else {
            "No session to end."
        }})
        .to_string(),
    )
        .into_response();
    if let Some(v) = session_cookie(None) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// The login check in front of the pages and `/api/`: a live session cookie, or right basic-auth credentials
/// (which open a session); else 401 with a `WWW-Authenticate` challenge (so a browser asks) and a JSON message,
/// or 429 with `Retry-After` while the client's address is locked out.
pub async fn require_login(State(users): State<Arc<Users>>, req: Request, next: Next) -> Response {
    let now = Instant::now();
    if req.method() == axum::http::Method::POST && req.uri().path() == "/api/logout" {
        return logout(&users, req.headers());
    }
    let session = cookie(req.headers(), SESSION_COOKIE);
    if session.is_some_and(|t| users.session(t, now).is_some()) {
        return next.run(req).await;
    }
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| client_key(c.0.ip()));
    let sent = req.headers().contains_key(header::AUTHORIZATION);
    if sent {
        if let Some(wait) = users.locked(ip, now) {
            return too_many_failures(ip, wait);
        }
        // The derivation is slow on purpose: on a blocking thread, never on the async workers.
        let (u, headers) = (users.clone(), req.headers().clone());
        let Ok(turn) = users.derivations.clone().acquire_owned().await else {
            return json_answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "the dashboard is shutting down",
            );
        };
        // Checked again with the turn in hand: attempts sent together all passed the first check while they
        // queued, and each would otherwise have had its password tested, whatever the failure limit says.
        if let Some(wait) = users.locked(ip, Instant::now()) {
            return too_many_failures(ip, wait);
        }
        let user = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            u.check(&headers).map(str::to_string)
        })
        .await
        .ok()
        .flatten();
        match user {
            Some(user) => {
                users.succeeded(ip);
                let token = users.open_session(&user, now);
                let mut r = next.run(req).await;
                if let Some(v) = session_cookie(Some((&token, users.session_timeout))) {
                    r.headers_mut().append(header::SET_COOKIE, v);
                }
                return r;
            }
            None => users.failed(ip, Instant::now()),
        }
    }
    let message = if sent {
        tracing::info!(path = %req.uri().path(), %ip, "dashboard login refused: wrong user name or password");
        "wrong user name or password for the Fjord dashboard"
    } else if session.is_some() {
        "your Fjord dashboard session has ended (logged out or expired); log in again"
    } else {
        "the Fjord dashboard needs a login (HTTP basic auth with a user of dashboard.auth.basic.users)"
    };
    let mut r = json_answer(StatusCode::UNAUTHORIZED, message);
    if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{REALM}\", charset=\"UTF-8\"")) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    if session.is_some() {
        if let Some(v) = session_cookie(None) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

/// The 429 for an address locked out after its failed logins, with Retry-After.
fn too_many_failures(ip: IpAddr, wait: Duration) -> Response {
    tracing::info!(%ip, "dashboard login refused: too many failed logins");
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut r = json_answer(
        StatusCode::TOO_MANY_REQUESTS,
        &format!("too many failed logins from {ip}; try again in {secs} s"),
    );
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
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

    const STORED: &str = "pbkdf2-sha256:100000:00112233445566778899aabbccddeeff:349385d8369097aac69c91b9cf79c08cc236bd0eea62faca19643b117ca1f56e";

    fn users_of(list: &str, extra: &[(&str, &str)]) -> Arc<Users> {
        let mut kv = vec![("dashboard.auth.basic.users", list)];
        kv.extend_from_slice(extra);
        match access(&props(&kv), ip("127.0.0.1")) {
            Ok(Access::Basic(u)) => u,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pbkdf2_matches_the_rfc_vector_and_stored_passwords_log_in() {
        // RFC 7914 section 11: PBKDF2-HMAC-SHA256, P="passwd", S="salt", c=1.
        let hex: String = pbkdf2(b"passwd", b"salt", 1)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
        // Made with Python's hashlib.pbkdf2_hmac("sha256", b"correct horse", salt, 100000).
        let u = users_of(&format!("carol:{STORED}"), &[]);
        assert_eq!(u.check(&basic("carol", "correct horse")), Some("carol"));
        assert_eq!(u.check(&basic("carol", "correct horsE")), None);
        assert_eq!(u.check(&basic("dave", "correct horse")), None);
        for (bad, says) in [
            (
                "carol:pbkdf2-sha256:1000:0011223344556677:00",
                "from 100000",
            ),
            ("carol:pbkdf2-sha256:100000:0011:00", "at least 8 bytes"),
            (
                "carol:pbkdf2-sha256:100000:0011223344556677:00ff",
                "32 bytes",
            ),
            (
                "carol:pbkdf2-sha256:100000:0011223344556677",
                "three fields",
            ),
        ] {
            let e = access(
                &props(&[("dashboard.auth.basic.users", bad)]),
                ip("127.0.0.1"),
            )
            .unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.contains("hashlib.pbkdf2_hmac"), "says how: {e}");
        }
    }

    #[test]
    fn sessions_end_at_their_timeout_or_at_logout() {
        let u = users_of("alice:x", &[("dashboard.auth.session.timeout.ms", "1000")]);
        let t0 = Instant::now();
        let a = u.open_session("alice", t0);
        let b = u.open_session("alice", t0);
        assert_ne!(a, b);
        assert!(a.len() >= 64, "{a}");
        assert_eq!(
            u.session(&a, t0 + Duration::from_millis(999)).as_deref(),
            Some("alice")
        );
        assert_eq!(
            u.session(&a, t0 + Duration::from_millis(1000)),
            None,
            "expired"
        );
        // Forgotten once expired, even if asked for at an earlier time.
        assert_eq!(u.session(&a, t0), None);
        assert!(u.close_session(&b));
        assert_eq!(u.session(&b, t0), None, "logged out");
        assert!(!u.close_session(&b));
        assert_eq!(u.session("made-up", t0), None);
        let e = access(
            &props(&[
                ("dashboard.auth.basic.users", "alice:x"),
                ("dashboard.auth.session.timeout.ms", "soon"),
            ]),
            ip("127.0.0.1"),
        )
        .unwrap_err();
        assert!(e.contains("dashboard.auth.session.timeout.ms"), "{e}");
    }

    #[test]
    fn an_address_is_locked_out_after_its_failures_until_the_lockout_passes() {
        let u = users_of("alice:x", &[("dashboard.auth.lockout.ms", "60000")]);
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let t0 = Instant::now();
        for i in 0..5 {
            assert_eq!(u.locked(a, t0), None, "after {i} failures");
            u.failed(a, t0);
        }
        assert_eq!(u.locked(a, t0), Some(Duration::from_secs(60)));
        assert_eq!(
            u.locked(a, t0 + Duration::from_secs(59)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(u.locked(a, t0 + Duration::from_secs(60)), None);
        assert_eq!(u.locked(b, t0), None, "per address");
        // A failure after the lockout starts the count again.
        u.failed(a, t0 + Duration::from_secs(61));
        assert_eq!(u.locked(a, t0 + Duration::from_secs(61)), None);
        // A success forgets the failures.
        for _ in 0..4 {
            u.failed(b, t0);
        }
        u.succeeded(b);
        u.failed(b, t0);
        assert_eq!(u.locked(b, t0), None);
    }

    #[test]
    fn failures_count_per_ipv4_address_and_per_ipv6_64() {
        assert_eq!(client_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            client_key(ip("2001:db8:1:2:bbbb::9")),
            client_key(ip("2001:db8:1:2:aaaa::1"))
        );
        assert_ne!(
            client_key(ip("2001:db8:1:3::1")),
            client_key(ip("2001:db8:1:2::1"))
        );
        assert_eq!(client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
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
