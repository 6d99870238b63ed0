//! Kafka Connect's own group protocol: distributed workers of one `group.id` join the group with the protocol
//! type `connect` (JoinGroup, SyncGroup, Heartbeat, LeaveGroup over a plain connection to the group coordinator,
//! found with FindCoordinator), offering Connect's protocols `sessioned` (v2) and `compatible` (v1), the
//! incremental cooperative ones of KIP-415. The leader the coordinator elects assigns connectors to workers;
//! every worker runs only its assignment.
//!
//! Formats (Connect's, big-endian; strings are an int16 length and UTF-8, arrays an int32 count, nullable bytes
//! an int32 length with -1 for null):
//! - member metadata: `version:int16, url:string, config_offset:int64, allocation:nullable bytes`, where the
//!   allocation is the member's current assignment in the assignment format (null when it has none);
//! - assignment: `version:int16, error:int16, leader:string, leader_url:string, config_offset:int64,
//!   assignment:[connector:string, tasks:[int32]], revoked:[same], delay:int32`; task id -1 stands for the
//!   connector itself. `assignment` lists only what this round adds (the member keeps what it had minus
//!   `revoked`), `delay` is how long (ms) the leader waits for a departed worker before giving its work away
//!   (`scheduled.rebalance.max.delay.ms`), after which every member rejoins.
//!
//! Rebalances are cooperative: a member keeps running its connectors and tasks through a rebalance; a unit (a
//! connector, or one task) moves in two rounds (revoked from one worker, which stops it and rejoins at once, then
//! assigned to another), so it never runs twice. Connectors and tasks are spread apart, each kind balanced over
//! the workers (as Connect's assignor does): a sink's `tasks.max` tasks may run on several workers, and a
//! connector's own unit (which only reports the connector's status in Fjord) may be on a worker that runs none
//! of its tasks.
//!
//! Not done: Connect's session keys of `sessioned` (the signing of requests between workers), the eager `default`
//! protocol (v0), mixed groups with Apache Kafka's workers (the config offset is not tracked: -1).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    RequestHeader, ResponseHeader, SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use crate::distributed::ConfigLog;
use crate::worker::Worker;

/// The group's protocol type, as Apache Kafka's Connect workers join with.
pub const PROTOCOL_TYPE: &str = "connect";
/// The task id that stands for the connector itself in an assignment.
pub const CONNECTOR_TASK: i32 = -1;

/// The protocols offered, most preferred first: (name, version of the metadata and assignment formats).
pub fn protocols(connect_protocol: &str) -> Result<Vec<(&'static str, i16)>, String> {
    match connect_protocol {
        "sessioned" => Ok(vec![("sessioned", 2), ("compatible", 1)]),
        "compatible" => Ok(vec![("compatible", 1)]),
        other => Err(format!(
            "connect.protocol={other}: Fjord's workers speak `sessioned` (the default) and `compatible` (incremental \
             cooperative rebalancing); the eager `default` protocol is not supported, and `lease` selects Fjord's \
             older one-active-worker lease"
        )),
    }
}

/// Connectors (and their task ids, -1 for the connector) by name.
pub type Tasks = BTreeMap<String, Vec<i32>>;

/// A Connect assignment (the SyncGroup answer for one member).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assignment {
    pub version: i16,
    pub error: i16,
    pub leader: String,
    pub leader_url: String,
    pub config_offset: i64,
    pub assigned: Tasks,
    pub revoked: Tasks,
    pub delay_ms: i32,
}

/// A member's metadata in its JoinGroup.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerState {
    pub url: String,
    pub config_offset: i64,
    /// What the member runs now (from its previous assignments).
    pub owned: Tasks,
}

/// Why an assignment cannot be run, when it is not a Fjord leader's: an error set by the leader (Connect's
/// CONFIG_MISMATCH) or a real config offset (Fjord's leader sends -1; an Apache Kafka Connect leader sends its
/// config topic's offset). Task lists say nothing: both assign connectors and tasks apart.
pub fn foreign(a: &Assignment) -> Option<String> {
    if a.error != 0 {
        return Some(format!(
            "the group's leader {} answered error {}",
            a.leader_url, a.error
        ));
    }
    if a.config_offset != -1 {
        return Some(format!(
            "the group's leader {} is not a Fjord worker (its assignment carries config offset {})",
            a.leader_url, a.config_offset
        ));
    }
    None
}

/// The longest string the protocol's STRING (an i16 length) can carry: connector names are refused above it.
pub const MAX_STR: usize = i16::MAX as usize;

/// Writes a protocol STRING; a string longer than [`MAX_STR`] bytes is an error (its length would wrap).
fn put_str(b: &mut Vec<u8>, s: &str) -> Result<(), String> {
    let len = i16::try_from(s.len()).map_err(|_| {
        format!(
            "a string of {} bytes does not fit Connect's protocol (at most {MAX_STR}): {}...",
            s.len(),
            s.chars().take(40).collect::<String>()
        )
    })?;
    b.extend(len.to_be_bytes());
    b.extend(s.as_bytes());
    Ok(())
}

fn put_tasks(b: &mut Vec<u8>, t: &Tasks) -> Result<(), String> {
    b.extend((t.len() as i32).to_be_bytes());
    for (name, ids) in t {
        put_str(b, name)?;
        b.extend((ids.len() as i32).to_be_bytes());
        for id in ids {
            b.extend(id.to_be_bytes());
        }
    }
    Ok(())
}

pub fn encode_assignment(a: &Assignment) -> Result<Vec<u8>, String> {
    let mut b = Vec::new();
    b.extend(a.version.to_be_bytes());
    b.extend(a.error.to_be_bytes());
    put_str(&mut b, &a.leader)?;
    put_str(&mut b, &a.leader_url)?;
    b.extend(a.config_offset.to_be_bytes());
    put_tasks(&mut b, &a.assigned)?;
    if a.version >= 1 {
        put_tasks(&mut b, &a.revoked)?;
        b.extend(a.delay_ms.to_be_bytes());
    }
    Ok(b)
}

pub fn encode_metadata(version: i16, state: &WorkerState) -> Result<Vec<u8>, String> {
    let mut b = Vec::new();
    b.extend(version.to_be_bytes());
    put_str(&mut b, &state.url)?;
    b.extend(state.config_offset.to_be_bytes());
    if version >= 1 {
        if state.owned.is_empty() {
            b.extend((-1i32).to_be_bytes());
        } else {
            let a = encode_assignment(&Assignment {
                version,
                assigned: state.owned.clone(),
                ..Default::default()
            })?;
            b.extend((a.len() as i32).to_be_bytes());
            b.extend(a);
        }
    }
    Ok(b)
}

