//! What the compatibility walks share: the difference record and its context (JSON Schema and Protobuf list
//! differences the way Confluent's providers do), and the walk's memo and budget (all three formats).
//!
//! A schema is the client's input, and a few kilobytes of it can describe a graph whose naive walk is
//! exponential (a diamond of types, each referring twice to the next) or deep enough to overflow the stack
//! (a chain of thousands of message types). So every walk:
//! - memoises each (original, update) pair for the walk: a pair met again costs a map read, and a pair met
//!   again while it is still being compared (a recursive type) counts as compatible, its other parts being
//!   checked where the recursion started. A "compatible" that leaned on such an unfinished pair further up is
//!   not remembered (the lowest in-progress depth a pair's walk hit is tracked, as in Tarjan's algorithm):
//!   the unfinished pair may still turn out incompatible, and a trial that is then discarded (a union branch,
//!   an anyOf alternative) must not leave a stale "compatible" for the kept path. An incompatibility is
//!   always remembered;
//! - stops when it has visited [`MAX_VISITS`] pairs or nests [`MAX_DEPTH`] pairs deep, or when the request's
//!   walks together (every version and direction it checks: one [`Budget`]) passed [`MAX_REQUEST_VISITS`],
//!   and then answers [`TooComplex`] (42201), never "compatible".

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::Hash;
use std::rc::Rc;

/// The most (original, update) pairs one compatibility walk visits (memo hits included): a real schema
/// visits about as many pairs as it has types and subschemas (plus anyOf x anyOf), and a walk that spends
/// the whole budget takes about half a second.
pub const MAX_VISITS: usize = 50_000;
/// The deepest nesting of pairs one walk follows (types within types): far beyond any real schema, well
/// within a 2 MiB thread stack.
pub const MAX_DEPTH: usize = 128;

/// The most steps all the walks of one request take together (a check against every version of a subject,
/// in both directions): a few times one walk's, so that a subject's real history fits and a request costs
/// seconds at most however many versions it is compared with.
pub const MAX_REQUEST_VISITS: usize = 4 * MAX_VISITS;

/// The budget one request's walks share (cloned into each walk): the steps spent so far.
#[derive(Clone, Default)]
pub struct Budget(Rc<Cell<usize>>);

impl Budget {
    /// Spends `steps`; false once the request has spent more than [`MAX_REQUEST_VISITS`].
    fn spend(&self, steps: usize) -> bool {
        let spent = self.0.get().saturating_add(steps);
        self.0.set(spent);
        spent <= MAX_REQUEST_VISITS
    }

    /// Charges work done outside a walk (building a schema's nodes) to the request: Err once it is spent.
    pub(crate) fn charge(&self, steps: usize) -> Result<(), TooComplex> {
        if self.spend(steps) {
            Ok(())
        } else {
            Err(request_too_complex())
        }
    }
}

fn request_too_complex() -> TooComplex {
    TooComplex(format!(
        "the schema is too complex to check for compatibility with the subject's versions: the comparisons take more than {MAX_REQUEST_VISITS} steps in all; simplify the schema or check it against fewer versions (a non-transitive compatibility level)"
    ))
}

/// A walk that exceeded its budget; the message says which and what to do (an answer for 42201).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TooComplex(pub String);

impl std::fmt::Display for TooComplex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What [`Walk::enter`] decided about a pair.
pub enum Visit<V> {
    /// A new pair: walk it, then call [`Walk::leave`].
    Walk,
    /// Already being compared further up (a cycle), or the budget is spent: nothing to walk or record.
    Skip,
    /// Compared before, with this result.
    Known(V),
}

enum Memo<V> {
    /// Being compared, at this depth of the walk (1 for the outermost pair).
    InProgress(usize),
    Done(V),
}

/// The memo and budget of one compatibility walk. `K` identifies a pair, `V` is what the walk remembers of
/// its result (the first incompatibility, or none).
pub struct Walk<K, V> {
    memo: HashMap<K, Memo<V>>,
    visits: usize,
    depth: usize,
    /// Per pair being compared (innermost last): the lowest depth of an in-progress pair its walk met again
    /// (`usize::MAX` when none).
    lows: Vec<usize>,
    exceeded: Option<TooComplex>,
    /// The request's budget, shared with its other walks.
    budget: Budget,
}

