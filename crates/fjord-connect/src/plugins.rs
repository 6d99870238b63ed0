//! The built-in connector plugins, their configuration definitions (Kafka's property names, types, defaults
//! and documentation) and validation in the shape of `PUT /connector-plugins/{plugin}/config/validate`.

use serde_json::{json, Value};

use crate::config::ConfigMap;
use crate::converter::Converter;

pub const FILE_SOURCE: &str = "org.apache.kafka.connect.file.FileStreamSourceConnector";
pub const FILE_SINK: &str = "org.apache.kafka.connect.file.FileStreamSinkConnector";
pub const ELASTICSEARCH_SINK: &str =
    "io.confluent.connect.elasticsearch.ElasticsearchSinkConnector";
pub const HTTP_SINK: &str = "io.confluent.connect.http.HttpSinkConnector";

/// The version the built-in plugins report (this Fjord's).
pub const PLUGIN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A connector plugin's kind, as Connect names it in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Source,
    Sink,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Source => "source",
            Kind::Sink => "sink",
        }
    }
}

/// A built-in connector plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    FileSource,
    FileSink,
    PostgresSink,
    PostgresSource,
    ElasticsearchSink,
    HttpSink,
}

impl Plugin {
    pub const ALL: [Plugin; 6] = [
        Plugin::ElasticsearchSink,
        Plugin::FileSink,
        Plugin::FileSource,
        Plugin::HttpSink,
        Plugin::PostgresSink,
        Plugin::PostgresSource,
    ];

    /// The plugin a `connector.class` (or the `{plugin}` of a validate path) names: the full class name, the
    /// simple name, or the simple name without `Connector`, as Connect's plugin aliases allow.
    pub fn find(name: &str) -> Option<Plugin> {
        let simple = name.trim().rsplit('.').next().unwrap_or("");
        let simple = simple.strip_suffix("Connector").unwrap_or(simple);
        match simple {
            "FileStreamSource" => Some(Plugin::FileSource),
            "FileStreamSink" => Some(Plugin::FileSink),
            "ElasticsearchSink" => Some(Plugin::ElasticsearchSink),
            "HttpSink" => Some(Plugin::HttpSink),
            // Confluent's JDBC sink's class name too, so that its configs (PostgreSQL URLs) move over as they are.
            "PostgresSink" | "JdbcSink" => Some(Plugin::PostgresSink),
            "PostgresSource" | "JdbcSource" => Some(Plugin::PostgresSource),
            _ => None,
        }
    }