/// A cursor over a Connect-format buffer; every read says what was short.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err(format!("{what}: {n} bytes needed, {} left", self.0.len()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn i16(&mut self, what: &str) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn i32(&mut self, what: &str) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn i64(&mut self, what: &str) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    fn string(&mut self, what: &str) -> Result<String, String> {
        let n = self.i16(what)?;
        if n < 0 {
            return Err(format!("{what}: a null string"));
        }
        String::from_utf8(self.take(n as usize, what)?.to_vec())
            .map_err(|_| format!("{what}: not UTF-8"))
    }
    fn tasks(&mut self, what: &str) -> Result<Tasks, String> {
        let n = self.i32(what)?;
        let mut out = Tasks::new();
        for _ in 0..n.max(0) {
            let name = self.string(what)?;
            let k = self.i32(what)?;
            if k as usize > self.0.len() / 4 {
                return Err(format!("{what}: {k} task ids in {} bytes", self.0.len()));
            }
            let mut ids = Vec::new();
            for _ in 0..k.max(0) {
                ids.push(self.i32(what)?);
            }
            out.entry(name).or_default().extend(ids);
        }
        Ok(out)
    }
}

pub fn decode_assignment(b: &[u8]) -> Result<Assignment, String> {
    let mut r = Reader(b);
    let version = r.i16("assignment version")?;
    if version < 0 {
        return Err(format!("assignment version {version}"));
    }
    let mut a = Assignment {
        version,
        error: r.i16("assignment error")?,
        leader: r.string("assignment leader")?,
        leader_url: r.string("assignment leader url")?,
        config_offset: r.i64("assignment config offset")?,
        assigned: r.tasks("assigned connectors")?,
        ..Default::default()
    };
    // Fields a v0 assignment lacks default (Connect tolerates them missing).
    if version >= 1 && !r.0.is_empty() {
        a.revoked = r.tasks("revoked connectors")?;
        if !r.0.is_empty() {
            a.delay_ms = r.i32("scheduled delay")?;
        }
    }
    Ok(a)
}

pub fn decode_metadata(b: &[u8]) -> Result<WorkerState, String> {
    let mut r = Reader(b);
    let version = r.i16("metadata version")?;
    if version < 0 {
        return Err(format!("metadata version {version}"));
    }
    let url = r.string("worker url")?;
    let config_offset = r.i64("config offset")?;
    let mut owned = Tasks::new();
    if version >= 1 && !r.0.is_empty() {
        let n = r.i32("allocation")?;
        if n >= 0 {
            owned = decode_assignment(r.take(n as usize, "allocation")?)?.assigned;
        }
    }
    Ok(WorkerState {
        url,
        config_offset,
        owned,
    })
}

/// `http://host:port/` (a worker's URL in the protocol) as `host:port`.
pub fn url_to_addr(url: &str) -> String {
    let s = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    s.trim_end_matches('/').to_string()
}

/// What is assigned: a connector (task id -1, [`CONNECTOR_TASK`]) or one of its tasks (0 to N-1), as Connect's
/// assignments list them.
pub type Unit = (String, i32);

/// The units of an assignment's or a member's `[connector, tasks]` lists.
pub fn units_of(t: &Tasks) -> BTreeSet<Unit> {
    t.iter()
        .flat_map(|(c, ids)| ids.iter().map(move |id| (c.clone(), *id)))
        .collect()
}

/// Units back in the `[connector, tasks]` form (ids in order).
pub fn tasks_of<'a>(units: impl IntoIterator<Item = &'a Unit>) -> Tasks {
    let mut t = Tasks::new();
    for (c, id) in units {
        t.entry(c.clone()).or_default().push(*id);
    }
    for ids in t.values_mut() {
        ids.sort_unstable();
        ids.dedup();
    }
    t
}

/// A member as the leader sees it.
#[derive(Debug, Clone)]
pub struct Member<U = String> {
    pub id: String,
    pub url: String,
    pub owned: BTreeSet<U>,
}

/// What the leader remembers between rebalances: who ran what after the last one, and when the work of a
/// departed worker may be given away.
#[derive(Debug)]
pub struct LeaderState<U = String> {
    previous: Option<BTreeMap<U, String>>,
    deadline: Option<Instant>,
}

impl<U> Default for LeaderState<U> {
    fn default() -> Self {
        LeaderState {
            previous: None,
            deadline: None,
        }
    }
}

/// The leader's decision for one member.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberPlan<U = String> {
    pub added: BTreeSet<U>,
    pub revoked: BTreeSet<U>,
}

impl<U> Default for MemberPlan<U> {
    fn default() -> Self {
        MemberPlan {
            added: BTreeSet::new(),
            revoked: BTreeSet::new(),
        }
    }
}

/// The leader's assignment round: what each member adds and gives up, the delay (ms) before the work of a
/// departed worker is given away (0: none pending), and who runs what after the round.
#[derive(Debug)]
pub struct Plan<U = String> {
    pub members: BTreeMap<String, MemberPlan<U>>,
    pub delay_ms: i32,
    pub owners: BTreeMap<U, String>,
}

impl<U> Default for Plan<U> {
    fn default() -> Self {
        Plan {
            members: BTreeMap::new(),
            delay_ms: 0,
            owners: BTreeMap::new(),
        }
    }
}

