//! pushwerk's integration tests, one binary (one link step) with a module
//! per area.

mod bing_batch;
mod check_ux;
mod cli;
mod daemon;
mod dispatch;
mod fuzz;
mod hostile_push;
mod hostile_server;
mod install;
mod loader;
mod mock_identity;
mod mock_microsoft;
mod mock_smtp;
mod oauth;
mod oauth_hostile;
mod schemas;
mod snapshots;
mod util;
