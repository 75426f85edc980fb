//! pushwerk's integration tests, one binary (one link step) with a module
//! per area.

mod cli;
mod cli_ux;
mod daemon;
mod dispatch;
mod fuzz;
mod loader;
mod mock_identity;
mod mock_microsoft;
mod mock_smtp;
mod oauth;
mod schemas;
mod snapshots;
mod store_safety;
mod util;
