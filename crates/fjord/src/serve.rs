//! `fjord start` and `fjord broker`: run a broker (and, on `start`, the HTTP endpoint for /metrics, /health and
//! /ready) until SIGINT or SIGTERM, then shut down cleanly.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use fjord_broker::config::BrokerConfig;
use fjord_broker::Broker;

pub async fn serve(config: BrokerConfig) -> Result<()> {
    let metrics_addr = config.metrics_listener;
    let data_dir = config.log_dir.clone();
    let broker = Broker::start(config)
        .await
        .context("broker failed to start")?;
    let kafka = broker.local_addr();
    let http = match metrics_addr {
        Some(addr) => Some(serve_metrics(addr, broker.state().clone()).await?),
        None => None,
    };
    // One machine-readable line on stdout: scripts and tests learn the bound ports from it.
    match http {
        Some(h) => println!(
            "fjord ready kafka={kafka} http={h} data={}",
            data_dir.display()
        ),
        None => println!("fjord ready kafka={kafka} data={}", data_dir.display()),
    }
    // And a friendly summary for a person at a terminal.
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!("\nFjord is running.");
        eprintln!("  Kafka protocol:  {kafka}   (e.g. kcat -b {kafka} -L, or fjord topics list -b {kafka})");
        if let Some(h) = http {
            eprintln!("  Metrics:         http://{h}/metrics");
        }
        eprintln!("  Data directory:  {}", data_dir.display());
        eprintln!("Press Ctrl-C to stop.\n");
    }
    // A signal stops the broker cleanly; so does a failure it cannot serve through (the log directory holding
    // the metadata quorum went offline), but then the exit status says so.
    let fatal = tokio::select! {
        _ = wait_for_signal() => None,
        reason = broker.fatal() => Some(reason),
    };
    tracing::info!("shutting down");
    broker.shutdown().await?;
    match fatal {
        Some(reason) => anyhow::bail!("broker stopped: {reason}"),
        None => Ok(()),
    }
}

async fn serve_metrics(
    addr: SocketAddr,
    state: Arc<fjord_broker::BrokerState>,
) -> Result<SocketAddr> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind metrics.listener {addr}"))?;
    let bound = listener.local_addr()?;
    let metrics_state = state.clone();
    let ready_state = state;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let state = metrics_state.clone();
                async move {
                    // The scrape takes every partition's lock and the group coordinator's: on a blocking
                    // thread, never on the async workers that serve the Kafka protocol.
                    let text = tokio::task::spawn_blocking(move || state.metrics_text())
                        .await
                        .unwrap_or_else(|e| format!("# scrape failed: {e}\n"));
                    (
                        [(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
        // Liveness: the process answers HTTP. Nothing else is checked, so a restart is only triggered by a
        // broker that no longer responds at all.
        .route("/health", get(|| async { "ok\n" }))
        // Readiness: the broker can serve every partition it hosts (see BrokerState::readiness).
        .route(
            "/ready",
            get(move || {
                let state = ready_state.clone();
                async move {
                    match state.readiness() {
                        Ok(()) => (axum::http::StatusCode::OK, "ready\n".to_string()),
                        Err(why) => (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {why}\n"),
                        ),
                    }
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    Ok(bound)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