/// Incremental cooperative assignment of `connectors` (any units: the leader balances connectors and tasks
/// separately, as Connect's assignor does) to `members` (the leader first in `members`):
/// - what a member runs and still exists stays with it (a connector two members claim stays with the first);
/// - what a departed member ran waits up to `max_delay` for it to come back (only when this leader saw it run
///   there), then goes to the others;
/// - new and unclaimed connectors go to the least loaded members (the leader first on a tie);
/// - when a member runs more than its share (a worker joined), the excess is revoked this round and assigned in
///   the next (the member rejoins as soon as it stopped them).
pub fn assign<U: Ord + Clone>(
    members: &[Member<U>],
    connectors: &BTreeSet<U>,
    state: &mut LeaderState<U>,
    now: Instant,
    max_delay: Duration,
) -> Plan<U> {
    let mut plan = Plan::default();
    if members.is_empty() {
        return plan;
    }
    for m in members {
        plan.members.insert(m.id.clone(), MemberPlan::default());
    }
    // Who runs what, as claimed.
    let mut owner: BTreeMap<U, String> = BTreeMap::new();
    for m in members {
        for c in &m.owned {
            if connectors.contains(c) && !owner.contains_key(c) {
                owner.insert(c.clone(), m.id.clone());
            } else {
                plan.members
                    .get_mut(&m.id)
                    .unwrap()
                    .revoked
                    .insert(c.clone());
            }
        }
    }
    let present: BTreeSet<&str> = members.iter().map(|m| m.id.as_str()).collect();
    let unassigned: Vec<U> = connectors
        .iter()
        .filter(|c| !owner.contains_key(*c))
        .cloned()
        .collect();
    let lost: BTreeMap<U, String> = unassigned
        .iter()
        .filter_map(|c| {
            let was = state.previous.as_ref()?.get(c)?;
            (!present.contains(was.as_str())).then(|| (c.clone(), was.clone()))
        })
        .collect();
    let mut held = BTreeMap::new();
    if lost.is_empty() || max_delay.is_zero() {
        state.deadline = None;
    } else {
        let deadline = *state.deadline.get_or_insert(now + max_delay);
        if now < deadline {
            held = lost;
            plan.delay_ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as i32;
        } else {
            state.deadline = None;
        }
    }
    let to_assign: Vec<U> = unassigned
        .into_iter()
        .filter(|c| !held.contains_key(c))
        .collect();
    let mut load: BTreeMap<&str, Vec<U>> = members
        .iter()
        .map(|m| (m.id.as_str(), Vec::new()))
        .collect();
    for (c, m) in &owner {
        load.get_mut(m.as_str()).unwrap().push(c.clone());
    }
    // Revoke what is over the share, unless work is held for a departed worker (the counts are not final).
    if held.is_empty() {
        let total = owner.len() + to_assign.len();
        let share = total.div_ceil(members.len());
        for (m, cs) in load.iter_mut() {
            while cs.len() > share {
                let c = cs.pop().unwrap();
                owner.remove(&c);
                plan.members.get_mut(*m).unwrap().revoked.insert(c);
            }
        }
    }
    for c in to_assign {
        // The least loaded; `members` order (the leader first) breaks ties.
        let m = members
            .iter()
            .map(|m| m.id.as_str())
            .min_by_key(|m| load[m].len())
            .unwrap();
        load.get_mut(m).unwrap().push(c.clone());
        owner.insert(c.clone(), m.to_string());
        plan.members.get_mut(m).unwrap().added.insert(c);
    }
    plan.owners = owner.clone();
    let mut remembered = owner;
    remembered.extend(held);
    state.previous = Some(remembered);
    plan
}

/// One leader round over connectors (task -1) and tasks, balanced apart, as Connect's assignor balances them
/// (`states`: the leader's memory for each), merged into one plan: a sink's tasks spread over the workers
/// whatever the connectors do.
pub fn assign_units(
    members: &[Member<Unit>],
    connectors: &BTreeSet<Unit>,
    tasks: &BTreeSet<Unit>,
    states: [&mut LeaderState<Unit>; 2],
    now: Instant,
    max_delay: Duration,
) -> Plan<Unit> {
    let [connector_state, task_state] = states;
    let only = |connector: bool| -> Vec<Member<Unit>> {
        members
            .iter()
            .map(|m| Member {
                id: m.id.clone(),
                url: m.url.clone(),
                owned: m
                    .owned
                    .iter()
                    .filter(|(_, id)| (*id == CONNECTOR_TASK) == connector)
                    .cloned()
                    .collect(),
            })
            .collect()
    };
    let mut plan = assign(&only(true), connectors, connector_state, now, max_delay);
    let task_plan = assign(&only(false), tasks, task_state, now, max_delay);
    for (id, t) in task_plan.members {
        let p = plan.members.entry(id).or_default();
        p.added.extend(t.added);
        p.revoked.extend(t.revoked);
    }
    plan.owners.extend(task_plan.owners);
    plan.delay_ms = plan.delay_ms.max(task_plan.delay_ms);
    plan
}

/// What the membership needs.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    pub bootstrap: String,
    pub group_id: String,
    pub config_topic: String,
    pub offset_topic: String,
    pub session_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub max_delay_ms: u64,
    pub protocols: Vec<(&'static str, i16)>,
    /// This worker's REST URL, `http://host:port/`.
    pub url: String,
}

/// What the worker learns from a completed rebalance.
#[derive(Clone, Debug, Default)]
pub struct GroupView {
    /// The leader's REST address (`host:port`); None while no rebalance completed (or membership was lost).
    pub leader: Option<String>,
    pub is_leader: bool,
    /// The connectors (task -1) and tasks this worker runs.
    pub mine: BTreeSet<Unit>,
    /// Leader only: connector (task -1) or task -> REST address of the worker running it.
    pub owners: BTreeMap<Unit, String>,
    /// The group generation of the rebalance (written with statuses, as Connect does).
    pub generation: i32,
}

/// The running membership; `stop` leaves the group.
pub struct Membership {
    stop: Arc<AtomicBool>,
    rejoin: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Membership {
    /// Asks for a rebalance (the leader after a connector change, so that owners pick it up).
    pub fn request_rebalance(&self) {
        self.rejoin.store(true, Ordering::SeqCst);
    }

    /// Leaves the group (the worker stopped its tasks first); bounded.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !t.is_finished() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Joins the group on a thread of its own (the protocol's requests are blocking; a join waits for the others).
pub fn join(config: GroupConfig, worker: Arc<Worker>) -> Result<Membership, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let rejoin = Arc::new(AtomicBool::new(false));
    let (s, r) = (stop.clone(), rejoin.clone());
    let rt = tokio::runtime::Handle::current();
    let thread = std::thread::Builder::new()
        .name("connect-group".into())
        .spawn(move || {
            Session::new(config, worker, rt, s, r).run();
        })
        .map_err(|e| format!("cannot start the group thread: {e}"))?;
    Ok(Membership {
        stop,
        rejoin,
        thread: Some(thread),
    })
}

const JOIN_VERSION: i16 = 5;
const SYNC_VERSION: i16 = 3;
const HEARTBEAT_VERSION: i16 = 3;
const LEAVE_VERSION: i16 = 3;
const FIND_VERSION: i16 = 3;

// Kafka's error codes the membership acts on.
const NOT_COORDINATOR: i16 = 16;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const REBALANCE_IN_PROGRESS: i16 = 27;
const MEMBER_ID_REQUIRED: i16 = 79;

/// One blocking connection to a broker.
struct Conn {
    stream: TcpStream,
    correlation: i32,
}

impl Conn {
    fn connect(addr: &str) -> Result<Conn, String> {
        let target = addr
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("{addr} resolves to nothing"))?;
        let stream = TcpStream::connect_timeout(&target, Duration::from_secs(5))
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            correlation: 0,
        })
    }

    fn send<R: Request>(
        &mut self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, String> {
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("fjord-connect")));
        let mut frame = vec![0u8; 4];
        header
            .encode(&mut frame, R::header_version(version))
            .and_then(|()| req.encode(&mut frame, version))
            .map_err(|e| format!("cannot encode request {}: {e}", R::KEY))?;
        let len = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        let _ = self.stream.set_write_timeout(Some(timeout));
        let _ = self.stream.set_read_timeout(Some(timeout));
        self.stream
            .write_all(&frame)
            .map_err(|e| format!("sending request {}: {e}", R::KEY))?;
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .map_err(|e| format!("waiting for the answer to request {}: {e}", R::KEY))?;
        let len = i32::from_be_bytes(len);
        if !(0..=64 * 1024 * 1024).contains(&len) {
            return Err(format!("an answer of {len} bytes to request {}", R::KEY));
        }
        let mut body = vec![0u8; len as usize];
        self.stream
            .read_exact(&mut body)
            .map_err(|e| format!("reading the answer to request {}: {e}", R::KEY))?;
        let mut buf = body.as_slice();
        let h = ResponseHeader::decode(&mut buf, R::Response::header_version(version))
            .map_err(|e| format!("decoding the answer to request {}: {e}", R::KEY))?;
        if h.correlation_id != self.correlation {
            return Err(format!(
                "the answer to request {} has correlation id {} (expected {})",
                R::KEY,
                h.correlation_id,
                self.correlation
            ));
        }
        R::Response::decode(&mut buf, version)
            .map_err(|e| format!("decoding the answer to request {}: {e}", R::KEY))
    }
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// How a step of the protocol ended.
enum Step {
    /// Join again (a rebalance started, or the membership was refused for a reason worth retrying).
    Rejoin,
    /// The coordinator cannot be used: find it again.
    Reconnect(String),
}

