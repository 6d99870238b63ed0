//! `fjord schemas list|get|register|delete|compat|config`: the command-line view of a Confluent-compatible
//! schema registry (Fjord's own, or any other), over its REST API. Text output is for people; `--output json`
//! prints the registry's own answer for scripts. Every failure says what to do and exits non-zero.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::client::CliError;
use crate::registry_client::{segment, RegistryClient, DEFAULT_URL};
use crate::topics::Output;

#[derive(Args, Clone)]
pub struct RegistryArgs {
    /// The schema registry's URL.
    #[arg(long, value_name = "URL", default_value = DEFAULT_URL, env = "FJORD_REGISTRY_URL")]
    pub registry_url: String,
    /// How long to wait for the registry before giving up, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub registry_timeout_ms: u64,
}

impl RegistryArgs {
    pub fn client(&self) -> Result<RegistryClient, CliError> {
        RegistryClient::new(
            &self.registry_url,
            std::time::Duration::from_millis(self.registry_timeout_ms.max(1)),
        )
    }
}

/// The schema text: from a file or inline.
#[derive(Args, Clone)]
#[group(required = true, multiple = false)]
pub struct SchemaSource {
    /// Read the schema from this file.
    #[arg(long, value_name = "FILE")]
    pub schema_file: Option<PathBuf>,
    /// The schema itself, e.g. --schema '{"type":"record","name":"A","fields":[]}'.
    #[arg(long, value_name = "SCHEMA")]
    pub schema: Option<String>,
}

impl SchemaSource {
    fn text(&self) -> Result<String, CliError> {
        match (&self.schema_file, &self.schema) {
            (Some(f), _) => std::fs::read_to_string(f).map_err(|e| {
                CliError::failure(format!("cannot read the schema file {}: {e}", f.display()))
            }),
            (None, Some(s)) => Ok(s.clone()),
            (None, None) => Err(CliError::bad_args(
                "give --schema-file FILE or --schema TEXT",
            )),
        }
    }
}

