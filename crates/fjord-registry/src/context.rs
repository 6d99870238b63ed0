//! Schema contexts, as Confluent's registry has them: independent "sub-registries" in one registry, each with
//! its own subjects, schema ids, compatibility level and mode.
//!
//! A subject is qualified with its context as `:.ctx:subject`; a subject without a context lives in the default
//! context `.` (so `:.:orders` is `orders`). `:.ctx:` (an empty subject) names the context itself, for its
//! config and mode; `:*:` in a subject prefix means every context. Context names begin with a dot and never
//! hold a colon. Ids are unique per context only: id 1 of `.ctx` and id 1 of `.` are different schemas.

/// The default context.
pub const DEFAULT_CONTEXT: &str = ".";
/// The context whose config and mode apply to every context that sets none of its own (Confluent's
/// `:.__GLOBAL:`).
pub const GLOBAL_CONTEXT: &str = ".__GLOBAL";
/// The subject prefix that means "in every context".
pub const WILDCARD: &str = ":*:";

/// A subject split into its context and its name in that context.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Qualified {
    /// `.` or `.name`.
    pub context: String,
    /// The subject in the context; empty when the whole names a context.
    pub subject: String,
}

impl Qualified {
    /// Splits `s` as Confluent does: `:.ctx:subject`, `:.ctx` (the context, no subject) or a plain subject of
    /// the default context.
    pub fn parse(s: &str) -> Qualified {
        let (context, subject) = split(s);
        Qualified::new(context, subject)
    }

    pub fn new(context: &str, subject: &str) -> Qualified {
        Qualified {
            context: context.to_string(),
            subject: subject.to_string(),
        }
    }

    /// `:.ctx:` for a context other than the default one, nothing for the default one.
    pub fn context_prefix(&self) -> String {
        context_prefix(&self.context)
    }

    /// The qualified name: `subject` in the default context, `:.ctx:subject` elsewhere.
    pub fn qualified(&self) -> String {
        format!("{}{}", self.context_prefix(), self.subject)
    }

    pub fn is_default_context(&self) -> bool {
        self.context == DEFAULT_CONTEXT
    }
}

/// `:.ctx:` for `.ctx`, nothing for the default context.
pub fn context_prefix(context: &str) -> String {
    if context == DEFAULT_CONTEXT {
        String::new()
    } else {
        format!(":{context}:")
    }
}

/// The one spelling of a subject (`:.:s` is `s`), as records and answers carry it.
pub fn normalize(subject: &str) -> String {
    Qualified::parse(subject).qualified()
}

/// What a subject is used for, for `checked`: a schema subject must name a subject, a config or mode subject
/// may name a context (`:.ctx:`) or the global one (`:.__GLOBAL:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubjectUse {
    Schema,
    ConfigOrMode,
}

/// `subject` normalized (`normalize`) when it is one a Confluent registry accepts (its
/// `QualifiedSubject.isValidSubject`), else why not: no control characters; not the reserved names `__GLOBAL`
/// and `__EMPTY`; the `.__GLOBAL` context only for config and mode; no `:*:` (the wildcard selects subjects, it
/// is not a context a subject can live in); a context given (`:.ctx:`) needs a subject after it, except for
/// config and mode. The context must also be one `context_name` accepts, so that every context a subject can
/// create can be deleted again.
pub fn checked(subject: &str, usage: SubjectUse) -> Result<String, String> {
    if subject.chars().any(char::is_control) {
        return Err("a subject cannot contain control characters".into());
    }
    if subject.starts_with(WILDCARD) {
        return Err(format!(
            "{WILDCARD} selects subjects in every context; a subject must be in one context (:.ctx:subject)"
        ));
    }
    let q = Qualified::parse(subject);
    if q.subject == "__GLOBAL" || q.subject == "__EMPTY" {
        return Err(format!("'{}' is a reserved subject name", q.subject));
    }
    if usage == SubjectUse::Schema {
        if q.context == GLOBAL_CONTEXT {
            return Err(format!(
                "the context {GLOBAL_CONTEXT} only holds config and mode settings"
            ));
        }
        if q.subject.is_empty() && subject.starts_with(":.") {
            return Err(format!(
                "a subject is required after the context ({}subject)",
                context_prefix(&q.context)
            ));
        }
    }
    if !q.is_default_context() && context_name(&q.context).as_deref() != Ok(q.context.as_str()) {
        return Err(format!("'{}' is not a valid context name", q.context));
    }
    Ok(q.qualified())
}

