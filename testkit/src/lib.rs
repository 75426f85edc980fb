//! pushwerk's test kit, shared by the integration tests (`tests/`), the
//! benches (`benches/`) and the load tool (`examples/load.rs`), so that each
//! stand-in for the outside world is written once:
//!
//! - [`identity`]: the Microsoft identity platform (OAuth 2.0 authorize and
//!   token endpoints);
//! - [`microsoft`]: Microsoft Graph `sendMail`, Bing Ads
//!   `ApplyOfflineConversions` and a plain HTTP receiver;
//! - [`smtp`]: an SMTP submission server in the style of Exchange Online;
//! - [`load`]: the load tool's fast sink and token endpoint (no checks, for
//!   measuring the engine rather than the mock);
//! - [`daemon`]: the real `pushwerk` binary as a child process — a folder and
//!   data directory, `pushwerk serve` on a free port, waiting on a condition;
//! - [`net`]: a port reserved closed (connections refused) that a test
//!   opens later, for targets that are down.
//!
//! The mocks behave as `shared/reference/microsoft-apis.md` describes; each
//! module says where it departs from the real service.
//!
//! It is a workspace crate rather than a module included by each test
//! binary: its public items are compiled once, used by several targets
//! without `#![allow(dead_code)]`, and its own unit tests run with
//! `cargo test` (it is a default member of the workspace).

#![warn(missing_docs)]

pub mod daemon;
pub mod identity;
pub mod load;
pub mod microsoft;
pub mod net;
pub mod smtp;