    pub fn class(self) -> &'static str {
        match self {
            Plugin::FileSource => FILE_SOURCE,
            Plugin::FileSink => FILE_SINK,
            Plugin::ElasticsearchSink => ELASTICSEARCH_SINK,
            Plugin::HttpSink => HTTP_SINK,
            Plugin::PostgresSink => crate::pg_sink::CLASS,
            Plugin::PostgresSource => crate::pg_source::CLASS,
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Plugin::FileSource | Plugin::PostgresSource => Kind::Source,
            Plugin::FileSink
            | Plugin::ElasticsearchSink
            | Plugin::HttpSink
            | Plugin::PostgresSink => Kind::Sink,
        }
    }

    /// `GET /connector-plugins`' entry.
    pub fn info(self) -> Value {
        json!({"class": self.class(), "type": self.kind().as_str(), "version": PLUGIN_VERSION})
    }

    fn keys(self) -> Vec<Key> {
        let mut keys = common_keys();
        match self {
            Plugin::FileSource => keys.extend([
                Key::new("file", "STRING", None, "HIGH", "Source filename: the file to tail, line by line.").required(),
                Key::new("topic", "STRING", None, "HIGH", "The topic to publish data to.").required(),
                Key::new("batch.size", "INT", Some("2000"), "LOW", "The maximum number of records the source task can read from the file each time it is polled."),
            ]),
            Plugin::FileSink => keys.extend([
                Key::new("file", "STRING", None, "HIGH", "Destination filename: each record's value is appended as one line.").required(),
                Key::new("topics", "LIST", Some(""), "HIGH", "List of topics to consume, separated by commas."),
                Key::new("topics.regex", "STRING", Some(""), "HIGH", "Regular expression giving topics to consume; only one of topics or topics.regex may be given."),
            ]),
            Plugin::ElasticsearchSink => {
                keys.extend(sink_topic_keys());
                keys.extend([
                    Key::new("connection.url", "LIST", None, "HIGH", "The comma-separated list of http:// URLs of the Elasticsearch/OpenSearch cluster, e.g. http://127.0.0.1:9200 (tried in order).").required(),
                    Key::new("connection.username", "STRING", None, "MEDIUM", "The username for basic authentication."),
                    Key::new("connection.password", "PASSWORD", None, "MEDIUM", "The password for basic authentication."),
                    Key::new("key.ignore", "BOOLEAN", Some("false"), "HIGH", "Whether to ignore the record key: true makes the document id topic+partition+offset; false takes it from the key (a string or number)."),
                    Key::new("schema.ignore", "BOOLEAN", Some("false"), "LOW", "Whether to ignore schemas (no mapping is created from a record's schema either way; the index's dynamic mapping applies)."),
                    Key::new("behavior.on.null.values", "STRING", Some("fail"), "LOW", "What to do with a record whose value is null: ignore, delete (the document of its key) or fail."),
                    Key::new("behavior.on.malformed.documents", "STRING", Some("fail"), "LOW", "What to do with a document the server refuses as malformed: ignore, warn (log and skip) or fail."),
                    Key::new("write.method", "STRING", Some("insert"), "LOW", "insert writes whole documents; upsert updates them (doc_as_upsert)."),
                    Key::new("batch.size", "INT", Some("2000"), "MEDIUM", "The number of records in one _bulk request."),
                    Key::new("max.retries", "INT", Some("5"), "LOW", "How often a bulk request (or its items) answered 429, 5xx or not at all is retried before the task fails."),
                    Key::new("retry.backoff.ms", "LONG", Some("100"), "LOW", "The wait before the first retry; doubled for each further retry."),
                    Key::new("flush.timeout.ms", "LONG", Some("180000"), "LOW", "The longest a batch may take to be written, retries included, before the task fails."),
                    Key::new("read.timeout.ms", "INT", Some("3000"), "LOW", "How long the server may stay silent during a request (per read, like a socket read timeout; the whole batch is bounded by flush.timeout.ms). Also bounds connecting."),
                    Key::new("connection.timeout.ms", "INT", Some("1000"), "LOW", "Accepted for compatibility (read.timeout.ms bounds connecting and each read)."),
                ]);
            }
            Plugin::HttpSink => {
                keys.extend(sink_topic_keys());
                keys.extend(crate::http_sink::keys().into_iter().map(|(name, ty, default, doc, required)| {
                    let k = Key::new(name, ty, default, "HIGH", doc);
                    if required { k.required() } else { k }
                }));
            }
            Plugin::PostgresSink => {
                keys.extend(sink_topic_keys());
                keys.extend(crate::pg_sink::KEYS.iter().map(
                    |&(name, ty, default, importance, doc, required)| Key {
                        name,
                        ty,
                        default,
                        required,
                        importance,
                        doc,
                    },
                ));
            }
            Plugin::PostgresSource => keys.extend(crate::pg_source::KEYS.iter().map(
                |&(name, ty, default, importance, doc, required)| Key {
                    name,
                    ty,
                    default,
                    required,
                    importance,
                    doc,
                },
            )),
        }
        // Connect's error handling (sinks also have the dead-letter queue) and Fjord's automatic restarts.
        let handling = crate::error_handling::KEYS.iter().chain(
            (self.kind() == Kind::Sink)
                .then_some(crate::error_handling::DLQ_KEYS.iter())
                .into_iter()
                .flatten(),
        );
        keys.extend(
            handling
                .chain(crate::error_handling::RESTART_KEYS.iter())
                .map(|&(name, ty, default, doc)| Key::new(name, ty, Some(default), "LOW", doc)),
        );
        keys
    }
}

fn sink_topic_keys() -> Vec<Key> {
    vec![
        Key::new("topics", "LIST", Some(""), "HIGH", "List of topics to consume, separated by commas."),
        Key::new("topics.regex", "STRING", Some(""), "HIGH", "Regular expression giving topics to consume; only one of topics or topics.regex may be given."),
    ]
}