#[derive(Subcommand)]
pub enum SchemasCmd {
    /// List the subjects, or with SUBJECT the versions of that subject.
    ///
    /// Example: fjord schemas list
    /// Example: fjord schemas list orders-value --deleted
    #[command(verbatim_doc_comment)]
    List {
        /// List this subject's versions instead of the subjects.
        #[arg(value_name = "SUBJECT")]
        subject: Option<String>,
        /// Include soft-deleted subjects (or versions).
        #[arg(long)]
        deleted: bool,
        /// Only subjects starting with this text.
        #[arg(long, value_name = "TEXT", conflicts_with = "subject")]
        prefix: Option<String>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Show a schema: a subject's version (the latest by default), or the schema with an id.
    ///
    /// Example: fjord schemas get orders-value
    /// Example: fjord schemas get orders-value --version 2
    /// Example: fjord schemas get --id 7
    #[command(verbatim_doc_comment)]
    Get {
        #[arg(
            value_name = "SUBJECT",
            required_unless_present = "id",
            conflicts_with = "id"
        )]
        subject: Option<String>,
        /// The version: a number from 1, or latest.
        #[arg(long, value_name = "N|latest", default_value = "latest")]
        version: String,
        /// The schema with this id (and the subjects and versions that use it).
        #[arg(long, value_name = "ID")]
        id: Option<u32>,
        /// Include a soft-deleted version.
        #[arg(long)]
        deleted: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Register a schema under a subject (a new version, or the existing one if the subject has it already).
    ///
    /// Example: fjord schemas register orders-value --schema-file order.avsc
    /// Example: fjord schemas register users-value --type JSON --schema '{"type":"object"}'
    #[command(verbatim_doc_comment)]
    Register {
        #[arg(value_name = "SUBJECT")]
        subject: String,
        #[command(flatten)]
        source: SchemaSource,
        /// The schema type: AVRO, JSON or PROTOBUF.
        #[arg(long = "type", value_name = "TYPE", default_value = "AVRO")]
        schema_type: String,
        /// A reference to another registered schema, NAME=SUBJECT:VERSION (repeatable).
        #[arg(long = "reference", value_name = "NAME=SUBJECT:VERSION")]
        references: Vec<String>,
        /// Ask the registry to normalize the schema before comparing it with the registered ones.
        #[arg(long)]
        normalize: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Delete a subject (every version) or one version; soft by default, --permanent after a soft delete.
    ///
    /// Example: fjord schemas delete orders-value
    /// Example: fjord schemas delete orders-value --version 1 --permanent
    #[command(verbatim_doc_comment)]
    Delete {
        #[arg(value_name = "SUBJECT")]
        subject: String,
        /// Delete only this version (a number, or latest).
        #[arg(long, value_name = "N|latest")]
        version: Option<String>,
        /// Remove for good what was soft-deleted before (Confluent's two-step delete).
        #[arg(long)]
        permanent: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Check whether a schema is compatible with a subject's versions under its compatibility level; exits 1
    /// and lists every incompatibility if not.
    ///
    /// Example: fjord schemas compat orders-value --schema-file order-v2.avsc
    #[command(verbatim_doc_comment)]
    Compat {
        #[arg(value_name = "SUBJECT")]
        subject: String,
        #[command(flatten)]
        source: SchemaSource,
        /// The version to check against (a number or latest); `all` checks every version the level names.
        #[arg(long, value_name = "N|latest|all", default_value = "all")]
        version: String,
        /// The schema type: AVRO, JSON or PROTOBUF.
        #[arg(long = "type", value_name = "TYPE", default_value = "AVRO")]
        schema_type: String,
        /// A reference to another registered schema, NAME=SUBJECT:VERSION (repeatable).
        #[arg(long = "reference", value_name = "NAME=SUBJECT:VERSION")]
        references: Vec<String>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Show or set the compatibility level, globally or of one subject.
    ///
    /// Example: fjord schemas config                              # the global level
    /// Example: fjord schemas config orders-value --set FULL
    /// Example: fjord schemas config orders-value --delete       # follow the global level again
    #[command(verbatim_doc_comment)]
    Config {
        #[arg(value_name = "SUBJECT")]
        subject: Option<String>,
        /// Set the level: NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL,
        /// FULL_TRANSITIVE.
        #[arg(long, value_name = "LEVEL", conflicts_with = "delete")]
        set: Option<String>,
        /// Remove the subject's own level (or reset the global one).
        #[arg(long)]
        delete: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

pub fn run(cmd: SchemasCmd) -> Result<(), CliError> {
    match cmd {
        SchemasCmd::List {
            subject,
            deleted,
            prefix,
            output,
            registry,
        } => {
            let c = registry.client()?;
            let mut q = Vec::new();
            if deleted {
                q.push("deleted=true".to_string());
            }
            let (path, what) = match &subject {
                Some(s) => (
                    format!("/subjects/{}/versions", segment(s)),
                    format!("cannot list the versions of `{s}`"),
                ),
                None => {
                    if let Some(p) = &prefix {
                        q.push(format!("subjectPrefix={}", segment(p)));
                    }
                    (
                        "/subjects".to_string(),
                        "cannot list the subjects".to_string(),
                    )
                }
            };
            let v = c
                .get(&with_query(&path, &q))
                .map_err(|e| c.explain(&what, e))?;
            let Value::Array(items) = &v else {
                return Err(unexpected(&c, &v));
            };
            match output {
                Output::Json => println!("{v}"),
                Output::Text => {
                    for i in items {
                        match i {
                            Value::String(s) => println!("{s}"),
                            other => println!("{other}"),
                        }
                    }
                }
            }
            Ok(())
        }
        SchemasCmd::Get {
            subject,
            version,
            id,
            deleted,
            output,
            registry,
        } => {
            let c = registry.client()?;
            match (subject, id) {
                (_, Some(id)) => {
                    let what = format!("cannot get the schema with id {id}");
                    let v = c
                        .get(&format!("/schemas/ids/{id}"))
                        .map_err(|e| c.explain(&what, e))?;
                    let uses = c
                        .get(&format!("/schemas/ids/{id}/versions"))
                        .unwrap_or(Value::Null);
                    match output {
                        Output::Json => {
                            let mut v = v;
                            if let Value::Object(o) = &mut v {
                                o.insert("id".into(), json!(id));
                                o.insert("versions".into(), uses);
                            }
                            println!("{v}");
                        }
                        Output::Text => {
                            println!("id:      {id}");
                            println!("type:    {}", schema_type(&v));
                            if let Value::Array(uses) = &uses {
                                let list: Vec<String> = uses
                                    .iter()
                                    .map(|u| format!("{} v{}", str_of(&u["subject"]), u["version"]))
                                    .collect();
                                println!("used by: {}", list.join(", "));
                            }
                            print_references(&v);
                            println!("{}", pretty_schema(&v));
                        }
                    }
                }
                (Some(s), None) => {
                    let what = format!("cannot get version {version} of `{s}`");
                    let path = format!("/subjects/{}/versions/{}", segment(&s), segment(&version));
                    let q = if deleted {
                        vec!["deleted=true".to_string()]
                    } else {
                        vec![]
                    };
                    let v = c
                        .get(&with_query(&path, &q))
                        .map_err(|e| c.explain(&what, e))?;
                    match output {
                        Output::Json => println!("{v}"),
                        Output::Text => {
                            println!("subject: {}", str_of(&v["subject"]));
                            println!("version: {}", v["version"]);
                            println!("id:      {}", v["id"]);
                            println!("type:    {}", schema_type(&v));
                            print_references(&v);
                            println!("{}", pretty_schema(&v));
                        }
                    }
                }
                (None, None) => {
                    return Err(CliError::bad_args("name a SUBJECT or give --id ID"));
                }
            }
            Ok(())
        }
        SchemasCmd::Register {
            subject,
            source,
            schema_type,
            references,
            normalize,
            output,
            registry,
        } => {
            let c = registry.client()?;
            let body = schema_body(&source.text()?, &schema_type, &references)?;
            let what = format!("cannot register the schema under `{subject}`");
            let q = if normalize {
                vec!["normalize=true".to_string()]
            } else {
                vec![]
            };
            let path = format!("/subjects/{}/versions", segment(&subject));
            let v = c
                .post(&with_query(&path, &q), &body)
                .map_err(|e| c.explain(&what, e))?;
            let id = v["id"].as_i64().ok_or_else(|| unexpected(&c, &v))?;
            // Confluent answers only the id; the version comes from a lookup (best effort).
            let found = c
                .post(
                    &with_query(&format!("/subjects/{}", segment(&subject)), &q),
                    &body,
                )
                .ok();
            let version = found.as_ref().and_then(|f| f["version"].as_i64());
            match output {
                Output::Json => println!(
                    "{}",
                    json!({"subject": subject, "id": id, "version": version})
                ),
                Output::Text => match version {
                    Some(n) => println!("registered `{subject}` version {n}, schema id {id}"),
                    None => println!("registered under `{subject}`: schema id {id}"),
                },
            }
            Ok(())
        }
        SchemasCmd::Delete {
            subject,
            version,
            permanent,
            output,
            registry,
        } => {
            let c = registry.client()?;
            let q = if permanent {
                vec!["permanent=true".to_string()]
            } else {
                vec![]
            };
            let (path, what) = match &version {
                Some(n) => (
                    format!("/subjects/{}/versions/{}", segment(&subject), segment(n)),
                    format!("cannot delete version {n} of `{subject}`"),
                ),
                None => (
                    format!("/subjects/{}", segment(&subject)),
                    format!("cannot delete `{subject}`"),
                ),
            };
            let v = c
                .delete(&with_query(&path, &q))
                .map_err(|e| c.explain(&what, e))?;
            let how = if permanent {
                "permanently deleted"
            } else {
                "soft-deleted"
            };
            match output {
                Output::Json => println!("{v}"),
                Output::Text => match (&version, &v) {
                    (None, Value::Array(vs)) => {
                        let list: Vec<String> = vs.iter().map(Value::to_string).collect();
                        println!("{how} `{subject}` (versions {})", list.join(", "));
                    }
                    _ => println!("{how} `{subject}` version {v}"),
                },
            }
            if !permanent {
                crate::client::note(format_args!(
                    "(a soft delete keeps the schema ids readable; add --permanent to remove it for good)"
                ));
            }
            Ok(())
        }
        SchemasCmd::Compat {
            subject,
            source,
            version,
            schema_type,
            references,
            output,
            registry,
        } => {
            let c = registry.client()?;
            let body = schema_body(&source.text()?, &schema_type, &references)?;
            let path = if version.eq_ignore_ascii_case("all") {
                format!("/compatibility/subjects/{}/versions", segment(&subject))
            } else {
                format!(
                    "/compatibility/subjects/{}/versions/{}",
                    segment(&subject),
                    segment(&version)
                )
            };
            let what = format!("cannot check compatibility with `{subject}`");
            let v = c
                .post(&with_query(&path, &["verbose=true".to_string()]), &body)
                .map_err(|e| c.explain(&what, e))?;
            let compatible = v["is_compatible"]
                .as_bool()
                .ok_or_else(|| unexpected(&c, &v))?;
            match output {
                Output::Json => println!("{v}"),
                Output::Text if compatible => println!("compatible with `{subject}`"),
                Output::Text => {
                    println!("NOT compatible with `{subject}`:");
                    if let Some(ms) = v["messages"].as_array() {
                        for m in ms {
                            println!("  - {}", str_of(m));
                        }
                    }
                }
            }
            if compatible {
                Ok(())
            } else {
                Err(CliError::failure(format!(
                    "the schema is not compatible with `{subject}` under its compatibility level"
                )))
            }
        }
        SchemasCmd::Config {
            subject,
            set,
            delete,
            output,
            registry,
        } => {
            let c = registry.client()?;
            let (path, whose) = match &subject {
                Some(s) => (format!("/config/{}", segment(s)), format!("`{s}`")),
                None => ("/config".to_string(), "the global level".to_string()),
            };
            let v = if let Some(level) = set {
                let what = format!("cannot set the compatibility of {whose}");
                let body = json!({"compatibility": level.to_ascii_uppercase()});
                c.put(&path, &body).map_err(|e| c.explain(&what, e))?
            } else if delete {
                let what = format!("cannot delete the compatibility of {whose}");
                c.delete(&path).map_err(|e| c.explain(&what, e))?
            } else {
                let what = format!("cannot get the compatibility of {whose}");
                let q = if subject.is_some() {
                    vec!["defaultToGlobal=true".to_string()]
                } else {
                    vec![]
                };
                c.get(&with_query(&path, &q))
                    .map_err(|e| c.explain(&what, e))?
            };
            match output {
                Output::Json => println!("{v}"),
                Output::Text => {
                    let level = v
                        .get("compatibilityLevel")
                        .or_else(|| v.get("compatibility"))
                        .map(str_of)
                        .unwrap_or_else(|| v.to_string());
                    match &subject {
                        Some(s) => println!("{s}: {level}"),
                        None => println!("global: {level}"),
                    }
                }
            }
            Ok(())
        }
    }
}

/// The body of a registration, lookup or compatibility check.
fn schema_body(schema: &str, schema_type: &str, references: &[String]) -> Result<Value, CliError> {
    let t = schema_type.to_ascii_uppercase();
    let t = match t.as_str() {
        "AVRO" | "JSON" | "PROTOBUF" => t,
        "JSONSCHEMA" | "JSON-SCHEMA" | "JSON_SCHEMA" => "JSON".into(),
        "PROTO" => "PROTOBUF".into(),
        _ => {
            return Err(CliError::bad_args(format!(
                "--type {schema_type}: expected AVRO, JSON or PROTOBUF"
            )))
        }
    };
    let mut body = json!({"schema": schema});
    // Confluent's clients leave schemaType out for Avro, and old registries refuse the field.
    if t != "AVRO" {
        body["schemaType"] = json!(t);
    }
    if !references.is_empty() {
        body["references"] = Value::Array(parse_references(references)?);
    }
    Ok(body)
}

fn parse_references(refs: &[String]) -> Result<Vec<Value>, CliError> {
    refs.iter()
        .map(|r| {
            let bad = || {
                CliError::bad_args(format!(
                    "--reference {r}: expected NAME=SUBJECT:VERSION, e.g. --reference com.acme.Address=address-value:1"
                ))
            };
            let (name, rest) = r.split_once('=').ok_or_else(bad)?;
            let (subject, version) = rest.rsplit_once(':').ok_or_else(bad)?;
            let version: i32 = version.parse().map_err(|_| bad())?;
            if name.is_empty() || subject.is_empty() || version < 1 {
                return Err(bad());
            }
            Ok(json!({"name": name, "subject": subject, "version": version}))
        })
        .collect()
}

fn with_query(path: &str, q: &[String]) -> String {
    if q.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", q.join("&"))
    }
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn schema_type(v: &Value) -> String {
    v.get("schemaType")
        .and_then(Value::as_str)
        .unwrap_or("AVRO")
        .to_string()
}

fn print_references(v: &Value) {
    if let Some(refs) = v["references"].as_array().filter(|r| !r.is_empty()) {
        for r in refs {
            println!(
                "ref:     {} = {} v{}",
                str_of(&r["name"]),
                str_of(&r["subject"]),
                r["version"]
            );
        }
    }
}

/// The schema text, indented when it is JSON (Avro, JSON Schema); Protobuf as it is.
fn pretty_schema(v: &Value) -> String {
    let text = str_of(&v["schema"]);
    match serde_json::from_str::<Value>(&text) {
        Ok(j) => serde_json::to_string_pretty(&j).unwrap_or(text),
        Err(_) => text,
    }
}

fn unexpected(c: &RegistryClient, v: &Value) -> CliError {
    CliError::failure(format!(
        "{} does not answer like a Confluent schema registry: {v}",
        c.url()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_as_name_subject_version() {
        let r = parse_references(&["com.a.B=b-value:2".into()]).unwrap();
        assert_eq!(
            r[0],
            json!({"name": "com.a.B", "subject": "b-value", "version": 2})
        );
        for bad in ["x", "n=s", "n=s:0", "=s:1", "n=:1", "n=s:x"] {
            assert!(parse_references(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn avro_bodies_leave_out_the_schema_type() {
        assert_eq!(
            schema_body("\"int\"", "avro", &[]).unwrap(),
            json!({"schema": "\"int\""})
        );
        assert_eq!(
            schema_body("{}", "json-schema", &[]).unwrap()["schemaType"],
            json!("JSON")
        );
        assert!(schema_body("{}", "xml", &[]).is_err());
    }
}
