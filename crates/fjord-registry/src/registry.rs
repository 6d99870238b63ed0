//! The registry's operations, independent of HTTP: what each REST call reads from the state and writes to
//! the store.
//!
//! Writes are serialized by `write_lock` and answered only once the record is applied to the state (the
//! store's contract), so each write sees the effects of the previous one: that is what makes ids unique. A
//! write begins with [`Registry::begin_write`], which takes the lock and the primary's producer together
//! before the state is read; all of an operation's records go through that producer, in one transaction.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde_json::{json, Value};

use crate::context::{
    context_of, context_prefix, normalize, qualify_reference, Qualified, DEFAULT_CONTEXT,
    GLOBAL_CONTEXT, WILDCARD,
};
use crate::diff::Budget;
use crate::error::{Error, Result};
use crate::formats::{Format, ParsedSchema};
use crate::lookup_cache::LookupCache;
use crate::records::{
    ConfigValue, ContextValue, DeleteSubjectValue, Key, ModeValue, Record, Reference, SchemaValue,
    DEFAULT_TENANT,
};
use crate::state::{identity, with_contract, SchemaEntry, State};
use crate::store::{Store, Writer};

pub const DEFAULT_COMPATIBILITY: &str = "BACKWARD";
pub const DEFAULT_MODE: &str = "READWRITE";
pub const LEVELS: [&str; 7] = [
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
];
pub const MODES: [&str; 4] = ["READWRITE", "READONLY", "READONLY_OVERRIDE", "IMPORT"];

/// `latest` (or -1) or a version number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionSpec {
    Latest,
    Number(i32),
}

impl VersionSpec {
    pub fn parse(s: &str) -> Result<VersionSpec> {
        if s == "latest" {
            return Ok(VersionSpec::Latest);
        }
        match s.parse::<i32>() {
            Ok(-1) => Ok(VersionSpec::Latest),
            Ok(n) if n >= 1 => Ok(VersionSpec::Number(n)),
            _ => Err(Error::InvalidVersion(s.to_string())),
        }
    }
}

/// The body of a registration, a lookup or a compatibility check.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct SchemaRequest {
    pub schema: Option<String>,
    #[serde(rename = "schemaType")]
    pub schema_type: Option<String>,
    #[serde(default)]
    pub references: Option<Vec<Reference>>,
    /// IMPORT mode only: the id and version the schema had in the registry it comes from.
    pub id: Option<i32>,
    pub version: Option<i32>,
    /// Confluent's data contract fields: stored and answered, not enforced. A registration or lookup without
    /// them takes those of the subject's latest version, as Confluent does.
    pub metadata: Option<serde_json::Map<String, Value>>,
    #[serde(rename = "ruleSet")]
    pub rule_set: Option<serde_json::Map<String, Value>>,
}

impl SchemaRequest {
    /// The request's metadata and rule set, else those of the latest live version of `subject`.
    fn contract(&self, st: &State, subject: &str) -> (Option<Value>, Option<Value>) {
        let latest = st.subjects.get(subject).and_then(|vs| {
            let (_, e) = vs.iter().rev().find(|(_, e)| !e.deleted)?;
            st.schema(&context_of(subject), e.id)
        });
        let metadata = match &self.metadata {
            Some(m) => Some(Value::Object(m.clone())),
            None => latest.and_then(|l| l.metadata.clone()),
        };
        let rule_set = match &self.rule_set {
            Some(r) => Some(Value::Object(r.clone())),
            None => latest.and_then(|l| l.rule_set.clone()),
        };
        (metadata, rule_set)
    }
}

/// One subject-version as the REST API shows it (Confluent's `Schema` entity).
#[derive(Serialize, Debug)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: i32,
    pub id: i32,
    #[serde(rename = "schemaType", skip_serializing_if = "Option::is_none")]
    pub schema_type: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(rename = "ruleSet", skip_serializing_if = "Option::is_none")]
    pub rule_set: Option<Value>,
    pub schema: String,
}

/// One write operation in progress: the registry's write lock and the producer it writes with.
struct WriteGuard<'a> {
    _lock: tokio::sync::MutexGuard<'a, ()>,
    writer: Writer,
}

impl WriteGuard<'_> {
    /// Writes the operation's records, all in one transaction; returns once they are applied.
    async fn write(&self, records: Vec<(Key, Option<Value>)>) -> Result<()> {
        let raw = records
            .into_iter()
            .map(|(key, value)| {
                let key = serde_json::to_vec(&key).map_err(|e| Error::Store(e.to_string()))?;
                let value = value
                    .map(|v| serde_json::to_vec(&v))
                    .transpose()
                    .map_err(|e| Error::Store(e.to_string()))?;
                Ok((key, value))
            })
            .collect::<Result<Vec<_>>>()?;
        self.writer.write(&raw).await
    }
}