/// One configuration key of a plugin (Connect's `ConfigKeyInfo`).
struct Key {
    name: &'static str,
    ty: &'static str,
    default: Option<&'static str>,
    required: bool,
    importance: &'static str,
    doc: &'static str,
}

impl Key {
    fn new(
        name: &'static str,
        ty: &'static str,
        default: Option<&'static str>,
        importance: &'static str,
        doc: &'static str,
    ) -> Key {
        Key {
            name,
            ty,
            default,
            required: false,
            importance,
            doc,
        }
    }

    fn required(mut self) -> Key {
        self.required = true;
        self
    }
}

fn common_keys() -> Vec<Key> {
    vec![
        Key::new(
            "name",
            "STRING",
            None,
            "HIGH",
            "Globally unique name to use for this connector.",
        )
        .required(),
        Key::new(
            "connector.class",
            "STRING",
            None,
            "HIGH",
            "Name or alias of the class for this connector.",
        )
        .required(),
        Key::new(
            "tasks.max",
            "INT",
            Some("1"),
            "HIGH",
            "Maximum number of tasks to use for this connector: a sink runs this many, each a consumer of the connector's group; the built-in sources run one.",
        ),
        Key::new(
            "key.converter",
            "CLASS",
            None,
            "LOW",
            "Converter class for keys; the worker's key.converter when unset.",
        ),
        Key::new(
            "value.converter",
            "CLASS",
            None,
            "LOW",
            "Converter class for values; the worker's value.converter when unset.",
        ),
    ]
}

