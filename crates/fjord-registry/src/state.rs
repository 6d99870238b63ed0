//! The registry's in-memory state: what applying the `_schemas` topic from its start gives.
//!
//! **Architecture Invariant:** this state changes only by [`State::apply`] of a decoded record, on the same
//! path for a record read at start-up, one written by this registry and one written by anybody else. Ids are
//! assigned from it (`max_id + 1`) by the single writer, under its write lock, after its own previous write was
//! applied, so two registrations never get one id.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::context::{context_of, normalize, qualify_reference};

use crate::records::{Record, Reference, SchemaValue};

/// One version of a subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionEntry {
    pub id: i32,
    pub deleted: bool,
}

/// A schema as registered under an id (the same for every subject-version that uses the id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaEntry {
    pub schema: String,
    /// `None` is AVRO.
    pub schema_type: Option<String>,
    pub references: Vec<Reference>,
    /// Confluent's data contract fields, as registered (not interpreted).
    pub metadata: Option<serde_json::Value>,
    pub rule_set: Option<serde_json::Value>,
}

impl SchemaEntry {
    pub fn type_name(&self) -> &str {
        self.schema_type.as_deref().unwrap_or("AVRO")
    }
}

#[derive(Debug, Default)]
pub struct State {
    /// Versions by subject, the subject qualified with its context (`orders`, `:.team:orders`).
    pub subjects: BTreeMap<String, BTreeMap<i32, VersionEntry>>,
    /// Schemas by (context, id): every context numbers its schemas on its own.
    pub schemas: BTreeMap<(String, i32), SchemaEntry>,
    /// Per context, identity (type, normalized schema, references) → id, so that the same schema gets the same
    /// id in every subject of the context.
    pub identities: HashMap<String, HashMap<String, i32>>,
    /// Per context, the largest id ever applied, tombstoned ones included: ids are not reused while their
    /// records are in the topic (compaction removing every trace of an id could let it be reused, as in
    /// Confluent).
    pub max_id: HashMap<String, i32>,
    /// The contexts other than the default one that CONTEXT records created (and no tombstone deleted).
    pub contexts: BTreeSet<String>,
    pub global_compat: Option<String>,
    /// Compatibility levels by qualified subject; `:.ctx:` is the level of the context `.ctx`.
    pub subject_compat: BTreeMap<String, String>,
    pub global_mode: Option<String>,
    /// Modes by qualified subject; `:.ctx:` is the mode of the context `.ctx`.
    pub subject_mode: BTreeMap<String, String>,
    /// Records applied (for logs and tests).
    pub applied: u64,
}

/// The identity key of a schema: its type, the form it is compared in and its references.
pub fn identity(schema_type: &str, form: &str, references: &[Reference]) -> String {
    let refs: Vec<String> = references
        .iter()
        .map(|r| format!("{}={}/{}", r.name, r.subject, r.version))
        .collect();
    format!("{schema_type}\u{0}{form}\u{0}{}", refs.join(","))
}

/// The identity of a schema with its data contract: the content identity (see [`identity`]) and, when the
/// schema has metadata or a rule set, both in a canonical form (keys sorted), as Confluent counts them in a
/// schema's hash (the same text with other metadata is another schema, with its own id).
pub fn with_contract<'a>(
    content: &'a str,
    metadata: Option<&serde_json::Value>,
    rule_set: Option<&serde_json::Value>,
) -> std::borrow::Cow<'a, str> {
    if metadata.is_none() && rule_set.is_none() {
        return std::borrow::Cow::Borrowed(content);
    }
    let canonical = |v: Option<&serde_json::Value>| v.map(sorted_json).unwrap_or_default();
    std::borrow::Cow::Owned(format!(
        "{content}\u{0}{}\u{0}{}",
        canonical(metadata),
        canonical(rule_set)
    ))
}

/// `v` as JSON text with every object's keys sorted.
fn sorted_json(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        serde_json::Value::from(k.as_str()),
                        sorted_json(&m[k])
                    )
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        serde_json::Value::Array(a) => {
            format!(
                "[{}]",
                a.iter().map(sorted_json).collect::<Vec<_>>().join(",")
            )
        }
        other => other.to_string(),
    }
}

