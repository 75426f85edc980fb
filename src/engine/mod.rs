//! The engine: matching events to pushes and carrying a push through
//! render → prepare (→ send → classify, with the daemon). Dry-run is the same
//! path stopped at the prepared request.

pub mod bing_batch;
pub mod deliver;
pub mod output;
pub mod render;
pub mod send;
pub mod smtp_conn;

pub use deliver::{Attempt, Deliverer, Delivery};
pub use render::{render, RenderError, RenderInput, Rendered, TokenValues};
pub use send::Sender;