pub struct Registry {
    state: Arc<RwLock<State>>,
    store: Store,
    /// One write at a time, from computing the record (a new id, a new version) until the store has applied it.
    write_lock: tokio::sync::Mutex<()>,
    /// The registered identity of each reference-free schema text a lookup (`POST /subjects/{s}`) parsed: a
    /// serializer that does not register looks the same text up for every producer it starts, and parsing it
    /// was half of the request's cost. Bounded in bytes (`lookup_cache`).
    lookup_identities: LookupCache,
}

fn read(state: &RwLock<State>) -> std::sync::RwLockReadGuard<'_, State> {
    // A panic while applying would leave the state half-changed; the apply path does not panic on data, so a
    // poisoned lock is a bug and the state is still the best answer we have.
    state.read().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    pub fn new(state: Arc<RwLock<State>>, store: Store) -> Registry {
        Registry {
            state,
            store,
            write_lock: tokio::sync::Mutex::new(()),
            lookup_identities: LookupCache::default(),
        }
    }

    /// A registry that keeps its records in memory (tests, and nothing else).
    pub fn in_memory() -> Registry {
        let state = Arc::new(RwLock::new(State::default()));
        Registry::new(state.clone(), Store::Memory(state))
    }

    /// Where the records go, and who writes them.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        read(&self.state)
    }

    /// Begins a write: takes the write lock and, with it, the primary's producer, before the operation reads
    /// the state it computes its records from. Every record of the operation goes through this guard (see
    /// [`Writer`]), so that a demotion and re-promotion after the state was read cannot commit them with a
    /// newer producer.
    async fn begin_write(&self) -> Result<WriteGuard<'_>> {
        let lock = self.write_lock.lock().await;
        let writer = self.store.writer()?;
        Ok(WriteGuard {
            _lock: lock,
            writer,
        })
    }

    // ---- reads -------------------------------------------------------------------------------------------

    /// `GET /subjects`: the subjects `prefix` selects (every context by default, `context::matches_prefix`),
    /// qualified, in Confluent's order (by name).
    pub fn subjects(&self, deleted: bool, prefix: Option<&str>) -> Vec<String> {
        let st = self.state();
        let prefix = prefix.unwrap_or(WILDCARD);
        st.subjects
            .iter()
            .filter(|(s, vs)| {
                vs.values().any(|e| deleted || !e.deleted)
                    && crate::context::matches_prefix(s, prefix)
            })
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// `GET /contexts`: the default context and every context created since, by name; `prefix` keeps those
    /// starting with it, then `offset` and `limit` (negative: all) page.
    pub fn contexts(&self, prefix: Option<&str>, offset: usize, limit: i64) -> Vec<String> {
        let st = self.state();
        std::iter::once(DEFAULT_CONTEXT.to_string())
            .chain(st.contexts.iter().cloned())
            .filter(|c| prefix.is_none_or(|p| c.starts_with(p)))
            .skip(offset)
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect()
    }

    pub fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<i32>> {
        let subject = &normalize(subject);
        let st = self.state();
        let vs: Vec<i32> = st
            .subjects
            .get(subject)
            .map(|vs| {
                vs.iter()
                    .filter(|(_, e)| deleted || !e.deleted)
                    .map(|(v, _)| *v)
                    .collect()
            })
            .unwrap_or_default();
        if vs.is_empty() {
            return Err(Error::SubjectNotFound(subject.to_string()));
        }
        Ok(vs)
    }

    /// The version `spec` names: `latest` is the newest live one (or, with `deleted`, the newest of all).
    fn resolve_version(st: &State, subject: &str, spec: VersionSpec, deleted: bool) -> Result<i32> {
        let vs = st
            .subjects
            .get(subject)
            .filter(|vs| vs.values().any(|e| deleted || !e.deleted))
            .ok_or_else(|| Error::SubjectNotFound(subject.to_string()))?;
        match spec {
            VersionSpec::Latest => vs
                .iter()
                .rev()
                .find(|(_, e)| deleted || !e.deleted)
                .map(|(v, _)| *v)
                .ok_or_else(|| Error::VersionNotFound("latest".into())),
            VersionSpec::Number(n) => match vs.get(&n) {
                Some(e) if deleted || !e.deleted => Ok(n),
                _ => Err(Error::VersionNotFound(n.to_string())),
            },
        }
    }

    fn subject_version(st: &State, subject: &str, version: i32) -> Result<SubjectVersion> {
        let (e, s) = st
            .schema_at(subject, version)
            .ok_or_else(|| Error::VersionNotFound(version.to_string()))?;
        Ok(SubjectVersion {
            subject: subject.to_string(),
            version,
            id: e.id,
            schema_type: s.schema_type.clone(),
            references: s.references.clone(),
            metadata: s.metadata.clone(),
            rule_set: s.rule_set.clone(),
            schema: s.schema.clone(),
        })
    }

    pub fn get_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        deleted: bool,
    ) -> Result<SubjectVersion> {
        let subject = &normalize(subject);
        let st = self.state();
        let v = Self::resolve_version(&st, subject, spec, deleted)?;
        Self::subject_version(&st, subject, v)
    }

    pub fn referenced_by(&self, subject: &str, spec: VersionSpec) -> Result<Vec<i32>> {
        let subject = &normalize(subject);
        let st = self.state();
        let v = Self::resolve_version(&st, subject, spec, false)?;
        Ok(st.referenced_by(subject, v))
    }

    /// The context whose schema `id` the `subject` parameter of `/schemas/ids/{id}` selects, as Confluent
    /// finds it: no subject, the default context; a context (`:.ctx:`), that context; a subject of another
    /// context, that subject's version with the id; an unqualified subject, its version with the id in the
    /// default context, else in the first context (by name) where a subject of that name has it, else the
    /// default context.
    fn context_of_id(st: &State, id: i32, subject: Option<&str>) -> Option<String> {
        let uses = |ctx: &str, subject: &str| {
            st.subjects
                .get(subject)
                .is_some_and(|vs| vs.values().any(|e| e.id == id))
                && st.schema(ctx, id).is_some()
        };
        let Some(q) = subject.map(Qualified::parse) else {
            return st
                .schema(DEFAULT_CONTEXT, id)
                .map(|_| DEFAULT_CONTEXT.to_string());
        };
        if q.subject.is_empty() {
            return st.schema(&q.context, id).map(|_| q.context);
        }
        if !q.is_default_context() {
            return uses(&q.context, &q.qualified()).then_some(q.context);
        }
        if uses(DEFAULT_CONTEXT, &q.subject) {
            return Some(DEFAULT_CONTEXT.to_string());
        }
        for ctx in &st.contexts {
            if uses(ctx, &Qualified::new(ctx, &q.subject).qualified()) {
                return Some(ctx.clone());
            }
        }
        st.schema(DEFAULT_CONTEXT, id)
            .map(|_| DEFAULT_CONTEXT.to_string())
    }

    /// `GET /schemas/ids/{id}[?subject=s]`: the schema and the context it was found in.
    pub fn schema_by_id(&self, id: i32, subject: Option<&str>) -> Result<(String, SchemaEntry)> {
        let st = self.state();
        Self::context_of_id(&st, id, subject)
            .and_then(|ctx| Some((ctx.clone(), st.schema(&ctx, id)?.clone())))
            .ok_or_else(|| Error::SchemaNotFound(id.to_string()))
    }

    /// `GET /schemas/ids/{id}/versions[?subject=s]`: the subject-versions of the id's context that use it.
    pub fn id_versions(
        &self,
        id: i32,
        subject: Option<&str>,
        deleted: bool,
    ) -> Result<Vec<(String, i32)>> {
        let st = self.state();
        let ctx = Self::context_of_id(&st, id, subject)
            .ok_or_else(|| Error::SchemaNotFound(id.to_string()))?;
        Ok(st.versions_of(&ctx, id, deleted))
    }

    pub fn global_compatibility(&self) -> String {
        self.state()
            .global_compat
            .clone()
            .unwrap_or_else(|| DEFAULT_COMPATIBILITY.into())
    }

    pub fn subject_compatibility(&self, subject: &str, default_to_global: bool) -> Result<String> {
        let subject = &normalize(subject);
        let st = self.state();
        match st.subject_compat.get(subject) {
            Some(l) => Ok(l.clone()),
            None if default_to_global => Ok(Self::effective_level(&st, subject)),
            None => Err(Error::SubjectConfigNotFound(subject.to_string())),
        }
    }

    /// The setting in force for `subject` in `settings` (compatibility levels or modes), as Confluent looks it
    /// up: the subject's own, else its context's (`:.ctx:`; for the default context the global one), else the
    /// one set for every context (`:.__GLOBAL:`).
    fn in_force<'s>(
        settings: &'s BTreeMap<String, String>,
        global: Option<&'s String>,
        subject: Option<&str>,
    ) -> Option<&'s String> {
        if let Some(found) = subject.and_then(|s| settings.get(s)) {
            return Some(found);
        }
        let ctx = subject.map_or_else(|| DEFAULT_CONTEXT.to_string(), context_of);
        let of_context = if ctx == DEFAULT_CONTEXT {
            global
        } else {
            settings.get(&context_prefix(&ctx))
        };
        of_context.or_else(|| settings.get(&context_prefix(GLOBAL_CONTEXT)))
    }

    fn effective_level(st: &State, subject: &str) -> String {
        Self::in_force(&st.subject_compat, st.global_compat.as_ref(), Some(subject))
            .cloned()
            .unwrap_or_else(|| DEFAULT_COMPATIBILITY.into())
    }

    fn effective_mode(st: &State, subject: Option<&str>) -> String {
        Self::in_force(&st.subject_mode, st.global_mode.as_ref(), subject)
            .cloned()
            .unwrap_or_else(|| DEFAULT_MODE.into())
    }

    pub fn mode(&self, subject: Option<&str>, default_to_global: bool) -> Result<String> {
        let subject = subject.map(normalize);
        let subject = subject.as_deref();
        let st = self.state();
        match subject {
            Some(s) if !default_to_global && !st.subject_mode.contains_key(s) => {
                Err(Error::SubjectModeNotFound(s.to_string()))
            }
            _ => Ok(Self::effective_mode(&st, subject)),
        }
    }

    // ---- schemas -----------------------------------------------------------------------------------------

    /// Parses a request's schema for a subject of `context`, with its references resolved against `st` in that
    /// context. References naming version -1 are pinned to the subject's latest version.
    fn parse_request(
        st: &State,
        context: &str,
        req: &SchemaRequest,
    ) -> Result<(ParsedSchema, Vec<Reference>)> {
        let format =
            Format::from_request(req.schema_type.as_deref()).map_err(Error::InvalidSchema)?;
        let text = match req.schema.as_deref() {
            Some(s) if !s.trim().is_empty() => s,
            _ => return Err(Error::InvalidSchema("(empty schema)".into())),
        };
        let mut refs = req.references.clone().unwrap_or_default();
        for r in &mut refs {
            if r.version == -1 {
                let subject = qualify_reference(context, &r.subject);
                r.version = Self::resolve_version(st, &subject, VersionSpec::Latest, false)
                    .map_err(|_| {
                        Error::InvalidSchema(format!(
                            "{text}: reference {} to subject {} does not exist",
                            r.name, r.subject
                        ))
                    })?;
            }
        }
        let parsed =
            ParsedSchema::parse(format, text, st, context, &refs).map_err(Error::InvalidSchema)?;
        Ok((parsed, refs))
    }

    fn parse_stored(st: &State, context: &str, entry: &SchemaEntry) -> Option<ParsedSchema> {
        let format = Format::from_stored(entry.schema_type.as_deref());
        ParsedSchema::parse(format, &entry.schema, st, context, &entry.references).ok()
    }

    /// A stored schema's text in the `format` a GET asks for: `serialized` turns a PROTOBUF schema into its
    /// base64 `FileDescriptorProto` (what Confluent's Protobuf deserializers ask for), `resolved` an AVRO
    /// schema into one with its referenced named types written out (`ParsedAvro::resolved`); any other
    /// format, and the other types, answer the text as stored (Confluent ignores formats it does not know).
    pub fn formatted(
        &self,
        context: &str,
        schema_type: Option<&str>,
        text: &str,
        references: &[Reference],
        format: Option<&str>,
    ) -> Result<String> {
        let format_type = Format::from_stored(schema_type);
        if format == Some("resolved") && format_type == Format::Avro {
            let st = self.state();
            let entry = SchemaEntry {
                schema: text.to_string(),
                schema_type: None,
                references: references.to_vec(),
                metadata: None,
                rule_set: None,
            };
            return match Self::parse_stored(&st, context, &entry) {
                Some(ParsedSchema::Avro(p)) => p.resolved().map_err(Error::InvalidSchema),
                // A stored text that no longer parses is answered as it is.
                _ => Ok(text.to_string()),
            };
        }
        if format != Some("serialized") || format_type != Format::Protobuf {
            return Ok(text.to_string());
        }
        let st = self.state();
        let refs = st
            .referenced_named(context, references)
            .map_err(|e| Error::InvalidSchema(format!("{text}: {e}")))?;
        crate::protobuf::serialized(text, &refs).map_err(Error::InvalidSchema)
    }

    /// `POST /subjects/{subject}`: the version of `subject` that holds this schema.
    pub fn lookup(
        &self,
        subject: &str,
        req: &SchemaRequest,
        deleted: bool,
    ) -> Result<SubjectVersion> {
        let subject = &normalize(subject);
        let context = context_of(subject);
        let st = self.state();
        let vs = st
            .subjects
            .get(subject)
            .filter(|vs| vs.values().any(|e| deleted || !e.deleted))
            .ok_or_else(|| Error::SubjectNotFound(subject.to_string()))?;
        // Reference-free lookups only: with references the identity depends on what they name.
        let cacheable = match (&req.schema, &req.references) {
            (Some(text), None) => Some(text.as_str()),
            (Some(text), Some(refs)) if refs.is_empty() => Some(text.as_str()),
            _ => None,
        };
        let schema_type = req.schema_type.as_deref();
        let cached =
            cacheable.and_then(|text| self.lookup_identities.get(subject, schema_type, text));
        // The cache keeps content identities (a pure function of the text); the data contract is added here.
        let (metadata, rule_set) = req.contract(&st, subject);
        let id = match cached {
            Some(ident) => st.id_of_identity(
                &context,
                &with_contract(&ident, metadata.as_ref(), rule_set.as_ref()),
            ),
            None => {
                let (parsed, refs) = Self::parse_request(&st, &context, req)?;
                let ident = identity(parsed.format().name(), parsed.canonical(), &refs);
                let id = st.id_of_identity(
                    &context,
                    &with_contract(&ident, metadata.as_ref(), rule_set.as_ref()),
                );
                if let (Some(text), Some(_)) = (cacheable, id) {
                    self.lookup_identities
                        .insert(subject, schema_type, text, &ident);
                }
                id
            }
        };
        let found = vs
            .iter()
            .rev()
            .find(|(_, e)| Some(e.id) == id && (deleted || !e.deleted))
            .map(|(v, _)| *v);
        match found {
            Some(v) => Self::subject_version(&st, subject, v),
            None => Err(Error::SchemaContentNotFound),
        }
    }

    /// Confluent's incompatibility messages of `new` against the live versions the level asks for (or only
    /// `against`), newest first; empty when compatible. A schema too deep or too complex to compare is
    /// 42201, never compatible.
    fn incompatibilities(
        st: &State,
        subject: &str,
        new: &ParsedSchema,
        level: &str,
        against: Option<i32>,
    ) -> Result<Vec<String>> {
        let (backward, forward) = match level {
            "NONE" => return Ok(Vec::new()),
            "BACKWARD" | "BACKWARD_TRANSITIVE" => (true, false),
            "FORWARD" | "FORWARD_TRANSITIVE" => (false, true),
            _ => (true, true),
        };
        let transitive = level.ends_with("_TRANSITIVE");
        let live: Vec<i32> = st
            .subjects
            .get(subject)
            .map(|vs| {
                vs.iter()
                    .rev()
                    .filter(|(_, e)| !e.deleted)
                    .map(|(v, _)| *v)
                    .collect()
            })
            .unwrap_or_default();
        let to_check: Vec<i32> = match against {
            Some(v) => vec![v],
            None if transitive => live,
            None => live.into_iter().take(1).collect(),
        };
        // One budget for every comparison of the request, however many versions and directions; the new
        // schema is prepared once for all of them.
        let budget = Budget::default();
        let prepared = crate::formats::Prepared::new(new);
        let mut messages = Vec::new();
        for v in to_check {
            let Some((_, entry)) = st.schema_at(subject, v) else {
                continue;
            };
            let Some(old) = Self::parse_stored(st, &context_of(subject), entry) else {
                // A stored schema that no longer parses (another type, or a corrupt record) cannot be
                // compared; Confluent would fail the same way, so say so rather than accept silently.
                messages.push(format!(
                    "{{errorType:'TYPE_MISMATCH', description:'The old schema (version {v}) cannot be parsed as {}', additionalInfo:''}}",
                    entry.type_name()
                ));
                continue;
            };
            let found = prepared
                .incompatibilities(&old, backward, forward, &budget)
                .map_err(|e| Error::InvalidSchema(format!("(compared with version {v}): {e}")))?;
            if !found.is_empty() {
                messages.extend(found);
                messages.push(format!("{{oldSchemaVersion: {v}}}"));
                messages.push(format!("{{oldSchema: '{}'}}", entry.schema));
                messages.push(format!(
                    "{{validateFields: 'false', compatibility: '{level}'}}"
                ));
            }
        }
        Ok(messages)
    }

    /// `POST /compatibility/subjects/{subject}/versions[/{version}]`.
    pub fn check_compatibility(
        &self,
        subject: &str,
        version: Option<VersionSpec>,
        req: &SchemaRequest,
    ) -> Result<(bool, Vec<String>)> {
        let subject = &normalize(subject);
        let st = self.state();
        let (parsed, _) = Self::parse_request(&st, &context_of(subject), req)?;
        let against = match version {
            None => None,
            Some(spec) => match Self::resolve_version(&st, subject, spec, false) {
                Ok(v) => Some(v),
                // Checking against the latest version of a subject that has none: anything goes.
                Err(Error::SubjectNotFound(_)) if spec == VersionSpec::Latest => {
                    return Ok((true, Vec::new()))
                }
                Err(e) => return Err(e),
            },
        };
        let level = Self::effective_level(&st, subject);
        // A specific version is compared in the level's direction(s), not transitively.
        let level = match against {
            Some(_) => level.trim_end_matches("_TRANSITIVE").to_string(),
            None => level,
        };
        let messages =
            cpu_bound(|| Self::incompatibilities(&st, subject, &parsed, &level, against))?;
        Ok((messages.is_empty(), messages))
    }

    /// `POST /subjects/{subject}/versions`: the id of the schema, registered as a new version unless the
    /// subject already has it.
    pub async fn register(
        &self,
        subject: &str,
        req: &SchemaRequest,
        normalize_schema: bool,
    ) -> Result<i32> {
        let subject = &normalize(subject);
        let context = context_of(subject);
        let guard = self.begin_write().await?;
        let (value, new_context) = {
            let st = self.state();
            let (parsed, refs) = Self::parse_request(&st, &context, req)?;
            let (metadata, rule_set) = req.contract(&st, subject);
            let content = identity(parsed.format().name(), parsed.canonical(), &refs);
            let ident = with_contract(&content, metadata.as_ref(), rule_set.as_ref()).into_owned();
            let known_id = st.id_of_identity(&context, &ident);
            let versions = st.subjects.get(subject);
            if let (Some(id), Some(vs)) = (known_id, versions) {
                if vs.values().any(|e| e.id == id && !e.deleted) && req.id.is_none_or(|r| r == id) {
                    return Ok(id);
                }
            }
            let mode = Self::effective_mode(&st, Some(subject));
            let importing = mode == "IMPORT";
            if mode == "READONLY" || mode == "READONLY_OVERRIDE" {
                return Err(Error::OperationNotPermitted(format!(
                    "Subject {subject} is in read-only mode"
                )));
            }
            if req.id.is_some() && !importing {
                return Err(Error::OperationNotPermitted(format!(
                    "Subject {subject} is not in import mode: a schema id can only be given in IMPORT mode"
                )));
            }
            let id = if importing {
                let Some(id) = req.id else {
                    return Err(Error::OperationNotPermitted(format!(
                        "Subject {subject} is in import mode: the schema's id is required"
                    )));
                };
                if id < 1 {
                    return Err(Error::UnprocessableEntity(format!(
                        "Invalid schema id {id}"
                    )));
                }
                if let Some(existing) = st.schema(&context, id) {
                    if st.identity_of(&context, existing) != ident {
                        return Err(Error::OperationNotPermitted(format!(
                            "Overwrite new schema with id {id} in context {context} is not permitted."
                        )));
                    }
                }
                id
            } else {
                let level = Self::effective_level(&st, subject);
                let messages =
                    cpu_bound(|| Self::incompatibilities(&st, subject, &parsed, &level, None))?;
                if !messages.is_empty() {
                    return Err(Error::Incompatible(format!(
                        "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]",
                        messages.join(", ")
                    )));
                }
                match known_id {
                    Some(id) => id,
                    None => st.max_id(&context).checked_add(1).ok_or_else(|| {
                        Error::Store("schema ids are exhausted (2^31-1 reached)".into())
                    })?,
                }
            };
            let next_version = versions
                .and_then(|vs| vs.keys().next_back().copied())
                .unwrap_or(0)
                + 1;
            let version = match (importing, req.version) {
                (true, Some(v)) if v >= 1 => {
                    if versions.is_some_and(|vs| vs.contains_key(&v)) {
                        return Err(Error::OperationNotPermitted(format!(
                            "Subject {subject} already has a version {v}"
                        )));
                    }
                    v
                }
                (_, Some(v)) if v < 1 => return Err(Error::InvalidVersion(v.to_string())),
                _ => next_version,
            };
            let schema =
                parsed.text_to_store(req.schema.as_deref().unwrap_or_default(), normalize_schema);
            // The first schema of a context creates it (a CONTEXT record before the schema, as Confluent).
            let new_context = (context != DEFAULT_CONTEXT && !st.contexts.contains(&context))
                .then(|| context.clone());
            let value = SchemaValue {
                subject: subject.to_string(),
                version,
                id,
                schema_type: parsed.format().stored(),
                references: refs,
                metadata,
                rule_set,
                schema,
                deleted: false,
            };
            (value, new_context)
        };
        let id = value.id;
        let mut records = Vec::new();
        if let Some(ctx) = new_context {
            let v = ContextValue {
                tenant: Some(DEFAULT_TENANT.to_string()),
                context: ctx.clone(),
            };
            records.push((Key::context(&ctx), Some(json!(v))));
        }
        records.push((Key::schema(subject, value.version), Some(json!(value))));
        guard.write(records).await?;
        Ok(id)
    }

    fn check_writable(st: &State, subject: &str) -> Result<()> {
        let mode = Self::effective_mode(st, Some(subject));
        if mode == "READONLY" || mode == "READONLY_OVERRIDE" {
            return Err(Error::OperationNotPermitted(format!(
                "Subject {subject} is in read-only mode"
            )));
        }
        Ok(())
    }

    fn check_not_referenced(st: &State, subject: &str, version: i32) -> Result<()> {
        if st.referenced_by(subject, version).is_empty() {
            Ok(())
        } else {
            Err(Error::ReferenceExists(subject.to_string(), version))
        }
    }

    /// `DELETE /subjects/{subject}`: the versions deleted.
    pub async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<i32>> {
        let subject = &normalize(subject);
        let guard = self.begin_write().await?;
        let (versions, latest) = {
            let st = self.state();
            Self::check_writable(&st, subject)?;
            let vs = st
                .subjects
                .get(subject)
                .ok_or_else(|| Error::SubjectNotFound(subject.to_string()))?;
            let live: Vec<i32> = vs
                .iter()
                .filter(|(_, e)| !e.deleted)
                .map(|(v, _)| *v)
                .collect();
            if permanent && !live.is_empty() {
                return Err(Error::SubjectNotSoftDeleted(subject.to_string()));
            }
            if !permanent && live.is_empty() {
                return Err(Error::SubjectSoftDeleted(subject.to_string()));
            }
            for v in vs.keys() {
                Self::check_not_referenced(&st, subject, *v)?;
            }
            let all: Vec<i32> = vs.keys().copied().collect();
            let latest = *all.last().unwrap_or(&0);
            (if permanent { all } else { live }, latest)
        };
        let records = if permanent {
            // One transaction for every version: a fence part-way leaves all of them, never a partial delete.
            versions
                .iter()
                .map(|v| (Key::schema(subject, *v), None))
                .collect()
        } else {
            let value = DeleteSubjectValue {
                subject: subject.to_string(),
                version: latest,
            };
            vec![(Key::delete_subject(subject), Some(json!(value)))]
        };
        guard.write(records).await?;
        Ok(versions)
    }

    /// `DELETE /subjects/{subject}/versions/{version}`: the version deleted.
    pub async fn delete_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        permanent: bool,
    ) -> Result<i32> {
        let subject = &normalize(subject);
        let guard = self.begin_write().await?;
        let value = {
            let st = self.state();
            Self::check_writable(&st, subject)?;
            // A numbered version is found even when soft-deleted, so that deleting it again says so (40406).
            let any = permanent || matches!(spec, VersionSpec::Number(_));
            let version = Self::resolve_version(&st, subject, spec, any)?;
            let (entry, schema) = st
                .schema_at(subject, version)
                .ok_or_else(|| Error::VersionNotFound(version.to_string()))?;
            if permanent && !entry.deleted {
                return Err(Error::VersionNotSoftDeleted(subject.to_string(), version));
            }
            if !permanent && entry.deleted {
                return Err(Error::VersionSoftDeleted(subject.to_string(), version));
            }
            Self::check_not_referenced(&st, subject, version)?;
            (!permanent).then(|| SchemaValue {
                subject: subject.to_string(),
                version,
                id: entry.id,
                schema_type: schema.schema_type.clone(),
                references: schema.references.clone(),
                metadata: schema.metadata.clone(),
                rule_set: schema.rule_set.clone(),
                schema: schema.schema.clone(),
                deleted: true,
            })
        };
        let version = match &value {
            Some(v) => v.version,
            None => Self::resolve_version(&self.state(), subject, spec, true)?,
        };
        guard
            .write(vec![(
                Key::schema(subject, version),
                value.map(|v| json!(v)),
            )])
            .await?;
        Ok(version)
    }

    // ---- config and mode ---------------------------------------------------------------------------------

    pub fn validate_level(level: &str) -> Result<String> {
        let upper = level.to_ascii_uppercase();
        if LEVELS.contains(&upper.as_str()) {
            Ok(upper)
        } else {
            Err(Error::InvalidCompatibilityLevel)
        }
    }

    pub async fn set_compatibility(&self, subject: Option<&str>, level: &str) -> Result<String> {
        let subject = subject.map(normalize);
        let subject = subject.as_deref();
        let level = Self::validate_level(level)?;
        let guard = self.begin_write().await?;
        let value = ConfigValue {
            compatibility_level: Some(level.clone()),
        };
        guard
            .write(vec![(Key::config(subject), Some(json!(value)))])
            .await?;
        Ok(level)
    }

    /// Removes a config; returns the level that was in force.
    pub async fn delete_compatibility(&self, subject: Option<&str>) -> Result<String> {
        let subject = subject.map(normalize);
        let subject = subject.as_deref();
        let guard = self.begin_write().await?;
        let previous = {
            let st = self.state();
            match subject {
                None => st
                    .global_compat
                    .clone()
                    .unwrap_or_else(|| DEFAULT_COMPATIBILITY.into()),
                Some(s) => match st.subject_compat.get(s) {
                    Some(l) => l.clone(),
                    None if !st.subjects.contains_key(s)
                        && !Qualified::parse(s).subject.is_empty() =>
                    {
                        return Err(Error::SubjectNotFound(s.to_string()))
                    }
                    None => return Err(Error::SubjectConfigNotFound(s.to_string())),
                },
            }
        };
        guard.write(vec![(Key::config(subject), None)]).await?;
        Ok(previous)
    }

    pub async fn set_mode(&self, subject: Option<&str>, mode: &str, force: bool) -> Result<String> {
        let subject = subject.map(normalize);
        let subject = subject.as_deref();
        let mode = mode.to_ascii_uppercase();
        if !MODES.contains(&mode.as_str()) {
            return Err(Error::InvalidMode);
        }
        let guard = self.begin_write().await?;
        if mode == "IMPORT" && !force {
            let st = self.state();
            let non_empty = match subject {
                None => !st.subjects.is_empty(),
                // A context (`:.ctx:`): any subject of it.
                Some(s) if Qualified::parse(s).subject.is_empty() => {
                    let ctx = context_of(s);
                    st.subjects.keys().any(|k| context_of(k) == ctx)
                }
                Some(s) => st.subjects.contains_key(s),
            };
            if non_empty {
                return Err(Error::OperationNotPermitted(
                    "Cannot import since found existing subjects".into(),
                ));
            }
        }
        let value = ModeValue { mode: mode.clone() };
        guard
            .write(vec![(Key::mode(subject), Some(json!(value)))])
            .await?;
        Ok(mode)
    }

    /// `DELETE /contexts/{context}`: removes a context that holds no subject any more (not even soft-deleted
    /// ones: delete them permanently first).
    pub async fn delete_context(&self, context: &str) -> Result<()> {
        let context = crate::context::context_name(context).map_err(Error::BadRequest)?;
        let guard = self.begin_write().await?;
        {
            let st = self.state();
            if !st.contexts.contains(&context) {
                return Err(Error::ContextNotFound(context));
            }
            if st.subjects.keys().any(|s| context_of(s) == context) {
                return Err(Error::ContextNotEmpty(context));
            }
        }
        guard.write(vec![(Key::context(&context), None)]).await
    }

    pub async fn delete_mode(&self, subject: &str) -> Result<String> {
        let subject = &normalize(subject);
        let guard = self.begin_write().await?;
        let previous = self
            .state()
            .subject_mode
            .get(subject)
            .cloned()
            .ok_or_else(|| Error::SubjectModeNotFound(subject.to_string()))?;
        guard.write(vec![(Key::mode(Some(subject)), None)]).await?;
        Ok(previous)
    }
}

/// Applies one raw record of `_schemas` to `state` (the one apply path, for the store's reader and for the
/// in-memory store). Returns false when the record does not decode; it is then skipped.
pub fn apply_raw(state: &RwLock<State>, key: &[u8], value: Option<&[u8]>) -> bool {
    match Record::decode(key, value) {
        Ok(record) => {
            state
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .apply(record);
            true
        }
        Err(e) => {
            tracing::warn!(
                key = %String::from_utf8_lossy(key),
                "skipping a _schemas record that does not decode: {e}"
            );
            false
        }
    }
}

impl Registry {
    /// (entries, bytes) the lookup cache holds (for tests and metrics).
    pub fn lookup_cache_usage(&self) -> (usize, usize) {
        self.lookup_identities.usage()
    }
}

/// Runs a CPU-bound compatibility check (seconds at most, by the request's budget) without stalling the
/// async worker's other tasks: on a multi-threaded runtime the worker hands them to another thread for the
/// duration (`block_in_place`); elsewhere (a current-thread runtime, no runtime) it simply runs.
fn cpu_bound<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