/// `s` split as `Qualified::parse` splits it, borrowed: (context, subject in the context).
pub fn split(s: &str) -> (&str, &str) {
    match s.strip_prefix(":.") {
        Some(rest) => match rest.find(':') {
            // `:.ctx:subject`: the context is `.ctx`, from after the first colon to the second.
            Some(ix) => (&s[1..ix + 2], &s[ix + 3..]),
            None => (&s[1..], ""),
        },
        None => (DEFAULT_CONTEXT, s),
    }
}

/// The context a subject lives in, borrowed from it.
pub fn context_str(subject: &str) -> &str {
    split(subject).0
}

/// The context a subject lives in.
pub fn context_of(subject: &str) -> String {
    context_str(subject).to_string()
}

/// A context name as a URL gives it (`ctx`, `.ctx`, `:.ctx:`) as `.ctx`; `Err` says why it is not one.
pub fn context_name(raw: &str) -> Result<String, String> {
    let trimmed = raw.strip_prefix(':').unwrap_or(raw);
    let trimmed = trimmed.strip_suffix(':').unwrap_or(trimmed);
    if trimmed.contains(':') {
        return Err(format!(
            "Context name {raw} is invalid: a context name cannot contain a colon"
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(format!(
            "Context name {raw:?} is invalid: it contains control characters"
        ));
    }
    Ok(if trimmed.starts_with('.') {
        trimmed.to_string()
    } else {
        format!(".{trimmed}")
    })
}

/// The subject a reference names, in the context of the schema that holds the reference: an unqualified
/// reference of a schema in `.ctx` names a subject of `.ctx` (Confluent's `qualifySubjectWithParent`).
pub fn qualify_reference(parent_context: &str, reference_subject: &str) -> String {
    let q = Qualified::parse(reference_subject);
    if q.is_default_context() && parent_context != DEFAULT_CONTEXT {
        Qualified::new(parent_context, &q.subject).qualified()
    } else {
        q.qualified()
    }
}

/// Whether `subject` is listed for `GET /subjects?subjectPrefix=prefix`, as Confluent's range over
/// (context, subject) gives it: `:*:` (the default) lists every context, `:*:p` the subjects starting with `p`
/// in every context, `:.ctx:` the subjects of `.ctx`, a plain `p` the default context's subjects starting with
/// `p`, and `:.c` (an unfinished context name) every context whose name starts with `.c`.
pub fn matches_prefix(subject: &str, prefix: &str) -> bool {
    PrefixFilter::new(prefix).matches(subject)
}

/// A `subjectPrefix` (see `matches_prefix`) parsed once, to test many subjects without allocating.
#[derive(Clone, Debug)]
pub enum PrefixFilter {
    /// `:*:p`: subjects starting with `p` in every context.
    EveryContext(String),
    /// (context, subject) from `start` to `end`, both included.
    Range {
        start: (String, String),
        end: (String, String),
    },
}

impl PrefixFilter {
    pub fn new(prefix: &str) -> PrefixFilter {
        if let Some(rest) = prefix.strip_prefix(WILDCARD) {
            return PrefixFilter::EveryContext(rest.to_string());
        }
        let owned = |(c, s): (&str, &str)| (c.to_string(), s.to_string());
        PrefixFilter::Range {
            start: owned(split(prefix)),
            end: owned(split(&format!("{prefix}\u{10FFFF}"))),
        }
    }

    pub fn matches(&self, subject: &str) -> bool {
        let q = split(subject);
        match self {
            PrefixFilter::EveryContext(rest) => q.1.starts_with(rest.as_str()),
            PrefixFilter::Range { start, end } => {
                (start.0.as_str(), start.1.as_str()) <= q && q <= (end.0.as_str(), end.1.as_str())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_subjects_split_and_join_as_confluent_spells_them() {
        assert_eq!(Qualified::parse("orders"), Qualified::new(".", "orders"));
        assert_eq!(
            Qualified::parse(":.team:orders"),
            Qualified::new(".team", "orders")
        );
        assert_eq!(Qualified::parse(":.team:"), Qualified::new(".team", ""));
        assert_eq!(Qualified::parse(":.team"), Qualified::new(".team", ""));
        assert_eq!(normalize(":.:orders"), "orders");
        assert_eq!(normalize(":.team:a:b"), ":.team:a:b");
        assert_eq!(context_of(":.team:x"), ".team");
        assert_eq!(context_name("team").unwrap(), ".team");
        assert_eq!(context_name(":.team:").unwrap(), ".team");
        assert_eq!(context_name(".").unwrap(), ".");
        assert!(context_name("a:b").is_err());
        assert_eq!(qualify_reference(".team", "common"), ":.team:common");
        assert_eq!(qualify_reference(".team", ":.other:c"), ":.other:c");
        assert_eq!(qualify_reference(".", "common"), "common");
    }

    #[test]
    fn subjects_are_checked_with_confluents_rules() {
        use SubjectUse::{ConfigOrMode, Schema};
        assert_eq!(checked(":.:orders", Schema).unwrap(), "orders");
        assert_eq!(checked(":.team:a:b", Schema).unwrap(), ":.team:a:b");
        assert_eq!(checked(":.team", ConfigOrMode).unwrap(), ":.team:");
        assert_eq!(checked(":.__GLOBAL:", ConfigOrMode).unwrap(), ":.__GLOBAL:");
        for bad in [
            ":.__GLOBAL:x",
            "__GLOBAL",
            ":.t:__EMPTY",
            "a\nb",
            ":.a\u{7}b:x",
            ":.t:",
            ":.t",
            ":.:",
            ":*:x",
        ] {
            assert!(checked(bad, Schema).is_err(), "{bad:?}");
        }
        for bad in ["__EMPTY", ":.t:__GLOBAL", ":.a\tb:", ":*:"] {
            assert!(checked(bad, ConfigOrMode).is_err(), "{bad:?}");
        }
        // Plain names Confluent accepts stay accepted, the empty default-context subject included.
        for good in ["", "a b", "ünïcode", "::x", "a/b", "__GLOBALx"] {
            assert_eq!(checked(good, Schema).unwrap(), good);
        }
    }

    #[test]
    fn subject_prefixes_select_contexts_like_confluents_key_range() {
        let all = ["a", "b", ":.team:a", ":.team:b", ":.teamx:a", ":.zz:a"];
        let pick = |p: &str| -> Vec<&str> {
            all.iter()
                .copied()
                .filter(|s| matches_prefix(s, p))
                .collect()
        };
        assert_eq!(pick(WILDCARD), all.to_vec());
        assert_eq!(pick(":*:a"), vec!["a", ":.team:a", ":.teamx:a", ":.zz:a"]);
        assert_eq!(pick(""), vec!["a", "b"]);
        assert_eq!(pick("a"), vec!["a"]);
        assert_eq!(pick(":.team:"), vec![":.team:a", ":.team:b"]);
        assert_eq!(pick(":.team:b"), vec![":.team:b"]);
        assert_eq!(pick(":.team"), vec![":.team:a", ":.team:b", ":.teamx:a"]);
    }
}
