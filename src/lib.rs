//! pushwerk: a push-configuration execution engine.
//!
//! People drop YAML push definitions into a folder; each says when to push
//! (an event type or a cron schedule), under which condition, and what to
//! send (an HTTP request, a Microsoft Graph mail, a Bing Ads offline
//! conversion, an SMTP mail), with fields filled from `<< parameters >>`.
//!
//! The flow runs one way: [`config`] loads and checks the folder into a
//! [`config::Catalog`]; [`pipeline`] renders a push for an event with
//! [`template`] and the parameters of [`params`], and the pure `prepare` of
//! one of the [`targets`] turns the result into the exact request. Dry-run
//! and the preview print that request; `send` and the daemon send it.
#![deny(missing_docs)]

pub mod api;
pub mod backoff;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod engine;
pub mod event;
pub mod metrics;
pub mod net;
pub mod oauth;
pub mod params;
pub mod pipeline;
pub mod retry;
pub mod schedule;
pub mod schema;
pub mod secret;
pub mod server;
pub mod store;
pub mod targets;
pub mod template;

/// The tracing target of the daemon's status lines (ingest token, serving,
/// shutting down, stopped): shown at the default level, and in the chosen
/// log format like every other line. At the root because the CLI sets the
/// filter and the server and daemon write the lines.
pub(crate) const STATUS: &str = "pushwerk::status";
