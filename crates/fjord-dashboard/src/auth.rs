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
pub const COOKIE_SECURE: &str = "dashboard.auth.cookie.secure";
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
/// Client addresses whose failures are remembered at once; past this the one whose last failure is oldest is
/// forgotten (never all of them: a flood from many addresses must not wipe an attacker's count).
const MAX_ADDRESSES: usize = 10_000;
/// Logins waiting for a derivation turn at once; more are answered 503 at once (each waiting request holds a
/// connection and its headers).
const MAX_WAITING: usize = 64;

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

    /// The PBKDF2 rounds one check of this secret costs (none for the SHA-256 form).
    fn rounds(&self) -> u32 {
        match self {
            Secret::Pbkdf2 { iterations, .. } => *iterations,
            Secret::Sha256(_) => 0,
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
    /// What a login for a user that does not exist is checked against.
    nobody: Secret,
    /// The PBKDF2 rounds every check costs, whoever it names: the most any user's secret takes. A check of a
    /// cheaper secret (or of a name no user has) derives the difference too, so the answer's timing does not
    /// tell which user names exist.
    rounds: u32,
    /// `dashboard.auth.cookie.secure`: the session cookie is marked `Secure` (sent over HTTPS only, for a
    /// dashboard behind a TLS proxy).
    secure_cookie: bool,
    session_timeout: Duration,
    max_failures: u32,
    lockout: Duration,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    /// Password derivations running at once (each takes a blocking thread and a core for a while).
    derivations: Arc<tokio::sync::Semaphore>,
    /// Logins waiting for a derivation turn now (at most [`MAX_WAITING`]).
    waiting: std::sync::atomic::AtomicUsize,
}

/// Password derivations running at once; more logins wait for a turn.
const MAX_DERIVATIONS: usize = 2;

/// The address failures are counted for: an IPv4 address, or an IPv6 address's /64 (one host usually holds a
/// whole /64, so counting single IPv6 addresses would not limit it).
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
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
    let secure_cookie = match props.get(COOKIE_SECURE).map(|s| s.trim()) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(format!(
                "{COOKIE_SECURE}=`{other}` is not true or false (true: the session cookie is sent over HTTPS only, for a dashboard behind a TLS proxy)"
            ))
        }
    };
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
            let nobody = clear(b"no such user");
            let rounds = users
                .iter()
                .map(|u| u.secret.rounds())
                .chain([nobody.rounds()])
                .max()
                .unwrap_or(CLEAR_ITERATIONS);
            Ok(Access::Basic(Arc::new(Users {
                users,
                nobody,
                rounds,
                secure_cookie,
                session_timeout: Duration::from_millis(session_timeout),
                max_failures,
                lockout: Duration::from_millis(lockout),
                sessions: Mutex::default(),
                failures: Mutex::default(),
                derivations: Arc::new(tokio::sync::Semaphore::new(MAX_DERIVATIONS)),
                waiting: std::sync::atomic::AtomicUsize::new(0),
            })))
        }
        (_, true) if ip.is_loopback() => Ok(Access::Open),
        (_, true) => Err(format!(
            "the dashboard on metrics.listener {listener} (not a loopback address) needs a login: set {USERS}=NAME:PASSWORD (or NAME:pbkdf2-sha256:ITERATIONS:SALT_HEX:HASH_HEX, or {USERS_FILE}=PATH); or {ENABLE}=false to serve only /metrics, /health and /ready there; or {AUTH}=none to serve it without a login (only behind a proxy that authenticates)"
        )),
    }
}

