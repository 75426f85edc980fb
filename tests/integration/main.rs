//! pushwerk's integration tests, one binary (one link step) with a module
//! per area.

mod cli;
mod fuzz;
mod loader;
mod schemas;
mod snapshots;
mod util;