impl State {
    pub fn apply(&mut self, record: Record) {
        self.applied += 1;
        match record {
            Record::Schema(subject, version, Some(v)) => {
                self.put_schema(normalize(&subject), version, v)
            }
            Record::Schema(subject, version, None) => {
                self.remove_version(&normalize(&subject), version)
            }
            Record::Config(subject, value) => {
                let subject = subject.map(|s| normalize(&s));
                let level = value.and_then(|v| v.compatibility_level);
                match (subject, level) {
                    (None, level) => self.global_compat = level,
                    (Some(s), Some(level)) => {
                        self.subject_compat.insert(s, level);
                    }
                    (Some(s), None) => {
                        self.subject_compat.remove(&s);
                    }
                }
            }
            Record::Mode(subject, value) => match (subject.map(|s| normalize(&s)), value) {
                (None, v) => self.global_mode = v.map(|v| v.mode),
                (Some(s), Some(v)) => {
                    self.subject_mode.insert(s, v.mode);
                }
                (Some(s), None) => {
                    self.subject_mode.remove(&s);
                }
            },
            Record::DeleteSubject(subject, Some(v)) => {
                if let Some(versions) = self.subjects.get_mut(&normalize(&subject)) {
                    for (_, e) in versions.range_mut(..=v.version) {
                        e.deleted = true;
                    }
                }
            }
            Record::DeleteSubject(_, None) | Record::Noop => {}
            Record::Context(context, true) => {
                self.contexts.insert(context);
            }
            Record::Context(context, false) => {
                self.contexts.remove(&context);
            }
            Record::ClearSubject(subject) => {
                let subject = normalize(&subject);
                let deleted: Vec<i32> = self
                    .subjects
                    .get(&subject)
                    .map(|vs| {
                        vs.iter()
                            .filter(|(_, e)| e.deleted)
                            .map(|(v, _)| *v)
                            .collect()
                    })
                    .unwrap_or_default();
                for v in deleted {
                    self.remove_version(&subject, v);
                }
            }
        }
    }

    fn put_schema(&mut self, subject: String, version: i32, v: SchemaValue) {
        let ctx = context_of(&subject);
        let max = self.max_id.entry(ctx.clone()).or_default();
        *max = (*max).max(v.id);
        let entry = SchemaEntry {
            schema: v.schema,
            schema_type: v.schema_type.filter(|t| t != "AVRO"),
            references: v.references,
            metadata: v.metadata,
            rule_set: v.rule_set,
        };
        let key = (ctx, v.id);
        if !self.schemas.contains_key(&key) {
            let ident = self.identity_of(&key.0, &entry);
            self.identities
                .entry(key.0.clone())
                .or_default()
                .entry(ident)
                .or_insert(v.id);
            self.schemas.insert(key, entry);
        }
        self.subjects.entry(subject).or_default().insert(
            version,
            VersionEntry {
                id: v.id,
                deleted: v.deleted,
            },
        );
    }

    fn remove_version(&mut self, subject: &str, version: i32) {
        let Some(versions) = self.subjects.get_mut(subject) else {
            return;
        };
        let Some(removed) = versions.remove(&version) else {
            return;
        };
        if versions.is_empty() {
            self.subjects.remove(subject);
        }
        let ctx = context_of(subject);
        if self.versions_of(&ctx, removed.id, true).is_empty() {
            let key = (ctx, removed.id);
            if let Some(entry) = self.schemas.remove(&key) {
                let ident = self.identity_of(&key.0, &entry);
                if let Some(ids) = self.identities.get_mut(&key.0) {
                    if ids.get(&ident) == Some(&removed.id) {
                        ids.remove(&ident);
                    }
                }
            }
        }
    }

    /// The id of the schema with identity `ident` in `context`, if one is registered.
    pub fn id_of_identity(&self, context: &str, ident: &str) -> Option<i32> {
        self.identities.get(context)?.get(ident).copied()
    }

    /// The largest id `context` ever used (0 for none).
    pub fn max_id(&self, context: &str) -> i32 {
        self.max_id.get(context).copied().unwrap_or(0)
    }