impl<K: Hash + Eq + Clone, V: Clone> Default for Walk<K, V> {
    fn default() -> Self {
        Walk::within(Budget::default())
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Walk<K, V> {
    /// A walk that also spends from a request's `budget`.
    pub fn within(budget: Budget) -> Self {
        Walk {
            memo: HashMap::new(),
            visits: 0,
            depth: 0,
            lows: Vec::new(),
            exceeded: None,
            budget,
        }
    }

    pub fn enter(&mut self, key: &K) -> Visit<V> {
        if self.exceeded.is_some() {
            return Visit::Skip;
        }
        self.visits += 1;
        if self.visits > MAX_VISITS {
            self.exceeded = Some(TooComplex(format!(
                "the schema is too complex to check for compatibility: comparing it with an earlier version takes more than {MAX_VISITS} steps; simplify its combinations (anyOf/oneOf/allOf, unions) or shared types"
            )));
            return Visit::Skip;
        }
        if !self.budget.spend(1) {
            self.exceeded = Some(request_too_complex());
            return Visit::Skip;
        }
        match self.memo.get(key) {
            Some(Memo::InProgress(d)) => {
                let d = *d;
                if let Some(low) = self.lows.last_mut() {
                    *low = (*low).min(d);
                }
                return Visit::Skip;
            }
            Some(Memo::Done(v)) => return Visit::Known(v.clone()),
            None => {}
        }
        if self.depth >= MAX_DEPTH {
            self.exceeded = Some(TooComplex(format!(
                "the schema is too deep to check for compatibility: its types nest more than {MAX_DEPTH} levels deep"
            )));
            return Visit::Skip;
        }
        self.depth += 1;
        self.lows.push(usize::MAX);
        self.memo.insert(key.clone(), Memo::InProgress(self.depth));
        Visit::Walk
    }

    /// Counts `steps` of work that is not a pair (matching a name against many patterns) against the
    /// budget; false once the budget is spent.
    pub fn charge(&mut self, steps: usize) -> bool {
        self.visits = self.visits.saturating_add(steps);
        if !self.budget.spend(steps) && self.exceeded.is_none() {
            self.exceeded = Some(request_too_complex());
        }
        if self.visits > MAX_VISITS && self.exceeded.is_none() {
            self.exceeded = Some(TooComplex(format!(
                "the schema is too complex to check for compatibility: comparing it with an earlier version takes more than {MAX_VISITS} steps; simplify its combinations (anyOf/oneOf/allOf, unions), patterns or shared types"
            )));
        }
        self.exceeded.is_none()
    }

    /// The pair `key` (the innermost one entered) is compared; `compatible` says whether `result` is the
    /// "nothing found" answer, which is remembered only when it did not lean on an unfinished pair further up.
    pub fn leave(&mut self, key: K, result: V, compatible: bool) {
        let own = self.depth;
        self.depth -= 1;
        let low = self.lows.pop().unwrap_or(usize::MAX);
        if low < own {
            // What it met unfinished further up is unfinished for its callers too.
            if let Some(parent) = self.lows.last_mut() {
                *parent = (*parent).min(low);
            }
            if compatible {
                self.memo.remove(&key);
                return;
            }
        }
        self.memo.insert(key, Memo::Done(result));
    }

    /// The budget is spent: loops over many pairs stop early.
    pub fn exhausted(&self) -> bool {
        self.exceeded.is_some()
    }

    pub fn result(&self) -> Result<(), TooComplex> {
        match &self.exceeded {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

/// One difference between two versions: Confluent's type name and the path where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub kind: &'static str,
    pub path: String,
}

impl Difference {
    /// Confluent's rendering of an incompatibility in a 409 message and in `verbose` answers.
    pub fn render(&self, description: &str) -> String {
        format!(
            "{{errorType:\"{}\", description:\"{description}\"}}",
            self.kind
        )
    }
}

/// The context of a difference walk: where it is, what it found, and the walk it belongs to (shared by
/// the sub-contexts that try a comparison before keeping its result).
pub struct Ctx<K> {
    pub path: Vec<String>,
    pub found: Vec<Difference>,
    compatible_kind: fn(&str) -> bool,
    walk: Rc<RefCell<Walk<K, FirstIncompatibility>>>,
}

/// What the memo of a difference walk remembers of a pair: its first incompatibility, as its kind and its
/// path below the pair.
type FirstIncompatibility = Option<(&'static str, String)>;

impl<K: Hash + Eq + Clone> Ctx<K> {
    /// A walk whose differences of a kind `compatible_kind` accepts are compatible.
    pub fn new(compatible_kind: fn(&str) -> bool) -> Ctx<K> {
        Ctx::within(compatible_kind, Budget::default())
    }

    /// A walk that also spends from a request's `budget`.
    pub fn within(compatible_kind: fn(&str) -> bool, budget: Budget) -> Ctx<K> {
        Ctx {
            path: Vec::new(),
            found: Vec::new(),
            compatible_kind,
            walk: Rc::new(RefCell::new(Walk::within(budget))),
        }
    }

    /// A context of the same walk at `path`, with nothing found yet.
    pub fn at(&self, path: Vec<String>) -> Ctx<K> {
        Ctx {
            path,
            found: Vec::new(),
            compatible_kind: self.compatible_kind,
            walk: self.walk.clone(),
        }
    }

    /// A context of the same walk at the same path, with nothing found yet.
    pub fn sub(&self) -> Ctx<K> {
        self.at(self.path.clone())
    }

    pub fn location(&self) -> String {
        format!("#/{}", self.path.join("/"))
    }

    pub fn add(&mut self, kind: &'static str) {
        let path = self.location();
        self.found.push(Difference { kind, path });
    }

    pub fn add_at(&mut self, segment: &str, kind: &'static str) {
        self.path.push(segment.to_string());
        self.add(kind);
        self.path.pop();
    }

    pub fn scoped(&mut self, segment: &str, f: impl FnOnce(&mut Ctx<K>)) {
        self.path.push(segment.to_string());
        f(self);
        self.path.pop();
    }

    pub fn compatible(&self) -> bool {
        self.found.iter().all(|d| (self.compatible_kind)(d.kind))
    }

    /// Compares the pair `key` with `f`, once per walk: a pair compared before adds its first
    /// incompatibility (if it had one) here, at the same place below this one; a pair being compared
    /// further up adds nothing.
    pub fn pair(&mut self, key: K, f: impl FnOnce(&mut Ctx<K>)) {
        let visit = self.walk.borrow_mut().enter(&key);
        match visit {
            Visit::Skip | Visit::Known(None) => {}
            Visit::Known(Some((kind, below))) => {
                let here = self.location();
                let path = match (below.is_empty(), here.ends_with('/')) {
                    (true, _) => here,
                    (false, true) => format!("{here}{below}"),
                    (false, false) => format!("{here}/{below}"),
                };
                self.found.push(Difference { kind, path });
            }
            Visit::Walk => {
                let start = self.found.len();
                f(self);
                let here = self.location();
                let first = self.found[start..]
                    .iter()
                    .find(|d| !(self.compatible_kind)(d.kind))
                    .map(|d| {
                        let below = d.path.strip_prefix(&here).unwrap_or_default();
                        (d.kind, below.trim_start_matches('/').to_string())
                    });
                let compatible = first.is_none();
                self.walk.borrow_mut().leave(key, first, compatible);
            }
        }
    }

    /// The budget is spent: loops over many pairs stop early.
    pub fn exhausted(&self) -> bool {
        self.walk.borrow().exhausted()
    }

    /// Counts `steps` of work that is not a pair against the walk's budget; false once it is spent.
    pub fn charge(&mut self, steps: usize) -> bool {
        self.walk.borrow_mut().charge(steps)
    }

    /// Every difference found, or why the walk stopped.
    pub fn finish(self) -> Result<Vec<Difference>, TooComplex> {
        self.walk.borrow().result()?;
        Ok(self.found)
    }
}
