//! `fjord connect create|load|list|status|pause|resume|restart|delete|offsets`: a client of Kafka Connect's REST
//! API (Fjord's worker, or Apache Kafka's: the same paths and shapes), like Confluent's `confluent local
//! services connect connector ...` and kcctl. Errors from the worker are printed with its message.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

use crate::client::{CliError, EXIT_BAD_ARGS, EXIT_FAILURE, EXIT_UNREACHABLE};

/// The worker `fjord start` runs.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8083";

#[derive(Args, Clone, Debug)]
pub struct RestArgs {
    /// The Connect worker's REST URL.
    #[arg(long, value_name = "URL", default_value = DEFAULT_URL)]
    pub url: String,
}

/// Sends one request; the answer's JSON (Null when empty), or the worker's error as a CliError.
async fn call(
    rest: &RestArgs,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value, CliError> {
    let target = fjord_connect::http_client::Target::parse(&rest.url)
        .map_err(|e| CliError::new(EXIT_BAD_ARGS, format!("--url {e}")))?;
    let headers = [("content-type".to_string(), "application/json".to_string())];
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let (status, answer) = target
        .request(method, path, &headers, body, Duration::from_secs(60))
        .await
        .map_err(|e| {
            CliError::new(
                EXIT_UNREACHABLE,
                format!("{e}: is a Connect worker running there (`fjord start`, `fjord connect standalone ...`)? Use --url to name another"),
            )
        })?;
    let v: Value = if answer.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&answer)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&answer).into_owned()))
    };
    if (200..300).contains(&status) {
        return Ok(v);
    }
    let message = v["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string());
    Err(CliError::new(
        EXIT_FAILURE,
        format!("the Connect worker answered {status}: {message}"),
    ))
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// A connector name as one path segment.
fn segment(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `create -f FILE`: a connector from a `.json` (`{"name", "config"}` or a flat object) or `.properties` file.
pub async fn create(rest: &RestArgs, file: &Path) -> Result<(), CliError> {
    let config = fjord_connect::config::read_connector_file(file)
        .map_err(|e| CliError::new(EXIT_BAD_ARGS, e.to_string()))?;
    let Some(name) = config.get("name").cloned() else {
        return Err(CliError::new(
            EXIT_BAD_ARGS,
            format!("{} has no connector name: add name=...", file.display()),
        ));
    };
    let v = call(
        rest,
        "POST",
        "/connectors",
        Some(json!({"name": name, "config": config})),
    )
    .await?;
    print_json(&v);
    Ok(())
}

/// What `load` knows: Confluent's predefined file connectors.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Predefined {
    /// A FileStreamSource tailing a file into a topic.
    FileSource,
    /// A FileStreamSink appending a topic's values to a file.
    FileSink,
}

#[derive(Args, Clone, Debug)]
pub struct LoadArgs {
    /// Which predefined connector.
    #[arg(value_enum)]
    pub which: Predefined,
    /// The connector's name (default: file-source or file-sink).
    #[arg(long)]
    pub name: Option<String>,
    /// The file to read or write (default: test.txt or test.sink.txt in the current directory; made absolute, as
    /// the worker may run elsewhere).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// The topic (default: connect-test, as Confluent's).
    #[arg(long)]
    pub topic: Option<String>,
}

/// The config `load` creates.
pub fn predefined(args: &LoadArgs) -> Result<(String, Value), CliError> {
    let (default_name, default_file, class, topic_key) = match args.which {
        Predefined::FileSource => ("file-source", "test.txt", "FileStreamSource", "topic"),
        Predefined::FileSink => ("file-sink", "test.sink.txt", "FileStreamSink", "topics"),
    };
    let file = args
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from(default_file));
    let file = if file.is_absolute() {
        file
    } else {
        std::env::current_dir()
            .map_err(|e| CliError::failure(format!("cannot learn the current directory: {e}")))?
            .join(file)
    };
    let name = args.name.clone().unwrap_or_else(|| default_name.into());
    let config = json!({
        "connector.class": class,
        "tasks.max": "1",
        "file": file.display().to_string(),
        topic_key: args.topic.clone().unwrap_or_else(|| "connect-test".into()),
    });
    Ok((name, config))
}

