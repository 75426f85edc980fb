//! The engine: matching events to pushes and carrying a push through
//! render → prepare (→ send → classify, with the daemon). Dry-run is the same
//! path stopped at the prepared request.

pub mod bing_batch;
pub mod deliver;
pub mod output;
pub mod send;
pub mod smtp_conn;

/// Rendering is the pipeline's first step and lives there (`pipeline` sits
/// below `engine`); re-exported where callers have always found it.
pub use crate::pipeline::render;
pub use deliver::{Attempt, Deliverer, Delivery};
pub use render::{render, RenderError, RenderInput, Rendered, TokenValues};
pub use send::Sender;