struct Session {
    config: GroupConfig,
    worker: Arc<Worker>,
    rt: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
    rejoin: Arc<AtomicBool>,
    member_id: String,
    generation: i32,
    /// The generation whose assignment was applied last: a coordinator answers a follower that rejoins
    /// unchanged with the current generation and its assignment again, which must not be applied twice (its
    /// revocations would make the member rejoin for ever).
    applied: i32,
    owned: Tasks,
    /// The leader's memory of who ran which connector, and of who ran which task (balanced apart).
    leader_state: LeaderState<Unit>,
    task_leader_state: LeaderState<Unit>,
    conn: Option<Conn>,
    rejoin_at: Option<Instant>,
    /// When the coordinator last answered a Heartbeat or SyncGroup: past [`lost_after`] the session may have
    /// expired and the work been given to another worker.
    last_ok: Instant,
}

/// How long after the coordinator's last answer a worker that cannot reach it keeps running its connectors:
/// half the session timeout. The coordinator expires the session `session.timeout.ms` after the last heartbeat
/// it received (no later than that answer), and only then can the leader hand the work to another worker; the
/// other half is for the tasks to stop and commit. Connect (KAFKA-9184) revokes once the coordinator stayed
/// undiscoverable for one heartbeat interval, i.e. about two intervals after its last heartbeat (6 s of the
/// default 10 s session); counting from the last answer, half the session is as safe and does not make one
/// slow heartbeat stop everything.
pub fn lost_after(session_timeout_ms: u64) -> Duration {
    Duration::from_millis(session_timeout_ms / 2)
}

/// Whether a worker whose coordinator last answered at `last_ok` must give its work up at `now`.
pub fn coordinator_lost(last_ok: Instant, now: Instant, session_timeout_ms: u64) -> bool {
    now.saturating_duration_since(last_ok) >= lost_after(session_timeout_ms)
}

