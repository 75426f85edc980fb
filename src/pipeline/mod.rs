//! One way from a push and an event to the exact request: trigger and
//! condition, render (parameters, tokens, secrets), then the target's pure
//! `prepare`. Dry-run, `send`, the control API's preview and the daemon's
//! deliveries all go through [`run`], so what a dry-run prints is what the
//! daemon sends, secrets aside.
//!
//! How secrets enter is the caller's [`SecretMode`]: placeholders for a
//! dry-run and a preview, real values for `--show-secrets` and for sending.
//! Nothing downstream guesses it from the values.

pub mod render;

use chrono::{DateTime, Utc};

use crate::config::{Catalog, Push};
use crate::event::Event;
use crate::targets::{self, Endpoints, PrepareError, Prepared, RenderedPush};
use render::{render, RenderError, RenderInput, Rendered, TokenValues};

pub use crate::targets::SecretMode;

/// Everything one run needs.
#[derive(Clone, Copy)]
pub struct Input<'a> {
    /// The folder the push was loaded from (its templates).
    pub catalog: &'a Catalog,
    /// The push.
    pub push: &'a Push,
    /// The event (for `schedule:` pushes, the tick).
    pub event: &'a Event,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// The render time (`now`).
    pub now: DateTime<Utc>,
    /// Access token per account (none for a masked run: placeholders).
    pub tokens: &'a TokenValues,
    /// Placeholders or real secret values.
    pub secrets: SecretMode,
    /// Base URLs of the Microsoft services.
    pub endpoints: &'a Endpoints,
}

/// What the pipeline decided.
#[derive(Debug)]
pub enum Outcome {
    /// The push does not apply to the event; the reason says why.
    Skipped(String),
    /// The request, with the rendered push it was built from.
    Prepared(Box<PreparedPush>),
}

/// A request ready to send (or to print).
#[derive(Debug)]
pub struct PreparedPush {
    /// The rendered push (target, tokens, identity).
    pub rendered: RenderedPush,
    /// The exact request.
    pub request: Prepared,
}

/// Why no request could be built. Never contains a secret value.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A template, a secret, a token or an attachment was not available.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The rendered values do not make a valid request.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
}

impl PipelineError {
    /// `render` or `prepare`: the step that failed (the code of a failed delivery).
    pub fn step(&self) -> &'static str {
        match self {
            PipelineError::Render(_) => "render",
            PipelineError::Prepare(_) => "prepare",
        }
    }
}

/// Renders `input.push` for `input.event` and builds its request.
pub fn run(input: Input<'_>) -> Result<Outcome, PipelineError> {
    let render_input = RenderInput {
        event: input.event,
        attempt: input.attempt,
        now: input.now,
        tokens: input.tokens,
        secrets: input.secrets,
    };
    let rendered = match render(input.catalog, input.push, &render_input)? {
        Rendered::Skipped(reason) => return Ok(Outcome::Skipped(reason)),
        Rendered::Ready(r) => *r,
    };
    let request = targets::prepare(&rendered, input.endpoints)?;
    Ok(Outcome::Prepared(Box::new(PreparedPush {
        rendered,
        request,
    })))
}