    /// The schema with `id` in `context`.
    pub fn schema(&self, context: &str, id: i32) -> Option<&SchemaEntry> {
        self.schemas.get(&(context.to_string(), id))
    }

    /// The identity of a stored schema of `context`: its type's identity form when it parses (with its
    /// references resolved from this state, in that context), the text as it is otherwise.
    pub fn identity_of(&self, context: &str, entry: &SchemaEntry) -> String {
        let format = crate::formats::Format::from_stored(entry.schema_type.as_deref());
        let form = crate::formats::ParsedSchema::parse(
            format,
            &entry.schema,
            self,
            context,
            &entry.references,
        )
        .ok()
        .map(|p| p.canonical().to_string());
        let content = identity(
            entry.type_name(),
            form.as_deref().unwrap_or(&entry.schema),
            &entry.references,
        );
        with_contract(&content, entry.metadata.as_ref(), entry.rule_set.as_ref()).into_owned()
    }

    /// The schema of a subject-version, if it exists (deleted or not).
    pub fn schema_at(&self, subject: &str, version: i32) -> Option<(&VersionEntry, &SchemaEntry)> {
        let e = self.subjects.get(subject)?.get(&version)?;
        Some((e, self.schema(&context_of(subject), e.id)?))
    }

    /// The texts of every schema reachable through `references`, dependencies before the schemas that use
    /// them (what Avro's parser needs to resolve named types), each schema once. Err names a reference that
    /// does not resolve.
    pub fn referenced_texts(
        &self,
        context: &str,
        references: &[Reference],
    ) -> Result<Vec<String>, String> {
        let found = self.reachable(context, references, |_, ctx, id| format!("{ctx}/{id}"))?;
        Ok(found.into_iter().map(|(_, text)| text).collect())
    }

    /// (reference name, text) of every schema reachable through `references`, dependencies before the
    /// schemas that use them; a transitive reference carries the name its referencing schema gives it (what
    /// JSON Schema `$ref`s and Protobuf `import`s use), each name once. Err names a reference that does not
    /// resolve.
    pub fn referenced_named(
        &self,
        context: &str,
        references: &[Reference],
    ) -> Result<Vec<(String, String)>, String> {
        self.reachable(context, references, |r, _, _| r.name.clone())
    }

    /// (reference name, text) of the schemas reachable through `references`, dependencies first, one per
    /// `key` (of the reference and the id it names). Each schema's own references are walked once, however
    /// many references reach it, so a diamond of references costs what its schemas do.
    fn reachable(
        &self,
        context: &str,
        references: &[Reference],
        key: impl Fn(&Reference, &str, i32) -> String,
    ) -> Result<Vec<(String, String)>, String> {
        let mut walk = ReferenceWalk {
            walked: std::collections::HashSet::new(),
            emitted: std::collections::HashSet::new(),
            out: Vec::new(),
        };
        self.reach(context, references, &key, &mut walk, 0)?;
        Ok(walk.out)
    }

    fn reach(
        &self,
        context: &str,
        references: &[Reference],
        key: &impl Fn(&Reference, &str, i32) -> String,
        walk: &mut ReferenceWalk,
        depth: usize,
    ) -> Result<(), String> {
        // References form a DAG by construction (a reference names an existing version); the bound keeps a
        // corrupt topic from recursing without end.
        if depth > 64 {
            return Err("references nest deeper than 64 levels".into());
        }
        for r in references {
            // An unqualified subject names a subject of the referring schema's context.
            let subject = qualify_reference(context, &r.subject);
            let (version, entry) = self.schema_at(&subject, r.version).ok_or_else(|| {
                format!(
                    "reference {} to subject {} version {} does not exist",
                    r.name, subject, r.version
                )
            })?;
            let ctx = context_of(&subject);
            if walk.walked.insert((ctx.clone(), version.id)) {
                self.reach(&ctx, &entry.references, key, walk, depth + 1)?;
            }
            if walk.emitted.insert(key(r, &ctx, version.id)) {
                walk.out.push((r.name.clone(), entry.schema.clone()));
            }
        }
        Ok(())
    }