impl Session {
    fn new(
        config: GroupConfig,
        worker: Arc<Worker>,
        rt: tokio::runtime::Handle,
        stop: Arc<AtomicBool>,
        rejoin: Arc<AtomicBool>,
    ) -> Session {
        Session {
            config,
            worker,
            rt,
            stop,
            rejoin,
            member_id: String::new(),
            generation: -1,
            applied: -1,
            owned: Tasks::new(),
            leader_state: LeaderState::default(),
            task_leader_state: LeaderState::default(),
            conn: None,
            rejoin_at: None,
            last_ok: Instant::now(),
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn run(mut self) {
        while !self.stopped() {
            if self.conn.is_none() {
                match self.find_coordinator() {
                    Ok(c) => self.conn = Some(c),
                    Err(e) => {
                        tracing::warn!(group = %self.config.group_id, "cannot reach the group coordinator yet: {e}");
                        self.check_lost();
                        self.pause(Duration::from_millis(500));
                        continue;
                    }
                }
            }
            let step = match self.join_and_sync() {
                Ok(()) => self.heartbeats(),
                Err(s) => s,
            };
            if let Step::Reconnect(why) = step {
                if !self.stopped() {
                    tracing::warn!(group = %self.config.group_id, "group coordinator lost: {why}");
                }
                self.conn = None;
                self.check_lost();
                self.pause(Duration::from_millis(200));
            }
        }
        self.leave();
    }

    /// Cut off from the coordinator for too long: stop everything (see [`lost_after`]).
    fn check_lost(&mut self) {
        let now = Instant::now();
        if !self.owned.is_empty()
            && coordinator_lost(self.last_ok, now, self.config.session_timeout_ms)
        {
            tracing::warn!(group = %self.config.group_id, "the group coordinator has not answered for {:?}; stopping this worker's connectors (another worker may get them) until it joins again", now - self.last_ok);
            self.drop_work();
        }
    }

    /// Stops every task (each commits), forgets what this worker owned and whether it leads (REST answers
    /// 409 until the next rebalance). The member id is kept, so that a quick rejoin is still recognised.
    fn drop_work(&mut self) {
        self.owned.clear();
        self.applied = -1;
        self.rt.block_on(self.worker.group_lost());
    }

    fn pause(&self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end && !self.stopped() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn find_coordinator(&self) -> Result<Conn, String> {
        let mut last = String::from("no bootstrap server");
        for addr in self
            .config
            .bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            let mut c = match Conn::connect(addr) {
                Ok(c) => c,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let req = FindCoordinatorRequest::default()
                .with_key(str_bytes(&self.config.group_id))
                .with_key_type(0);
            let resp = c.send(&req, FIND_VERSION, Duration::from_secs(10))?;
            if resp.error_code != 0 {
                last = format!(
                    "FindCoordinator answered error {}{}",
                    resp.error_code,
                    resp.error_message
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                );
                continue;
            }
            let addr = format!("{}:{}", resp.host.as_str(), resp.port);
            return Conn::connect(&addr);
        }
        Err(last)
    }

    fn join_timeout(&self) -> Duration {
        Duration::from_millis(self.config.rebalance_timeout_ms + 5_000)
    }

    /// JoinGroup then SyncGroup; on success the assignment is applied.
    fn join_and_sync(&mut self) -> Result<(), Step> {
        self.rejoin.store(false, Ordering::SeqCst);
        self.rejoin_at = None;
        let state = WorkerState {
            url: self.config.url.clone(),
            config_offset: -1,
            owned: self.owned.clone(),
        };
        let mut protocols = Vec::new();
        for (name, v) in &self.config.protocols {
            let metadata = match encode_metadata(*v, &state) {
                Ok(m) => m,
                Err(e) => {
                    // Only an over-long worker URL or owned name gets here (REST refuses such names): the worker
                    // joins owning nothing rather than sending metadata nobody can read.
                    tracing::warn!(group = %self.config.group_id, "cannot describe this worker to the group ({e}); stopping its connectors and joining again");
                    self.drop_work();
                    self.pause(Duration::from_secs(1));
                    return Err(Step::Rejoin);
                }
            };
            protocols.push(
                JoinGroupRequestProtocol::default()
                    .with_name(str_bytes(name))
                    .with_metadata(Bytes::from(metadata)),
            );
        }
        let req = JoinGroupRequest::default()
            .with_group_id(GroupId(str_bytes(&self.config.group_id)))
            .with_session_timeout_ms(self.config.session_timeout_ms as i32)
            .with_rebalance_timeout_ms(self.config.rebalance_timeout_ms as i32)
            .with_member_id(str_bytes(&self.member_id))
            .with_protocol_type(str_bytes(PROTOCOL_TYPE))
            .with_protocols(protocols);
        let timeout = self.join_timeout();
        let conn = self.conn.as_mut().expect("connected");
        let resp = conn
            .send(&req, JOIN_VERSION, timeout)
            .map_err(Step::Reconnect)?;
        match resp.error_code {
            0 => {}
            MEMBER_ID_REQUIRED => {
                self.member_id = resp.member_id.to_string();
                return Err(Step::Rejoin);
            }
            UNKNOWN_MEMBER_ID | ILLEGAL_GENERATION => {
                self.lose_membership();
                return Err(Step::Rejoin);
            }
            NOT_COORDINATOR | COORDINATOR_NOT_AVAILABLE | COORDINATOR_LOAD_IN_PROGRESS => {
                return Err(Step::Reconnect(format!(
                    "JoinGroup error {}",
                    resp.error_code
                )))
            }
            REBALANCE_IN_PROGRESS => return Err(Step::Rejoin),
            e => {
                tracing::warn!(group = %self.config.group_id, "JoinGroup refused with error {e} (is `group.id` used by a consumer group? Connect workers need a group of their own)");
                self.pause(Duration::from_secs(1));
                return Err(Step::Rejoin);
            }
        }
        self.member_id = resp.member_id.to_string();
        self.generation = resp.generation_id;
        let again = self.generation == self.applied;
        let protocol = resp
            .protocol_name
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let version = self
            .config
            .protocols
            .iter()
            .find(|(n, _)| *n == protocol)
            .map(|(_, v)| *v)
            .unwrap_or(1);
        let is_leader = resp.leader.as_str() == self.member_id;
        let mut assignments = Vec::new();
        let mut owners = BTreeMap::new();
        if is_leader && !again {
            match self.lead(&resp.members, &protocol, version) {
                Ok((a, o)) => {
                    assignments = a;
                    owners = o;
                }
                Err(e) => {
                    tracing::warn!(group = %self.config.group_id, "cannot compute the assignment yet: {e}");
                    self.pause(Duration::from_millis(500));
                    return Err(Step::Rejoin);
                }
            }
        }
        let req = SyncGroupRequest::default()
            .with_group_id(GroupId(str_bytes(&self.config.group_id)))
            .with_generation_id(self.generation)
            .with_member_id(str_bytes(&self.member_id))
            .with_assignments(assignments);
        let conn = self.conn.as_mut().expect("connected");
        let resp = conn
            .send(&req, SYNC_VERSION, timeout)
            .map_err(Step::Reconnect)?;
        match resp.error_code {
            0 => self.last_ok = Instant::now(),
            UNKNOWN_MEMBER_ID | ILLEGAL_GENERATION => {
                self.lose_membership();
                return Err(Step::Rejoin);
            }
            NOT_COORDINATOR | COORDINATOR_NOT_AVAILABLE => {
                return Err(Step::Reconnect(format!(
                    "SyncGroup error {}",
                    resp.error_code
                )))
            }
            _ => return Err(Step::Rejoin),
        }
        let a = match decode_assignment(&resp.assignment) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(group = %self.config.group_id, "the leader's assignment cannot be read ({e}); joining again");
                self.pause(Duration::from_millis(500));
                return Err(Step::Rejoin);
            }
        };
        if let Some(why) = foreign(&a) {
            // Running it could run a connector twice (an Apache leader gives its tasks to other workers): this
            // worker stops what it ran and runs nothing until a Fjord worker leads again.
            tracing::error!(group = %self.config.group_id, "{why}: Fjord and Apache Kafka Connect workers cannot share a group (give them different group.id values); this worker runs nothing and joins again in 5 s");
            let all: Vec<Unit> = units_of(&std::mem::take(&mut self.owned))
                .into_iter()
                .collect();
            if !all.is_empty() {
                self.rt.block_on(self.worker.group_revoke(&all));
            }
            self.pause(Duration::from_secs(5));
            return Err(Step::Rejoin);
        }
        if again {
            return Ok(());
        }
        self.applied = self.generation;
        self.apply(a, is_leader, owners);
        Ok(())
    }

    /// The leader's part: reads the config topic and assigns its connectors to the members.
    #[allow(clippy::type_complexity)]
    fn lead(
        &mut self,
        members: &[kafka_protocol::messages::join_group_response::JoinGroupResponseMember],
        protocol: &str,
        version: i16,
    ) -> Result<(Vec<SyncGroupRequestAssignment>, BTreeMap<Unit, String>), String> {
        let stored = ConfigLog::load(&self.config.bootstrap, &self.config.config_topic)
            .map_err(|e| e.to_string())?;
        let mut connectors: BTreeSet<Unit> = BTreeSet::new();
        let mut tasks: BTreeSet<Unit> = BTreeSet::new();
        for (c, s) in &stored {
            if c.len() > MAX_STR {
                tracing::warn!(group = %self.config.group_id, "connector {}... has a name of {} bytes, longer than Connect's protocol carries ({MAX_STR}); it runs nowhere: delete it", c.chars().take(40).collect::<String>(), c.len());
                continue;
            }
            connectors.insert((c.clone(), CONNECTOR_TASK));
            for id in 0..crate::worker::stored_task_count(&s.config, s.target) {
                tasks.insert((c.clone(), id as i32));
            }
        }
        let mut ms = Vec::new();
        for m in members {
            // One unreadable member must not stop the whole group: it is left out of this round (it gets
            // nothing, and its SyncGroup answer is empty, which makes it join again).
            let state = match decode_metadata(&m.metadata) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(group = %self.config.group_id, "member {} sent metadata that is not Connect's ({e}); protocol {protocol}; it gets nothing this round", m.member_id.as_str());
                    continue;
                }
            };
            if state.config_offset != -1 {
                // Fjord's workers send -1; Apache Connect's send their config topic offset.
                tracing::error!(group = %self.config.group_id, "member {} ({}) is not a Fjord worker (it reports config offset {}: an Apache Kafka Connect worker?); Fjord and Apache Connect workers cannot share a group, so it gets nothing (give it another group.id)", m.member_id.as_str(), state.url, state.config_offset);
                continue;
            }
            ms.push(Member {
                id: m.member_id.to_string(),
                url: state.url,
                owned: units_of(&state.owned),
            });
        }
        // The leader first: it takes ties.
        ms.sort_by_key(|m| (m.id != self.member_id, m.id.clone()));
        let plan = assign_units(
            &ms,
            &connectors,
            &tasks,
            [&mut self.leader_state, &mut self.task_leader_state],
            Instant::now(),
            Duration::from_millis(self.config.max_delay_ms),
        );
        let urls: BTreeMap<&str, &str> =
            ms.iter().map(|m| (m.id.as_str(), m.url.as_str())).collect();
        let owners = plan
            .owners
            .iter()
            .map(|(u, m)| (u.clone(), url_to_addr(urls[m.as_str()])))
            .collect();
        let delay_ms = plan.delay_ms;
        let mut out = Vec::new();
        for (id, p) in &plan.members {
            let a = Assignment {
                version,
                error: 0,
                leader: self.member_id.clone(),
                leader_url: self.config.url.clone(),
                config_offset: -1,
                assigned: tasks_of(&p.added),
                revoked: tasks_of(&p.revoked),
                delay_ms,
            };
            let bytes = encode_assignment(&a)?;
            out.push(
                SyncGroupRequestAssignment::default()
                    .with_member_id(str_bytes(id))
                    .with_assignment(Bytes::from(bytes)),
            );
        }
        tracing::info!(group = %self.config.group_id, generation = self.generation, members = ms.len(), connectors = connectors.len(), tasks = tasks.len(), delay_ms, "assigned the group's connectors and tasks");
        Ok((out, owners))
    }

    /// Applies an assignment: stops what is revoked, reads the configs and (for what is added) the offsets, and
    /// runs what this worker now owns.
    fn apply(&mut self, a: Assignment, is_leader: bool, owners: BTreeMap<Unit, String>) {
        let revoked: Vec<Unit> = units_of(&a.revoked).into_iter().collect();
        let mut owned = units_of(&self.owned);
        if !revoked.is_empty() {
            for u in &revoked {
                owned.remove(u);
            }
            self.owned = tasks_of(&owned);
            self.rt.block_on(self.worker.group_revoke(&revoked));
        }
        // Added tasks start from what their previous worker committed: their connectors' offsets are read
        // again, unless a task of the connector runs here already (its unflushed offsets are newer).
        let runs_a_task = |c: &str| owned.iter().any(|(o, id)| o == c && *id != CONNECTOR_TASK);
        let added: Vec<String> = units_of(&a.assigned)
            .into_iter()
            .filter(|(c, id)| *id != CONNECTOR_TASK && !runs_a_task(c.as_str()))
            .map(|(c, _)| c)
            .collect::<BTreeSet<String>>()
            .into_iter()
            .collect();
        let before = owned.clone();
        owned.extend(units_of(&a.assigned));
        self.owned = tasks_of(&owned);
        if !added.is_empty() {
            if let Err(e) = self.worker.offsets.reload_connectors(
                &self.config.bootstrap,
                &self.config.offset_topic,
                &added,
            ) {
                tracing::warn!("cannot read the offsets topic yet ({e}); joining again");
                self.owned = tasks_of(&before);
                self.rejoin.store(true, Ordering::SeqCst);
                self.pause(Duration::from_millis(500));
                return;
            }
        }
        // Counted before the read: a change written meanwhile makes `group_assign` leave the connectors be.
        let config_writes = self.worker.config_writes();
        let stored = match ConfigLog::load(&self.config.bootstrap, &self.config.config_topic) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot read the config topic yet ({e}); joining again");
                self.owned = tasks_of(&before);
                self.rejoin.store(true, Ordering::SeqCst);
                self.pause(Duration::from_millis(500));
                return;
            }
        };
        let view = GroupView {
            leader: Some(url_to_addr(&a.leader_url)),
            is_leader,
            mine: units_of(&self.owned),
            owners,
            generation: self.generation,
        };
        tracing::info!(group = %self.config.group_id, generation = self.generation, leader = is_leader, runs = ?view.mine, revoked = ?revoked, "rebalance complete");
        self.rt
            .block_on(self.worker.group_assign(stored, view, config_writes));
        if !revoked.is_empty() {
            // The revoked connectors are stopped: the next round can give them to another worker.
            self.rejoin.store(true, Ordering::SeqCst);
        } else if a.delay_ms > 0 {
            self.rejoin_at = Some(Instant::now() + Duration::from_millis(a.delay_ms as u64));
        }
    }

    /// The membership is gone (session expired): everything this worker ran may be running elsewhere by now.
    fn lose_membership(&mut self) {
        self.member_id.clear();
        self.generation = -1;
        if !self.owned.is_empty() {
            tracing::warn!(group = %self.config.group_id, "this worker's group membership expired; stopping its connectors before joining again");
        }
        self.drop_work();
    }

    /// Heartbeats until a rebalance is needed.
    fn heartbeats(&mut self) -> Step {
        let interval = Duration::from_millis(self.config.heartbeat_interval_ms.max(10));
        let mut next = Instant::now() + interval;
        loop {
            if self.stopped() {
                return Step::Rejoin;
            }
            if self.rejoin.load(Ordering::SeqCst)
                || self.rejoin_at.is_some_and(|t| Instant::now() >= t)
            {
                return Step::Rejoin;
            }
            if Instant::now() < next {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            next = Instant::now() + interval;
            let req = HeartbeatRequest::default()
                .with_group_id(GroupId(str_bytes(&self.config.group_id)))
                .with_generation_id(self.generation)
                .with_member_id(str_bytes(&self.member_id));
            // A heartbeat that hangs must not keep the work running past `lost_after`.
            let timeout =
                lost_after(self.config.session_timeout_ms).max(Duration::from_millis(500));
            let conn = self.conn.as_mut().expect("connected");
            match conn.send(&req, HEARTBEAT_VERSION, timeout) {
                Err(e) => return Step::Reconnect(e),
                Ok(r) => match r.error_code {
                    0 => self.last_ok = Instant::now(),
                    REBALANCE_IN_PROGRESS => return Step::Rejoin,
                    UNKNOWN_MEMBER_ID | ILLEGAL_GENERATION => {
                        self.lose_membership();
                        return Step::Rejoin;
                    }
                    e => return Step::Reconnect(format!("Heartbeat error {e}")),
                },
            }
        }
    }

    fn leave(&mut self) {
        if self.member_id.is_empty() {
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let req = LeaveGroupRequest::default()
            .with_group_id(GroupId(str_bytes(&self.config.group_id)))
            .with_members(vec![
                MemberIdentity::default().with_member_id(str_bytes(&self.member_id))
            ]);
        match conn.send(&req, LEAVE_VERSION, Duration::from_secs(3)) {
            Ok(r) if r.error_code == 0 => {
                tracing::info!(group = %self.config.group_id, "left the group")
            }
            Ok(r) => {
                tracing::warn!(group = %self.config.group_id, "LeaveGroup answered error {}", r.error_code)
            }
            Err(e) => tracing::warn!(group = %self.config.group_id, "LeaveGroup failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(xs: &[&str]) -> BTreeSet<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    fn member(id: &str, owned: &[&str]) -> Member {
        Member {
            id: id.into(),
            url: format!("http://{id}:8083/"),
            owned: set(owned),
        }
    }

    #[test]
    fn a_worker_cut_off_from_its_coordinator_gives_its_work_up_before_the_session_can_expire() {
        let t0 = Instant::now();
        // Connect's default session (10 s): the work stops 5 s after the coordinator's last answer.
        assert!(!coordinator_lost(
            t0,
            t0 + Duration::from_millis(4_999),
            10_000
        ));
        assert!(coordinator_lost(t0, t0 + Duration::from_secs(5), 10_000));
        assert!(coordinator_lost(t0, t0 + Duration::from_secs(3), 6_000));
        // A clock read before last_ok is not "lost".
        assert!(!coordinator_lost(t0 + Duration::from_secs(1), t0, 10_000));
    }

    #[test]
    fn an_over_long_name_is_an_error_not_a_wrapped_length() {
        let long = "x".repeat(MAX_STR + 1);
        let a = Assignment {
            version: 1,
            assigned: [(long.clone(), vec![-1, 0])].into(),
            ..Default::default()
        };
        let e = encode_assignment(&a).unwrap_err();
        assert!(e.contains("32768 bytes") && e.contains("32767"), "{e}");
        let state = WorkerState {
            url: long,
            config_offset: -1,
            owned: Tasks::new(),
        };
        assert!(encode_metadata(2, &state).is_err());
        // The longest name that fits still round-trips.
        let fits = Assignment {
            version: 1,
            assigned: [("y".repeat(MAX_STR), vec![-1, 0])].into(),
            ..Default::default()
        };
        assert_eq!(
            decode_assignment(&encode_assignment(&fits).unwrap()).unwrap(),
            fits
        );
    }

    #[tokio::test]
    async fn creating_a_connector_whose_name_the_protocol_cannot_carry_is_a_400_naming_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let worker = crate::worker::test_worker(dir.path());
        let config = |name: String| -> crate::config::ConfigMap {
            [
                ("name".to_string(), name),
                ("connector.class".into(), "FileStreamSource".into()),
                ("file".into(), dir.path().join("in").display().to_string()),
                ("topic".into(), "t".into()),
            ]
            .into_iter()
            .collect()
        };
        let e = worker
            .create(
                config("x".repeat(MAX_STR + 1)),
                crate::worker::TargetState::Stopped,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&e, crate::error::Error::BadRequest(m) if m.contains("32768 bytes") && m.contains("32767")),
            "{e:?}"
        );
    }

    #[test]
    fn an_assignment_not_made_by_a_fjord_leader_is_not_run() {
        let fjord = Assignment {
            version: 1,
            leader: "m1".into(),
            leader_url: "http://h:1/".into(),
            config_offset: -1,
            assigned: [("a".to_string(), vec![-1, 0])].into(),
            revoked: [("b".to_string(), vec![-1, 0])].into(),
            ..Assignment::default()
        };
        assert_eq!(foreign(&fjord), None);
        // What an Apache Kafka Connect leader sends: its config offset.
        let offset = Assignment {
            config_offset: 12,
            ..fjord.clone()
        };
        assert!(foreign(&offset).unwrap().contains("config offset 12"));
        // A Fjord leader assigns connectors and tasks apart too (tasks.max > 1).
        for tasks in [vec![-1], vec![0], vec![-1, 0, 1], vec![1]] {
            let a = Assignment {
                assigned: [("a".to_string(), tasks.clone())].into(),
                ..fjord.clone()
            };
            assert_eq!(foreign(&a), None, "{tasks:?}");
        }
        let mismatch = Assignment {
            error: 1,
            ..fjord.clone()
        };
        assert!(foreign(&mismatch).unwrap().contains("error 1"));
    }

    #[test]
    fn metadata_and_assignment_round_trip_in_connects_layout() {
        let a = Assignment {
            version: 1,
            error: 0,
            leader: "m1".into(),
            leader_url: "http://h:1/".into(),
            config_offset: 7,
            assigned: [("a".to_string(), vec![-1, 0])].into(),
            revoked: [("b".to_string(), vec![-1, 0])].into(),
            delay_ms: 300,
        };
        let b = encode_assignment(&a).unwrap();
        // version 1, error 0, "m1", "http://h:1/", offset 7, then [("a", [-1, 0])].
        let mut expected = vec![0, 1, 0, 0, 0, 2, b'm', b'1', 0, 11];
        expected.extend(b"http://h:1/");
        expected.extend(7i64.to_be_bytes());
        expected.extend([0, 0, 0, 1, 0, 1, b'a', 0, 0, 0, 2]);
        expected.extend((-1i32).to_be_bytes());
        expected.extend(0i32.to_be_bytes());
        assert_eq!(&b[..expected.len()], &expected[..]);
        assert_eq!(decode_assignment(&b).unwrap(), a);
        // A v0 assignment (no revoked, no delay) reads with their defaults.
        let v0 = Assignment {
            version: 0,
            revoked: Tasks::new(),
            delay_ms: 0,
            ..a.clone()
        };
        assert_eq!(
            decode_assignment(&encode_assignment(&v0).unwrap()).unwrap(),
            v0
        );
        let state = WorkerState {
            url: "http://w:2/".into(),
            config_offset: -1,
            owned: a.assigned.clone(),
        };
        for v in [1, 2] {
            let m = encode_metadata(v, &state).unwrap();
            assert_eq!(&m[..2], &v.to_be_bytes());
            assert_eq!(decode_metadata(&m).unwrap(), state);
        }
        // No current assignment: a null allocation.
        let empty = WorkerState {
            owned: Tasks::new(),
            ..state
        };
        let m = encode_metadata(2, &empty).unwrap();
        assert_eq!(&m[m.len() - 4..], &(-1i32).to_be_bytes());
        assert_eq!(decode_metadata(&m).unwrap(), empty);
        // Short or hostile input is an error, never a panic.
        for cut in 0..b.len() {
            let _ = decode_assignment(&b[..cut]);
        }
        assert!(decode_metadata(&[0, 1, 0, 5, b'a']).is_err());
    }

    #[test]
    fn new_connectors_are_spread_and_a_joining_worker_gets_its_share_in_two_rounds() {
        let mut st = LeaderState::default();
        let now = Instant::now();
        let cs = set(&["a", "b", "c", "d"]);
        let p = assign(&[member("w1", &[])], &cs, &mut st, now, Duration::ZERO);
        assert_eq!(p.members["w1"].added, cs);
        // w2 joins: w1 gives up two (revoked), nobody gets them this round.
        let ms = [member("w1", &["a", "b", "c", "d"]), member("w2", &[])];
        let p = assign(&ms, &cs, &mut st, now, Duration::ZERO);
        assert_eq!(p.members["w1"].revoked.len(), 2);
        assert!(p.members["w2"].added.is_empty());
        let kept: Vec<&str> = cs
            .iter()
            .filter(|c| !p.members["w1"].revoked.contains(*c))
            .map(String::as_str)
            .collect();
        // Next round: w2 gets what w1 gave up; nothing else moves.
        let ms = [member("w1", &kept), member("w2", &[])];
        let p = assign(&ms, &cs, &mut st, now, Duration::ZERO);
        assert!(p.members["w1"].revoked.is_empty() && p.members["w1"].added.is_empty());
        assert_eq!(p.members["w2"].added.len(), 2);
        assert_eq!(p.owners.len(), 4);
    }

    /// A sink's three tasks are spread over two workers (balanced apart from the connectors), a joining worker
    /// gets its share of tasks in two rounds, and a lower task count revokes the tasks that are gone. On the old
    /// code a connector and its one task were one unit: every task ran where the connector did.
    #[test]
    fn a_connectors_tasks_are_spread_over_the_workers_and_removed_ones_revoked() {
        let unit = |c: &str, id: i32| (c.to_string(), id);
        let m = |id: &str, owned: &[(&str, i32)]| Member {
            id: id.into(),
            url: format!("http://{id}:8083/"),
            owned: owned.iter().map(|(c, i)| unit(c, *i)).collect(),
        };
        let (mut cs, mut ts) = (LeaderState::default(), LeaderState::default());
        let now = Instant::now();
        let connectors: BTreeSet<Unit> = [unit("fan", -1)].into();
        let tasks: BTreeSet<Unit> = (0..3).map(|i| unit("fan", i)).collect();
        let p = assign_units(
            &[m("w1", &[]), m("w2", &[])],
            &connectors,
            &tasks,
            [&mut cs, &mut ts],
            now,
            Duration::ZERO,
        );
        let w1 = p.members["w1"].added.clone();
        let w2 = p.members["w2"].added.clone();
        assert!(w1.contains(&unit("fan", -1)), "{w1:?}");
        let tasks_of_w = |s: &BTreeSet<Unit>| s.iter().filter(|(_, i)| *i >= 0).count();
        assert_eq!((tasks_of_w(&w1), tasks_of_w(&w2)), (2, 1), "{w1:?} {w2:?}");
        assert_eq!(p.owners.len(), 4);
        // The assignment carries them in Connect's form: the connector and task ids together.
        assert_eq!(tasks_of(&w1)["fan"], [-1, 0, 2]);
        assert_eq!(units_of(&tasks_of(&w1)), w1);

        // A third worker joins: one task is revoked from w1, then assigned to w3.
        let owned1: Vec<(&str, i32)> = w1.iter().map(|(c, i)| (c.as_str(), *i)).collect();
        let owned2: Vec<(&str, i32)> = w2.iter().map(|(c, i)| (c.as_str(), *i)).collect();
        let p = assign_units(
            &[m("w1", &owned1), m("w2", &owned2), m("w3", &[])],
            &connectors,
            &tasks,
            [&mut cs, &mut ts],
            now,
            Duration::ZERO,
        );
        let revoked = p.members["w1"].revoked.clone();
        assert_eq!(revoked.len(), 1, "{p:?}");
        assert!(p.members["w3"].added.is_empty());
        let kept: Vec<(&str, i32)> = owned1
            .iter()
            .filter(|(c, i)| !revoked.contains(&unit(c, *i)))
            .cloned()
            .collect();
        let p = assign_units(
            &[m("w1", &kept), m("w2", &owned2), m("w3", &[])],
            &connectors,
            &tasks,
            [&mut cs, &mut ts],
            now,
            Duration::ZERO,
        );
        assert_eq!(p.members["w3"].added, revoked);

        // tasks.max lowered to 1: tasks 1 and 2 are revoked wherever they run.
        let fewer: BTreeSet<Unit> = [unit("fan", 0)].into();
        let all = [
            m("w1", &[("fan", -1), ("fan", 0), ("fan", 2)]),
            m("w2", &[("fan", 1)]),
        ];
        let p = assign_units(
            &all,
            &connectors,
            &fewer,
            [&mut cs, &mut ts],
            now,
            Duration::ZERO,
        );
        assert_eq!(p.members["w1"].revoked, [unit("fan", 2)].into());
        assert_eq!(p.members["w2"].revoked, [unit("fan", 1)].into());
        assert!(p.members.values().all(|p| p.added.is_empty()));
    }

    #[test]
    fn a_departed_workers_connectors_wait_for_the_delay_then_move() {
        let mut st = LeaderState::default();
        let t0 = Instant::now();
        let cs = set(&["a", "b"]);
        let d = Duration::from_secs(10);
        let ms = [member("w1", &["a"]), member("w2", &["b"])];
        assign(&ms, &cs, &mut st, t0, d);
        // w2 dies: b waits.
        let p = assign(
            &[member("w1", &["a"])],
            &cs,
            &mut st,
            t0 + Duration::from_secs(1),
            d,
        );
        assert!(p.members["w1"].added.is_empty());
        // The delay counts from when the leader saw the worker gone.
        assert_eq!(p.delay_ms, 10_000);
        // Still waiting a bit later (the deadline does not move), then b moves.
        let p = assign(
            &[member("w1", &["a"])],
            &cs,
            &mut st,
            t0 + Duration::from_secs(5),
            d,
        );
        assert_eq!(p.delay_ms, 6_000);
        let p = assign(
            &[member("w1", &["a"])],
            &cs,
            &mut st,
            t0 + Duration::from_secs(11),
            d,
        );
        assert_eq!(p.members["w1"].added, set(&["b"]));
        assert_eq!(p.delay_ms, 0);
        // A deleted connector is revoked from whoever runs it; one claimed twice stays with the first.
        let ms = [member("w1", &["a", "b", "gone"]), member("w3", &["a"])];
        let p = assign(&ms, &cs, &mut st, t0, d);
        assert!(p.members["w1"].revoked.contains("gone"));
        assert_eq!(p.members["w3"].revoked, set(&["a"]));
    }
}