pub async fn load(rest: &RestArgs, args: &LoadArgs) -> Result<(), CliError> {
    let (name, config) = predefined(args)?;
    let v = call(
        rest,
        "POST",
        "/connectors",
        Some(json!({"name": name, "config": config})),
    )
    .await?;
    print_json(&v);
    Ok(())
}

/// `list`: one line per connector (name, type, state, task states), or the JSON of `?expand=status`.
pub async fn list(rest: &RestArgs, json_out: bool) -> Result<(), CliError> {
    let v = call(rest, "GET", "/connectors?expand=status", None).await?;
    if json_out {
        print_json(&v);
        return Ok(());
    }
    let Some(map) = v.as_object() else {
        return Err(CliError::failure(format!(
            "the worker's answer is not a map of connectors: {v}"
        )));
    };
    let rows: Vec<[String; 4]> = map
        .iter()
        .map(|(name, c)| {
            let s = &c["status"];
            let tasks: Vec<String> = s["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| format!("{}:{}", t["id"], t["state"].as_str().unwrap_or("?")))
                .collect();
            [
                name.clone(),
                s["type"].as_str().unwrap_or("?").to_string(),
                s["connector"]["state"].as_str().unwrap_or("?").to_string(),
                if tasks.is_empty() {
                    "-".into()
                } else {
                    tasks.join(",")
                },
            ]
        })
        .collect();
    let header = ["NAME", "TYPE", "STATE", "TASKS"].map(String::from);
    let widths: Vec<usize> = (0..4)
        .map(|i| {
            rows.iter()
                .chain(std::iter::once(&header))
                .map(|r| r[i].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in std::iter::once(&header).chain(rows.iter()) {
        println!(
            "{:w0$}  {:w1$}  {:w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
    Ok(())
}

pub async fn status(rest: &RestArgs, name: &str) -> Result<(), CliError> {
    let v = call(
        rest,
        "GET",
        &format!("/connectors/{}/status", segment(name)),
        None,
    )
    .await?;
    print_json(&v);
    Ok(())
}

pub async fn offsets(rest: &RestArgs, name: &str) -> Result<(), CliError> {
    let v = call(
        rest,
        "GET",
        &format!("/connectors/{}/offsets", segment(name)),
        None,
    )
    .await?;
    print_json(&v);
    Ok(())
}

/// `pause`, `resume`, `stop`: the target state changes (202 from the worker).
pub async fn set_state(rest: &RestArgs, name: &str, verb: &str) -> Result<(), CliError> {
    call(
        rest,
        "PUT",
        &format!("/connectors/{}/{verb}", segment(name)),
        None,
    )
    .await?;
    println!("connector {name}: {verb} requested");
    Ok(())
}

pub async fn restart(
    rest: &RestArgs,
    name: &str,
    include_tasks: bool,
    only_failed: bool,
) -> Result<(), CliError> {
    let v = call(
        rest,
        "POST",
        &format!(
            "/connectors/{}/restart?includeTasks={include_tasks}&onlyFailed={only_failed}",
            segment(name)
        ),
        None,
    )
    .await?;
    if v.is_null() {
        println!("connector {name} restarted");
    } else {
        print_json(&v);
    }
    Ok(())
}

pub async fn delete(rest: &RestArgs, name: &str) -> Result<(), CliError> {
    call(
        rest,
        "DELETE",
        &format!("/connectors/{}", segment(name)),
        None,
    )
    .await?;
    println!("connector {name} deleted");
    Ok(())
}

/// `fjord connect logs [NAME] [--follow]`: the worker's recent log lines (all, or those of one connector), as
/// `confluent local services connect log`; `--follow` keeps printing new ones, polling once a second, until
/// Ctrl-C. The lines are the worker's own: in a distributed group, a connector's lines are on the worker that
/// runs it.
pub async fn logs(
    rest: &RestArgs,
    name: Option<&str>,
    lines: u64,
    follow: bool,
) -> Result<(), CliError> {
    use std::io::Write;
    if let Some(n) = name {
        // A typo gets the worker's "Connector x not found", not an empty log.
        call(rest, "GET", &format!("/connectors/{}", segment(n)), None).await?;
    }
    let filter = name
        .map(|n| format!("&connector={}", segment(n)))
        .unwrap_or_default();
    let mut path = format!("/admin/logs?lines={lines}{filter}");
    let mut after: Option<u64> = None;
    loop {
        let v = call(rest, "GET", &path, None).await?;
        let got = v["lines"].as_array().map(Vec::as_slice).unwrap_or_default();
        // Without a connector filter the sequence numbers are consecutive: a gap is lines the worker no longer
        // keeps (more than it keeps were logged between two polls).
        if let (Some(after), None, Some(first)) =
            (after, name, got.first().and_then(|l| l["seq"].as_u64()))
        {
            if first > after + 1 {
                eprintln!(
                    "({} lines were logged and dropped before they could be read)",
                    first - after - 1
                );
            }
        }
        let mut out = std::io::stdout().lock();
        for l in got {
            if let Some(text) = l["line"].as_str() {
                writeln!(out, "{text}").map_err(|e| CliError::new(EXIT_FAILURE, e.to_string()))?;
            }
        }
        out.flush()
            .map_err(|e| CliError::new(EXIT_FAILURE, e.to_string()))?;
        if !follow {
            return Ok(());
        }
        let Some(next) = v["next"].as_u64() else {
            return Err(CliError::new(
                EXIT_FAILURE,
                format!("the worker's /admin/logs answer has no `next`: {v}"),
            ));
        };
        after = Some(next);
        path = format!("/admin/logs?after={next}&lines=10000{filter}");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// `fjord connect loggers [LOGGER [LEVEL]]`: Connect's `/admin/loggers`: every logger with a level of its own,
/// one logger's level, or set one (this worker only; until it restarts).
pub async fn loggers(
    rest: &RestArgs,
    logger: Option<&str>,
    level: Option<&str>,
) -> Result<(), CliError> {
    match (logger, level) {
        (None, _) => {
            let v = call(rest, "GET", "/admin/loggers", None).await?;
            for (name, l) in v.as_object().into_iter().flatten() {
                println!("{name} {}", l["level"].as_str().unwrap_or("?"));
            }
        }
        (Some(logger), None) => {
            let v = call(
                rest,
                "GET",
                &format!("/admin/loggers/{}", segment(logger)),
                None,
            )
            .await?;
            println!("{logger} {}", v["level"].as_str().unwrap_or("?"));
        }
        (Some(logger), Some(level)) => {
            let v = call(
                rest,
                "PUT",
                &format!("/admin/loggers/{}", segment(logger)),
                Some(json!({ "level": level })),
            )
            .await?;
            let changed: Vec<&str> = v
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            println!("{level} now applies to {}", changed.join(", "));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_file_source_has_confluents_defaults_with_an_absolute_file() {
        let (name, config) = predefined(&LoadArgs {
            which: Predefined::FileSource,
            name: None,
            file: None,
            topic: None,
        })
        .unwrap();
        assert_eq!(name, "file-source");
        assert_eq!(config["topic"], "connect-test");
        assert!(Path::new(config["file"].as_str().unwrap()).is_absolute());
        assert!(config["file"].as_str().unwrap().ends_with("test.txt"));
        let (_, config) = predefined(&LoadArgs {
            which: Predefined::FileSink,
            name: Some("out".into()),
            file: Some("/tmp/o".into()),
            topic: Some("catalog".into()),
        })
        .unwrap();
        assert_eq!(
            config,
            json!({"connector.class": "FileStreamSink", "tasks.max": "1", "file": "/tmp/o", "topics": "catalog"})
        );
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }
}
