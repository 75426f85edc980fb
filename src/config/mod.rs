//! Reading the folder: YAML documents become typed pushes and OAuth accounts,
//! every template is compiled and every reference checked, and each problem
//! is reported with its file, line and column. A broken document is left out;
//! the rest load.

mod account;
mod check_cx;
mod compile;
pub mod diagnostic;
mod folder;
mod load;
pub mod locate;
pub mod model;
/// `${env:…}` / `${file:…}` references: a leaf module at the crate root,
/// re-exported here where callers have always found it.
pub use crate::secret;

pub use compile::{did_you_mean, CheckCx, CompiledPush, Slot, Trigger, PUSH_PARAMS};
pub use diagnostic::{Diagnostic, Severity};
pub use folder::{collect_files, is_blank, read_source, MAX_FILE_BYTES, MAX_NESTING};
pub use load::{Catalog, LoadError, LoadOptions, OAuthAccount, Push};
pub use locate::Position;
pub use model::*;
pub use secret::{Secret, SecretError};
