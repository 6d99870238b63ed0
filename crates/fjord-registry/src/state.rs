//! The registry's in-memory state: what applying the `_schemas` topic from its start gives.
//!
//! **Architecture Invariant:** this state changes only by [`State::apply`] of a decoded record, on the same
//! path for a record read at start-up, one written by this registry and one written by anybody else. Ids are
//! assigned from it (`max_id + 1`) by the single writer, under its write lock, after its own previous write was
//! applied, so two registrations never get one id.

use std::collections::{BTreeMap, HashMap};

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
}

impl SchemaEntry {
    pub fn type_name(&self) -> &str {
        self.schema_type.as_deref().unwrap_or("AVRO")
    }
}

#[derive(Debug, Default)]
pub struct State {
    pub subjects: BTreeMap<String, BTreeMap<i32, VersionEntry>>,
    pub schemas: BTreeMap<i32, SchemaEntry>,
    /// Identity (type, normalized schema, references) → id, so that the same schema gets the same id in every
    /// subject.
    pub identities: HashMap<String, i32>,
    /// The largest id ever applied, tombstoned ones included: ids are not reused while their records are in
    /// the topic (compaction removing every trace of an id could let it be reused, as in Confluent).
    pub max_id: i32,
    pub global_compat: Option<String>,
    pub subject_compat: BTreeMap<String, String>,
    pub global_mode: Option<String>,
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

impl State {
    pub fn apply(&mut self, record: Record) {
        self.applied += 1;
        match record {
            Record::Schema(subject, version, Some(v)) => self.put_schema(subject, version, v),
            Record::Schema(subject, version, None) => self.remove_version(&subject, version),
            Record::Config(subject, value) => {
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
            Record::Mode(subject, value) => match (subject, value) {
                (None, v) => self.global_mode = v.map(|v| v.mode),
                (Some(s), Some(v)) => {
                    self.subject_mode.insert(s, v.mode);
                }
                (Some(s), None) => {
                    self.subject_mode.remove(&s);
                }
            },
            Record::DeleteSubject(subject, Some(v)) => {
                if let Some(versions) = self.subjects.get_mut(&subject) {
                    for (_, e) in versions.range_mut(..=v.version) {
                        e.deleted = true;
                    }
                }
            }
            Record::DeleteSubject(_, None) | Record::Noop => {}
            Record::ClearSubject(subject) => {
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
        self.max_id = self.max_id.max(v.id);
        let entry = SchemaEntry {
            schema: v.schema,
            schema_type: v.schema_type.filter(|t| t != "AVRO"),
            references: v.references,
        };
        if !self.schemas.contains_key(&v.id) {
            let ident = self.identity_of(&entry);
            self.identities.entry(ident).or_insert(v.id);
            self.schemas.insert(v.id, entry);
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
        let still_used = self
            .subjects
            .values()
            .any(|vs| vs.values().any(|e| e.id == removed.id));
        if !still_used {
            if let Some(entry) = self.schemas.remove(&removed.id) {
                let ident = self.identity_of(&entry);
                if self.identities.get(&ident) == Some(&removed.id) {
                    self.identities.remove(&ident);
                }
            }
        }
    }

    /// The identity of a stored schema: its type's identity form when it parses (with its references
    /// resolved from this state), the text as it is otherwise.
    pub fn identity_of(&self, entry: &SchemaEntry) -> String {
        let format = crate::formats::Format::from_stored(entry.schema_type.as_deref());
        let form =
            crate::formats::ParsedSchema::parse(format, &entry.schema, self, &entry.references)
                .ok()
                .map(|p| p.canonical().to_string());
        identity(
            entry.type_name(),
            form.as_deref().unwrap_or(&entry.schema),
            &entry.references,
        )
    }

    /// The schema of a subject-version, if it exists (deleted or not).
    pub fn schema_at(&self, subject: &str, version: i32) -> Option<(&VersionEntry, &SchemaEntry)> {
        let e = self.subjects.get(subject)?.get(&version)?;
        Some((e, self.schemas.get(&e.id)?))
    }

    /// The texts of every schema reachable through `references`, dependencies before the schemas that use
    /// them (what Avro's parser needs to resolve named types), each schema once. Err names a reference that
    /// does not resolve.
    pub fn referenced_texts(&self, references: &[Reference]) -> Result<Vec<String>, String> {
        let found = self.reachable(references, |_, id| id.to_string())?;
        Ok(found.into_iter().map(|(_, text)| text).collect())
    }

    /// (reference name, text) of every schema reachable through `references`, dependencies before the
    /// schemas that use them; a transitive reference carries the name its referencing schema gives it (what
    /// JSON Schema `$ref`s and Protobuf `import`s use), each name once. Err names a reference that does not
    /// resolve.
    pub fn referenced_named(
        &self,
        references: &[Reference],
    ) -> Result<Vec<(String, String)>, String> {
        self.reachable(references, |r, _| r.name.clone())
    }

    /// (reference name, text) of the schemas reachable through `references`, dependencies first, one per
    /// `key` (of the reference and the id it names). Each schema's own references are walked once, however
    /// many references reach it, so a diamond of references costs what its schemas do.
    fn reachable(
        &self,
        references: &[Reference],
        key: impl Fn(&Reference, i32) -> String,
    ) -> Result<Vec<(String, String)>, String> {
        let mut walk = ReferenceWalk {
            walked: std::collections::HashSet::new(),
            emitted: std::collections::HashSet::new(),
            out: Vec::new(),
        };
        self.reach(references, &key, &mut walk, 0)?;
        Ok(walk.out)
    }

    fn reach(
        &self,
        references: &[Reference],
        key: &impl Fn(&Reference, i32) -> String,
        walk: &mut ReferenceWalk,
        depth: usize,
    ) -> Result<(), String> {
        // References form a DAG by construction (a reference names an existing version); the bound keeps a
        // corrupt topic from recursing without end.
        if depth > 64 {
            return Err("references nest deeper than 64 levels".into());
        }
        for r in references {
            let (version, entry) = self.schema_at(&r.subject, r.version).ok_or_else(|| {
                format!(
                    "reference {} to subject {} version {} does not exist",
                    r.name, r.subject, r.version
                )
            })?;
            if walk.walked.insert(version.id) {
                self.reach(&entry.references, key, walk, depth + 1)?;
            }
            if walk.emitted.insert(key(r, version.id)) {
                walk.out.push((r.name.clone(), entry.schema.clone()));
            }
        }
        Ok(())
    }

    /// Subject-versions that use `id`.
    pub fn versions_of(&self, id: i32, include_deleted: bool) -> Vec<(String, i32)> {
        let mut out = Vec::new();
        for (s, vs) in &self.subjects {
            for (v, e) in vs {
                if e.id == id && (include_deleted || !e.deleted) {
                    out.push((s.clone(), *v));
                }
            }
        }
        out
    }

    /// Ids of the live schemas that reference `subject`/`version`.
    pub fn referenced_by(&self, subject: &str, version: i32) -> Vec<i32> {
        let mut ids: Vec<i32> = self
            .schemas
            .iter()
            .filter(|(_, e)| {
                e.references
                    .iter()
                    .any(|r| r.subject == subject && r.version == version)
            })
            .map(|(id, _)| *id)
            .filter(|id| !self.versions_of(*id, false).is_empty())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// The state of one walk over references (`State::reachable`).
struct ReferenceWalk {
    /// Ids whose own references were walked.
    walked: std::collections::HashSet<i32>,
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
        assert_eq!(st.max_id, 2);
        st.apply(Record::DeleteSubject(
            "a".into(),
            Some(DeleteSubjectValue {
                subject: "a".into(),
                version: 2,
            }),
        ));
        assert!(st.subjects["a"].values().all(|e| e.deleted));
        st.apply(Record::Schema("a".into(), 1, None));
        assert!(st.schemas.contains_key(&1), "id 1 is still used by b");
        st.apply(Record::Schema("a".into(), 2, None));
        assert!(!st.schemas.contains_key(&2));
        assert!(!st.subjects.contains_key("a"));
        assert_eq!(st.max_id, 2);
        assert_eq!(
            st.identities.get(&identity("AVRO", r#""string""#, &[])),
            Some(&1)
        );
    }
}
