//! pushwerk's integration tests, one binary (one link step) with a module
//! per area.

mod check_ux;
mod cli;
mod console_browser;
mod control_api;
mod daemon;
mod dispatch;
mod fuzz;
mod hostile_push;
mod hostile_server;
mod loader;
mod mock_identity;
mod mock_microsoft;
mod mock_smtp;
mod oauth;
mod schemas;
mod snapshots;
mod util;
mod webdriver;
