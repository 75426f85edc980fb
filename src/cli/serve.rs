//! `pushwerk serve`: opens the store, wires the daemon and the HTTP server,
//! and runs them until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::store::StoreChoice;
use crate::targets::Endpoints;
use std::sync::Arc;

use super::{client, runtime, store_cmd, STATUS};

pub(super) fn serve(
    dir: PathBuf,
    (data, store): (PathBuf, StoreChoice),
    listen: std::net::SocketAddr,
    ingest_token: Option<String>,
    mut control: crate::server::ControlOptions,
    (concurrency, resident_jobs, event_window, retry_backoff): (
        usize,
        usize,
        std::time::Duration,
        std::time::Duration,
    ),
    options: crate::server::ServeOptions,
) -> anyhow::Result<ExitCode> {
    let grace = options.grace;
    use crate::daemon::{Daemon, DaemonConfig};
    let rt = runtime()?;
    rt.block_on(async move {
        let mut config = DaemonConfig::new(dir, data);
        config.store = store;
        config.listen = listen;
        config.ingest_token = ingest_token;
        config.concurrency = concurrency;
        config.resident_jobs = resident_jobs;
        config.event_window =
            chrono::Duration::from_std(event_window).context("--event-window is too long")?;
        config.grace = grace;
        // Only the first step is a setting; the steps double up to the default cap.
        config.backoff.base = retry_backoff;
        config.endpoints = Endpoints::from_env(&crate::config::secret::process_env);
        config.key_file = store_cmd::key_file();
        let (daemon, token_path) = Daemon::open(config)?;
        if let Some(path) = token_path {
            tracing::info!(
                target: STATUS,
                "ingest token: {} (send it as `Authorization: Bearer <token>`)",
                path.display()
            );
        }
        let (admin, admin_path) =
            crate::server::auth::admin_token(&daemon.config.data, control.admin_token.take())?;
        if let Some(path) = admin_path {
            tracing::info!(
                target: STATUS,
                "admin token: {} (for the account endpoints and `pushwerk oauth …` while serving)",
                path.display()
            );
        }
        control.admin_token = Some(admin);
        if !control.metrics_public {
            let (metrics, metrics_path) = crate::server::auth::metrics_token(
                &daemon.config.data,
                control.metrics_token.take(),
            )?;
            if let Some(path) = metrics_path {
                tracing::info!(
                    target: STATUS,
                    "metrics token: {} (for /metrics; a Prometheus job reads it with `authorization: {{credentials_file: …}}`)",
                    path.display()
                );
            }
            control.metrics_token = Some(metrics);
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let bound = listener.local_addr()?;
        let control = Arc::new(crate::server::Control::new(&daemon.token, bound, &control)?);
        // Commands on this data directory use the API while the daemon
        // holds the store (an unspecified address is reached on loopback).
        let reach = match bound.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => {
                std::net::SocketAddr::from(([127, 0, 0, 1], bound.port()))
            }
            ip if ip.is_unspecified() => {
                std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, bound.port()))
            }
            _ => bound,
        };
        let _announcement = client::announce(&daemon.config.data, &format!("http://{reach}"))?;
        let catalog = daemon.catalog();
        let local = listener.local_addr()?;
        tracing::info!(
            target: STATUS,
            "pushwerk serving {} and {} from {} on http://{local}",
            crate::config::diagnostic::counted(catalog.pushes.len(), "push", "pushes"),
            crate::config::diagnostic::counted(catalog.accounts.len(), "account", "accounts"),
            daemon.config.dir.display(),
        );
        // Serves until SIGTERM/SIGINT, then shuts the daemon down within --grace.
        let app = crate::server::router_control(daemon.clone(), options, control);
        let server =
            crate::server::serve_router(listener, app, daemon.clone(), options, shutdown_signal());
        daemon.run(server).await?;
        tracing::info!(target: STATUS, "stopped");
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

pub(super) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
