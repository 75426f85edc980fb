//! pushwerk's integration tests, one binary (one link step) with a module
//! per area.

mod attack_control;
mod attack_followup;
mod attack_regressions;
mod attack_renovation;
mod attack_signin;
mod attack_tokens;
mod bing_batch;
mod check_ux;
mod cli;
mod cli_ux;
mod console_browser;
mod control_api;
mod daemon;
mod daemon_day;
mod disk_full_outcomes;
mod dispatch;
mod fuzz;
mod harden;
mod hostile_push;
mod hostile_server;
mod install;
mod loader;
mod oauth;
mod oauth_hostile;
mod pg_server;
mod postgres;
mod postgres_back;
mod postgres_ux;
mod schemas;
mod snapshots;
mod store_default;
mod store_safety;
mod teams;
mod util;
mod webdriver;
