//! The engine: matching events to pushes and carrying a push through
//! render → prepare (→ send → classify, with the daemon). Dry-run is the same
//! path stopped at the prepared request.

pub mod output;
pub mod render;

pub use render::{render, RenderError, RenderInput, Rendered, TokenValues};