    /// Subject-versions of `context` that use `id`.
    pub fn versions_of(&self, context: &str, id: i32, include_deleted: bool) -> Vec<(String, i32)> {
        let mut out = Vec::new();
        for (s, vs) in &self.subjects {
            if context_of(s) != context {
                continue;
            }
            for (v, e) in vs {
                if e.id == id && (include_deleted || !e.deleted) {
                    out.push((s.clone(), *v));
                }
            }
        }
        out
    }

    /// Ids of the live schemas (of the context of `subject`, or of any context that names it qualified) that
    /// reference `subject`/`version`.
    pub fn referenced_by(&self, subject: &str, version: i32) -> Vec<i32> {
        let mut ids: Vec<i32> = self
            .schemas
            .iter()
            .filter(|((ctx, _), e)| {
                e.references
                    .iter()
                    .any(|r| r.version == version && qualify_reference(ctx, &r.subject) == subject)
            })
            .filter(|((ctx, id), _)| !self.versions_of(ctx, *id, false).is_empty())
            .map(|((_, id), _)| *id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// The state of one walk over references (`State::reachable`).
struct ReferenceWalk {
    /// (context, id)s whose own references were walked.
    walked: std::collections::HashSet<(String, i32)>,
    /// Keys already in `out`.
    emitted: std::collections::HashSet<String>,
    out: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{DeleteSubjectValue, Record};

    fn schema(subject: &str, version: i32, id: i32, text: &str) -> Record {
        Record::Schema(
            subject.into(),
            version,
            Some(SchemaValue {
                subject: subject.into(),
                version,
                id,
                schema_type: None,
                references: vec![],
                metadata: None,
                rule_set: None,
                schema: text.into(),
                deleted: false,
            }),
        )
    }

    #[test]
    fn tombstones_remove_versions_and_unused_ids_but_never_lower_max_id() {
        let mut st = State::default();
        st.apply(schema("a", 1, 1, r#""string""#));
        st.apply(schema("b", 1, 1, r#""string""#));
        st.apply(schema("a", 2, 2, r#""int""#));
        assert_eq!(st.max_id("."), 2);
        st.apply(Record::DeleteSubject(
            "a".into(),
            Some(DeleteSubjectValue {
                subject: "a".into(),
                version: 2,
            }),
        ));
        assert!(st.subjects["a"].values().all(|e| e.deleted));
        st.apply(Record::Schema("a".into(), 1, None));
        assert!(st.schema(".", 1).is_some(), "id 1 is still used by b");
        st.apply(Record::Schema("a".into(), 2, None));
        assert!(st.schema(".", 2).is_none());
        assert!(!st.subjects.contains_key("a"));
        assert_eq!(st.max_id("."), 2);
        assert_eq!(
            st.id_of_identity(".", &identity("AVRO", r#""string""#, &[])),
            Some(1)
        );
    }

    #[test]
    fn each_context_has_its_own_ids_and_unqualified_references_stay_in_their_context() {
        let mut st = State::default();
        st.apply(schema("a", 1, 1, r#""string""#));
        st.apply(schema(":.team:a", 1, 1, r#""int""#));
        // `:.:b` is the default context's `b`.
        st.apply(schema(":.:b", 1, 2, r#""long""#));
        assert_eq!(st.schema(".", 1).unwrap().schema, r#""string""#);
        assert_eq!(st.schema(".team", 1).unwrap().schema, r#""int""#);
        assert!(st.subjects.contains_key("b"));
        assert_eq!((st.max_id("."), st.max_id(".team")), (2, 1));
        assert_eq!(
            st.versions_of(".team", 1, false),
            vec![(":.team:a".into(), 1)]
        );
        let r = vec![Reference {
            name: "x".into(),
            subject: "a".into(),
            version: 1,
        }];
        assert_eq!(st.referenced_texts(".team", &r).unwrap(), vec![r#""int""#]);
        assert_eq!(st.referenced_texts(".", &r).unwrap(), vec![r#""string""#]);
        st.apply(Record::Context(".team".into(), true));
        assert!(st.contexts.contains(".team"));
        st.apply(Record::Context(".team".into(), false));
        assert!(st.contexts.is_empty());
    }
}