/// Kafka's topic name rule: 1 to 249 characters of ASCII letters, digits, '.', '_' and '-', not `.` or `..`.
pub fn topic_name_error(t: &str) -> Option<String> {
    if t.is_empty() {
        return Some("a topic name cannot be empty".into());
    }
    if t == "." || t == ".." {
        return Some(format!(
            "topic name {t} is illegal, it cannot be \".\" or \"..\""
        ));
    }
    if t.len() > 249 {
        return Some(format!("topic name {t} is longer than 249 characters"));
    }
    if let Some(c) = t
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!(
            "topic name {t} contains '{c}': only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    None
}

/// The errors of one config value, Connect-style ("Invalid value X for configuration Y: why").
fn errors_of(plugin: Plugin, key: &Key, config: &ConfigMap) -> Vec<String> {
    let value = config.get(key.name).map(|v| v.trim());
    let invalid = |why: &str| {
        vec![format!(
            "Invalid value {} for configuration {}: {why}",
            value.unwrap_or(""),
            key.name
        )]
    };
    if key.name.starts_with("errors.") || key.name.starts_with("task.restart.") {
        return crate::error_handling::key_errors(key.name, config);
    }
    // A required key that is missing gets the generic error below.
    let present = value.is_some() || !key.required;
    if plugin == Plugin::PostgresSink {
        let own = crate::pg_sink::KEYS.iter().any(|k| k.0 == key.name);
        if own && present {
            return crate::pg_sink::key_errors(key.name, config);
        }
    }
    if plugin == Plugin::PostgresSource && present {
        return crate::pg_source::key_errors(key.name, config);
    }
    if let Some(errors) = value.and_then(|v| match plugin {
        Plugin::ElasticsearchSink => crate::elasticsearch::config_errors(key.name, v),
        Plugin::HttpSink => crate::http_sink::config_errors(key.name, v, config),
        _ => None,
    }) {
        return errors;
    }
    let Some(value) = value else {
        return if key.required {
            vec![format!(
                "Missing required configuration \"{}\" which has no default value.",
                key.name
            )]
        } else {
            Vec::new()
        };
    };
    match (key.ty, key.name) {
        (_, "name") if value.is_empty() => invalid("a connector name cannot be empty"),
        (_, "name") if value.chars().any(char::is_control) => {
            invalid("a connector name cannot contain control characters")
        }
        (_, "connector.class") => match Plugin::find(value) {
            Some(p) if p == plugin => Vec::new(),
            _ => invalid(&format!("this is the configuration of {}", plugin.class())),
        },
        (_, "tasks.max") => match value.parse::<i64>() {
            Ok(v) if (1..=i64::from(crate::worker::MAX_TASKS)).contains(&v) => Vec::new(),
            Ok(_) => invalid(&format!(
                "tasks.max must be from 1 to {} (each sink task is a consumer of its own)",
                crate::worker::MAX_TASKS
            )),
            Err(_) => invalid("Not a number of type INT"),
        },
        ("INT", n) => match value.parse::<i64>() {
            Ok(v) if v >= 1 => Vec::new(),
            Ok(_) => invalid(&format!("{n} must be at least 1")),
            Err(_) => invalid("Not a number of type INT"),
        },
        // The converter with its own settings (a registry converter's `<key>.schema.registry.url`, ...): an
        // error names the setting.
        ("CLASS", _) => match Converter::build(value, config, key.name) {
            Ok(_) => Vec::new(),
            Err(why) => invalid(&why),
        },
        (_, "file") if value.is_empty() => invalid("give the path of a file"),
        (_, "topics.regex") if !value.is_empty() => match regex::Regex::new(value) {
            Ok(_) => Vec::new(),
            Err(e) => invalid(&format!("not a regular expression: {e}")),
        },
        (_, "topic") => match topic_name_error(value) {
            Some(why) => invalid(&why),
            None => Vec::new(),
        },
        (_, "topics") => {
            let topics: Vec<&str> = value
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect();
            let regex = config.get("topics.regex").map(|r| r.trim()).unwrap_or("");
            if topics.is_empty() && regex.is_empty() {
                return invalid(
                    "give the topics to consume in topics (or a pattern in topics.regex)",
                );
            }
            if !topics.is_empty() && !regex.is_empty() {
                return invalid("topics and topics.regex are mutually exclusive; give only one");
            }
            topics
                .iter()
                .find_map(|t| topic_name_error(t))
                .map(|w| invalid(&w))
                .unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// The validation of `config` for `plugin`, in `ConfigInfos`' shape:
/// `{name, error_count, groups, configs: [{definition, value: {name, value, recommended_values, errors, visible}}]}`.
pub fn validate(plugin: Plugin, config: &ConfigMap) -> Value {
    let mut error_count = 0;
    let mut configs = Vec::new();
    let mut keys = plugin.keys();
    if plugin.kind() == Kind::Sink
        && !config.contains_key("topics")
        && config
            .get("topics.regex")
            .is_none_or(|r| r.trim().is_empty())
    {
        // The missing-topics error belongs to `topics` even when the key is absent.
        keys.iter_mut()
            .filter(|k| k.name == "topics")
            .for_each(|k| k.required = true);
    }
    for (order, key) in keys.iter().enumerate() {
        let errors = errors_of(plugin, key, config);
        error_count += errors.len();
        let group = if key.name.starts_with("errors.") || key.name.starts_with("task.restart.") {
            "Error Handling"
        } else if order < common_keys().len() {
            "Common"
        } else {
            "Connector"
        };
        configs.push(json!({
            "definition": {
                "name": key.name,
                "type": key.ty,
                "required": key.required,
                "default_value": key.default,
                "importance": key.importance,
                "documentation": key.doc,
                "group": group,
                "width": "NONE",
                "display_name": key.name,
                "dependents": [],
                "order": order + 1,
            },
            "value": {
                "name": key.name,
                // As Connect: a password's value is never echoed.
                "value": if key.ty == "PASSWORD" && config.contains_key(key.name) {
                    Some("[hidden]".to_string())
                } else {
                    config.get(key.name).cloned().or(key.default.map(str::to_string))
                },
                "recommended_values": [],
                "errors": errors,
                "visible": true,
            }
        }));
    }
    // Transforms and predicates (`transforms.<alias>.*`, `predicates.<alias>.*`), in groups of their own.
    let mut groups = vec![json!("Common"), json!("Connector"), json!("Error Handling")];
    for e in crate::transforms::parse(config).1 {
        let order = configs.len() + 1;
        error_count += e.errors.len();
        if !groups.iter().any(|g| g == e.group.as_str()) {
            groups.push(json!(e.group));
        }
        configs.push(json!({
            "definition": {
                "name": e.name,
                "type": e.ty,
                "required": e.required,
                "default_value": e.default,
                "importance": "HIGH",
                "documentation": e.doc,
                "group": e.group,
                "width": "NONE",
                "display_name": e.name,
                "dependents": [],
                "order": order,
            },
            "value": {
                "name": e.name,
                "value": e.value.or(e.default.map(str::to_string)),
                "recommended_values": [],
                "errors": e.errors,
                "visible": true,
            }
        }));
    }
    json!({
        "name": plugin.class(),
        "error_count": error_count,
        "groups": groups,
        "configs": configs,
    })
}

/// Every error of a validation result, one per line (for the 400 of an invalid create or update).
pub fn error_lines(validation: &Value) -> Vec<String> {
    validation["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["value"]["errors"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e.as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> ConfigMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sink_plugins_check_their_settings_and_hide_passwords() {
        let v = validate(
            Plugin::ElasticsearchSink,
            &cfg(&[
                ("name", "es"),
                ("connector.class", "ElasticsearchSink"),
                ("topics", "t"),
                ("connection.url", "http://127.0.0.1:9200"),
                ("connection.password", "s3cret"),
                ("max.retries", "0"),
                ("batch.size", "x"),
            ]),
        );
        assert_eq!(v["error_count"], 1, "{v}");
        assert!(
            error_lines(&v)[0].contains("configuration batch.size"),
            "{v}"
        );
        assert!(!v.to_string().contains("s3cret"), "{v}");
        let v = validate(
            Plugin::HttpSink,
            &cfg(&[
                ("name", "h"),
                ("connector.class", HTTP_SINK),
                ("topics", "t"),
            ]),
        );
        assert_eq!(
            error_lines(&v),
            ["Missing required configuration \"http.api.url\" which has no default value."]
        );
        assert_eq!(Plugin::find("HttpSinkConnector"), Some(Plugin::HttpSink));
    }

    #[test]
    fn plugins_are_found_by_class_or_alias() {
        assert_eq!(Plugin::find(FILE_SOURCE), Some(Plugin::FileSource));
        assert_eq!(Plugin::find("FileStreamSource"), Some(Plugin::FileSource));
        assert_eq!(
            Plugin::find("FileStreamSinkConnector"),
            Some(Plugin::FileSink)
        );
        assert_eq!(
            Plugin::find("io.confluent.connect.jdbc.JdbcSinkConnector"),
            Some(Plugin::PostgresSink)
        );
        assert_eq!(
            Plugin::find("JdbcSourceConnector"),
            Some(Plugin::PostgresSource)
        );
        assert_eq!(Plugin::find("MySqlConnector"), None);
    }

    #[test]
    fn a_valid_file_source_config_has_no_errors() {
        let v = validate(
            Plugin::FileSource,
            &cfg(&[
                ("name", "s"),
                ("connector.class", "FileStreamSource"),
                ("file", "/tmp/x"),
                ("topic", "catalog"),
            ]),
        );
        assert_eq!(v["error_count"], 0, "{v}");
        assert_eq!(v["name"], FILE_SOURCE);
        let batch = v["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["definition"]["name"] == "batch.size")
            .unwrap();
        assert_eq!(batch["value"]["value"], "2000");
    }

    #[test]
    fn errors_name_the_field() {
        let v = validate(
            Plugin::FileSource,
            &cfg(&[
                ("name", "s"),
                ("connector.class", "FileStreamSource"),
                ("file", "/tmp/x"),
                ("topic", "bad topic"),
                ("batch.size", "many"),
            ]),
        );
        assert_eq!(v["error_count"], 2, "{v}");
        let lines = error_lines(&v);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("configuration topic:") && l.contains("' '")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("configuration batch.size: Not a number")),
            "{lines:?}"
        );
        let v = validate(
            Plugin::FileSink,
            &cfg(&[
                ("name", "k"),
                ("connector.class", FILE_SINK),
                ("file", "/tmp/y"),
            ]),
        );
        assert_eq!(v["error_count"], 1, "{v}");
        assert!(error_lines(&v)[0].contains("topics"), "{v}");
        let v = validate(
            Plugin::FileSink,
            &cfg(&[
                ("name", "k"),
                ("connector.class", FILE_SINK),
                ("file", "/tmp/y"),
                ("topics", "a"),
                ("topics.regex", "a.*"),
            ]),
        );
        assert!(error_lines(&v)[0].contains("mutually exclusive"), "{v}");
    }
}
