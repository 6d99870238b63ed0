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
        if let Some(rest) = s.strip_prefix(":.") {
            match rest.find(':') {
                Some(ix) => Qualified {
                    context: format!(".{}", &rest[..ix]),
                    subject: rest[ix + 1..].to_string(),
                },
                None => Qualified {
                    context: format!(".{rest}"),
                    subject: String::new(),
                },
            }
        } else {
            Qualified {
                context: DEFAULT_CONTEXT.to_string(),
                subject: s.to_string(),
            }
        }
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

/// The context a subject lives in.
pub fn context_of(subject: &str) -> String {
    Qualified::parse(subject).context
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
    let q = Qualified::parse(subject);
    if let Some(rest) = prefix.strip_prefix(WILDCARD) {
        return q.subject.starts_with(rest);
    }
    let start = Qualified::parse(prefix);
    let end = Qualified::parse(&format!("{prefix}\u{10FFFF}"));
    start <= q && q <= end
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