/// The user name and password of a basic-auth `Authorization` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
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
    Some((name.to_string(), password.to_string()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Users {
    /// The user these `Authorization` credentials name, if the password is right. Runs the slow derivation.
    fn check(&self, headers: &HeaderMap) -> Option<&str> {
        self.check_counted(headers).0
    }

    /// [`Users::check`], and the PBKDF2 rounds it derived (the same for every well-formed login).
    fn check_counted(&self, headers: &HeaderMap) -> (Option<&str>, u32) {
        let Some((name, password)) = basic_credentials(headers) else {
            return (None, 0);
        };
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
        let rounds = secret.rounds() + self.pad(secret.rounds());
        (found.filter(|_| ok).map(|u| u.name.as_str()), rounds)
    }

    /// Derives the rounds a check of `spent` rounds is short of [`Users::rounds`]; returns how many.
    fn pad(&self, spent: u32) -> u32 {
        let extra = self.rounds.saturating_sub(spent);
        if extra > 0 {
            std::hint::black_box(pbkdf2(b"", b"fjord-dashboard-pad", extra));
        }
        extra
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
                let oldest = failures
                    .iter()
                    .min_by_key(|(_, f)| f.last)
                    .map(|(ip, _)| *ip);
                if let Some(oldest) = oldest {
                    tracing::warn!(%oldest, "dashboard: failed logins from over {MAX_ADDRESSES} addresses; forgetting the address whose last failure is oldest");
                    failures.remove(&oldest);
                }
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

/// The session cookie's `Set-Cookie`: the token for `max_age`, or (`None`) its removal; `Secure` with
/// `dashboard.auth.cookie.secure=true`.
fn session_cookie(token: Option<(&str, Duration)>, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    let v = match token {
        Some((t, age)) => format!(
            "{SESSION_COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            age.as_secs().max(1)
        ),
        None => {
            format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
        }
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
    if let Some(v) = session_cookie(None, users.secure_cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// The session a request came with, put in its extensions by [`require_login`]: a long answer (a live stream)
/// checks it again later, and ends once the session has (logout, expiry).
#[derive(Clone)]
pub struct SessionCheck {
    users: Arc<Users>,
    token: String,
}

impl SessionCheck {
    /// Whether the session has not ended.
    pub fn alive(&self) -> bool {
        self.users.session(&self.token, Instant::now()).is_some()
    }
}

/// The user a request is logged in as (by a session cookie or by basic-auth credentials): what the live streams'
/// per-client limit counts by.
#[derive(Clone, Debug)]
pub(crate) struct LoggedIn(pub(crate) String);

/// The login check in front of the pages and `/api/`: a live session cookie, or right basic-auth credentials
/// (which open a session); else 401 with a `WWW-Authenticate` challenge (so a browser asks) and a JSON message,
/// or 429 with `Retry-After` while the client's address is locked out.
pub async fn require_login(
    State(users): State<Arc<Users>>,
    mut req: Request,
    next: Next,
) -> Response {
    let now = Instant::now();
    if req.method() == axum::http::Method::POST && req.uri().path() == "/api/logout" {
        return logout(&users, req.headers());
    }
    let session = cookie(req.headers(), SESSION_COOKIE);
    if let Some((token, user)) = session.and_then(|t| Some((t.to_string(), users.session(t, now)?)))
    {
        if is_session_request(&req) {
            return who(&user);
        }
        req.extensions_mut().insert(LoggedIn(user.clone()));
        // A live stream asks again at each round, and ends once the session has.
        req.extensions_mut().insert(SessionCheck {
            users: users.clone(),
            token,
        });
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
        // The derivation is slow on purpose: on a blocking thread, never on the async workers. Few wait for a
        // turn: a flood of logins is refused at once instead of piling up connections.
        let (u, headers) = (users.clone(), req.headers().clone());
        let Some(waiting) = Waiting::enter(&users.waiting) else {
            tracing::info!(%ip, "dashboard login refused: too many logins waiting");
            let mut r = json_answer(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("over {MAX_WAITING} logins are waiting for their password check; try again in a second"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        };
        let Ok(turn) = users.derivations.clone().acquire_owned().await else {
            return json_answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "the dashboard is shutting down",
            );
        };
        drop(waiting);
        // Checked again with the turn in hand: attempts sent together all passed the first check while they
        // queued, and each would otherwise have had its password tested, whatever the failure limit says.
        if let Some(wait) = users.locked(ip, Instant::now()) {
            return too_many_failures(ip, wait);
        }
        // The outcome is counted before the turn is given back, so the next login's re-check above sees it.
        let user = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let user = u.check(&headers).map(str::to_string);
            match &user {
                Some(_) => u.succeeded(ip),
                None => u.failed(ip, Instant::now()),
            }
            user
        })
        .await
        .ok()
        .flatten();
        if let Some(user) = user {
            let token = users.open_session(&user, now);
            let mut r = if is_session_request(&req) {
                who(&user)
            } else {
                req.extensions_mut().insert(LoggedIn(user.clone()));
                next.run(req).await
            };
            if let Some(v) =
                session_cookie(Some((&token, users.session_timeout)), users.secure_cookie)
            {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            return r;
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
        if let Some(v) = session_cookie(None, users.secure_cookie) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

/// `GET /api/session`, which the login check answers itself: it knows the user.
fn is_session_request(req: &Request) -> bool {
    req.method() == axum::http::Method::GET && req.uri().path() == "/api/session"
}

/// The answer to `GET /api/session` for a logged-in `user`.
fn who(user: &str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        json!({ "login": true, "user": user }).to_string(),
    )
        .into_response()
}

/// One place among the logins waiting for a derivation turn, given back when dropped (also when the request is
/// dropped while it waits).
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a std::sync::atomic::AtomicUsize) -> Option<Waiting<'a>> {
        use std::sync::atomic::Ordering;
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_WAITING).then_some(n + 1)
            })
            .ok()
            .map(|_| Waiting(count))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
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

    /// Made with Python's hashlib.pbkdf2_hmac("sha256", b"battery staple", salt, 120000).
    const STORED_120K: &str = "pbkdf2-sha256:120000:0011223344556677:cbb4a2c670249398806eef55c24cba2f1baebf178fb763f1ed59ab2403d73aeb";

    /// A login's cost does not tell which user names exist: a name no user has, a user stored with fewer
    /// rounds, an old SHA-256 one and the costliest user all derive the same number of rounds (a nonexistent
    /// name used to cost 100,000 while a user stored at 600,000 cost 600,000).
    #[test]
    fn every_login_derives_the_same_rounds_whoever_it_names() {
        let u = users_of(
            &format!(
                "carol:{STORED},erin:{STORED_120K},old:sha256:{}",
                "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
            ),
            &[],
        );
        assert_eq!(u.rounds, 120_000);
        for (name, password, user) in [
            ("erin", "battery staple", Some("erin")),
            ("erin", "wrong", None),
            ("carol", "correct horse", Some("carol")),
            ("old", "foo", Some("old")),
            ("mallory", "correct horse", None),
        ] {
            assert_eq!(
                u.check_counted(&basic(name, password)),
                (user, 120_000),
                "{name}"
            );
        }
    }

    /// Past the limit of remembered addresses the one whose last failure is oldest goes, not every one: a flood
    /// of failures from many addresses used to wipe the count of an address that was locked out.
    #[test]
    fn a_flood_of_addresses_forgets_the_oldest_not_a_locked_out_one() {
        let u = users_of("alice:x", &[("dashboard.auth.lockout.ms", "60000")]);
        let t0 = Instant::now();
        let first = ip("198.51.100.1");
        u.failed(first, t0);
        let attacker = ip("192.0.2.1");
        for _ in 0..5 {
            u.failed(attacker, t0 + Duration::from_secs(1));
        }
        // The table fills up, then one more address fails.
        for i in 0..MAX_ADDRESSES as u32 - 1 {
            let other = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            u.failed(other, t0 + Duration::from_secs(2));
        }
        let now = t0 + Duration::from_secs(3);
        assert_eq!(lock(&u.failures).len(), MAX_ADDRESSES);
        assert_eq!(
            u.locked(attacker, now),
            Some(Duration::from_secs(58)),
            "still locked out"
        );
        assert!(!lock(&u.failures).contains_key(&first), "the oldest went");
    }

    #[test]
    fn logins_waiting_for_a_turn_are_bounded() {
        let count = std::sync::atomic::AtomicUsize::new(0);
        let places: Vec<_> = (0..MAX_WAITING)
            .map(|_| Waiting::enter(&count).expect("a place"))
            .collect();
        assert!(Waiting::enter(&count).is_none(), "full");
        drop(places);
        assert!(Waiting::enter(&count).is_some(), "given back");
    }

    #[test]
    fn the_session_cookie_is_secure_when_asked() {
        let u = users_of("alice:x", &[("dashboard.auth.cookie.secure", "true")]);
        let c = session_cookie(Some(("t", Duration::from_secs(5))), u.secure_cookie).unwrap();
        assert!(c.to_str().unwrap().ends_with("; Secure"), "{c:?}");
        let gone = session_cookie(None, u.secure_cookie).unwrap();
        assert!(gone.to_str().unwrap().contains("; Secure"), "{gone:?}");
        let plain = users_of("alice:x", &[]);
        let c = session_cookie(Some(("t", Duration::from_secs(5))), plain.secure_cookie).unwrap();
        assert!(!c.to_str().unwrap().contains("Secure"), "{c:?}");
        let e = access(
            &props(&[
                ("dashboard.auth.basic.users", "alice:x"),
                ("dashboard.auth.cookie.secure", "yes"),
            ]),
            ip("127.0.0.1"),
        )
        .unwrap_err();
        assert!(
            e.contains("dashboard.auth.cookie.secure") && e.contains("true or false"),
            "{e}"
        );
    }

    /// Wrong logins sent together from one address: those that waited for a derivation turn are checked
    /// against the lockout again, so only about the failure limit of them (plus those already deriving) has its
    /// password tested; the rest get 429. Through the real middleware.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_logins_sent_together_stop_at_the_failure_limit() {
        use tower::ServiceExt;
        let u = users_of("alice:x", &[("dashboard.auth.lockout.ms", "60000")]);
        let app = axum::Router::new()
            .route("/", axum::routing::get(|| async { "in" }))
            .layer(axum::middleware::from_fn_with_state(
                u.clone(),
                require_login,
            ));
        let sent = 16;
        let answers = futures_util::future::join_all((0..sent).map(|_| {
            let mut req = axum::http::Request::builder()
                .uri("/")
                .body(axum::body::Body::empty())
                .unwrap();
            *req.headers_mut() = basic("alice", "wrong");
            req.extensions_mut()
                .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 9], 4000))));
            app.clone().oneshot(req)
        }))
        .await;
        let statuses: Vec<u16> = answers
            .into_iter()
            .map(|r| r.unwrap().status().as_u16())
            .collect();
        let tested = statuses.iter().filter(|s| **s == 401).count();
        let refused = statuses.iter().filter(|s| **s == 429).count();
        assert_eq!(tested + refused, sent, "{statuses:?}");
        assert!(
            (5..5 + MAX_DERIVATIONS).contains(&tested),
            "passwords tested: {tested} of {sent} ({statuses:?})"
        );
        assert_eq!(lock(&u.failures)[&ip("192.0.2.9")].count as usize, tested);
    }

    /// `GET /api/session` answers the logged-in user from the login check itself.
    #[tokio::test]
    async fn the_session_endpoint_names_the_logged_in_user() {
        use tower::ServiceExt;
        let u = users_of("alice:x", &[]);
        let app = axum::Router::new()
            .route("/api/session", axum::routing::get(|| async { "not here" }))
            .layer(axum::middleware::from_fn_with_state(u, require_login));
        let mut req = axum::http::Request::builder()
            .uri("/api/session")
            .body(axum::body::Body::empty())
            .unwrap();
        *req.headers_mut() = basic("alice", "x");
        let r = app.oneshot(req).await.unwrap();
        assert_eq!(r.status(), 200);
        let body = axum::body::to_bytes(r.into_body(), 1 << 10).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, json!({"login": true, "user": "alice"}));
    }
}
