//! JSON Schemas of the formats, generated from the Rust types so they cannot
//! drift: editors validate push files with them (`# yaml-language-server:
//! $schema=…`), and a test fails when the committed files in `schemas/` are
//! stale.

use crate::config::{OAuthAccountSpec, PushSpec};
use crate::event::Event;

/// The schemas by file name: `push.schema.json`, `oauth_account.schema.json`,
/// `event.schema.json`.
pub fn all() -> Vec<(&'static str, String)> {
    vec![
        ("push.schema.json", render(schemars::schema_for!(PushSpec))),
        (
            "oauth_account.schema.json",
            render(schemars::schema_for!(OAuthAccountSpec)),
        ),
        ("event.schema.json", render(schemars::schema_for!(Event))),
    ]
}

fn render(schema: schemars::Schema) -> String {
    let mut s = serde_json::to_string_pretty(&schema).expect("schemas serialise");
    s.push('\n');
    s
}
