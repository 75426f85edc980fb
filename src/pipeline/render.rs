//! Rendering a push for one event: the condition, then every templated leaf
//! of the target, with the parameters `event.*`, `oauth.*`, `push.*`, `now`.
//!
//! Secrets enter the render only as data. In a dry-run without
//! `--show-secrets` they are never read at all: each token and `${env:…}`
//! value is replaced by its placeholder (`‹oauth.ms_mail›`), so the printed
//! request cannot hold one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use minijinja::Value;
use sha2::{Digest, Sha256};

use crate::config::secret::placeholder;
use crate::config::{Catalog, Push, SecretError, Trigger};
use crate::event::Event;
use crate::targets::{Fill, RenderedPush, SecretMode, TargetSpec};
use crate::template::{self, TemplateText};

/// Access tokens by account, or placeholders for a dry-run.
pub type TokenValues = BTreeMap<String, String>;

/// The inputs of one render.
pub struct RenderInput<'a> {
    /// The event (for `schedule:` pushes, the tick).
    pub event: &'a Event,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// The render time (`now`).
    pub now: DateTime<Utc>,
    /// Access token per account; missing accounts render as placeholders when
    /// `secrets` is masked and are an error otherwise.
    pub tokens: &'a TokenValues,
    /// Placeholders or real `${env:…}` / `${file:…}` values and tokens.
    pub secrets: SecretMode,
}

/// What rendering decided.
#[derive(Debug)]
pub enum Rendered {
    /// The push does not apply to this event; the reason says why.
    Skipped(String),
    /// The rendered push, ready for `prepare`.
    Ready(Box<RenderedPush>),
}

/// Why a push could not be rendered. Never contains a secret value.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A template failed (most often: a parameter the event does not have).
    #[error("`{field}`: {message}")]
    Template {
        /// The field, e.g. `graph_mail.subject`.
        field: String,
        /// What went wrong.
        message: String,
    },
    /// A referenced secret is not available.
    #[error("secret `{label}` is not available: {source}")]
    Secret {
        /// The secret's label.
        label: String,
        /// Why.
        source: SecretError,
    },
    /// No access token for an account the push needs.
    #[error(transparent)]
    MissingToken(#[from] crate::targets::MissingToken),
    /// An attachment file cannot be read.
    #[error("`{field}`: cannot read attachment {path}: {reason}")]
    Attachment {
        /// The field.
        field: String,
        /// The path as rendered.
        path: String,
        /// The I/O error.
        reason: String,
    },
}

/// A stable key per push and event: the same on every retry.
pub fn idempotency_key(push: &str, event_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(push.as_bytes());
    h.update([0]);
    h.update(event_id.as_bytes());
    let digest = h.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut key = String::with_capacity(32);
    for b in &digest[..16] {
        key.push(HEX[usize::from(b >> 4)] as char);
        key.push(HEX[usize::from(b & 0xf)] as char);
    }
    key
}

/// Renders `push` for `input`.
pub fn render(
    catalog: &Catalog,
    push: &Push,
    input: &RenderInput<'_>,
) -> Result<Rendered, RenderError> {
    if let Trigger::Event(on) = &push.trigger {
        if *on != input.event.event_type {
            return Ok(Rendered::Skipped(format!(
                "push `{}` fires on `{on}`, the event is `{}`",
                push.name(),
                input.event.event_type
            )));
        }
    }
    let compiled = &push.compiled;
    let mut tokens = TokenValues::new();
    for account in &compiled.accounts {
        let token = match input.tokens.get(account) {
            Some(t) => t.clone(),
            None if input.secrets.is_masked() => placeholder(&format!("oauth.{account}")),
            None => {
                return Err(crate::targets::MissingToken {
                    account: account.clone(),
                }
                .into())
            }
        };
        tokens.insert(account.clone(), token);
    }
    let mut secrets = BTreeMap::new();
    for (label, value) in &compiled.secrets {
        let shown = if !input.secrets.is_masked() {
            match value {
                Ok(s) => s.expose().to_owned(),
                Err(e) => {
                    return Err(RenderError::Secret {
                        label: label.clone(),
                        source: e.clone(),
                    })
                }
            }
        } else {
            placeholder(label)
        };
        secrets.insert(label.clone(), Value::from(shown));
    }
    let ctx = context(push, input, &tokens, secrets);

    if let Some(when) = &compiled.when {
        let (holds, missing) = condition(catalog, push, when, &ctx, input.event)?;
        if !holds {
            let shown: Vec<String> = compiled
                .when_params
                .iter()
                .filter(|p| p.starts_with("event.") || p.starts_with("push.") || *p == "now")
                .map(|p| format!("{p} = {}", lookup_for_display(&ctx, p)))
                .collect();
            let cond = push.spec.when.as_deref().unwrap_or_default();
            let values = if shown.is_empty() {
                String::new()
            } else {
                format!(" ({})", shown.join(", "))
            };
            let lacking = if missing.is_empty() {
                String::new()
            } else {
                let names: Vec<String> = missing.iter().map(|p| format!("`{p}`")).collect();
                format!(
                    "; the event has no {} (a field the event lacks is false in a condition)",
                    names.join(", ")
                )
            };
            return Ok(Rendered::Skipped(format!(
                "condition `{cond}` is false{values}{lacking}"
            )));
        }
    }

    let mut target = push.spec.target.fill(&mut Filler {
        catalog,
        push,
        ctx: &ctx,
        event: input.event,
    })?;
    if let (TargetSpec::GraphMail(mail), TargetSpec::GraphMail(written)) =
        (&mut target, &push.spec.target)
    {
        let base = push.file.parent().unwrap_or(Path::new("."));
        let mut secrets = None;
        for (i, (a, source)) in mail
            .attachments
            .iter_mut()
            .zip(&written.attachments)
            .enumerate()
        {
            if let Some(path) = a.path.take() {
                // Confined to the folder the path's fixed part names (issue #10.1).
                let source = source.path.as_ref().map_or("", |p| p.as_str());
                let secrets = secrets.get_or_insert_with(|| secret_files(catalog));
                let bytes =
                    crate::targets::graph_mail::read_attachment(base, source, &path, secrets)
                        .map_err(|e| RenderError::Attachment {
                            field: format!("graph_mail.attachments[{i}].path"),
                            path: path.clone(),
                            reason: e.to_string(),
                        })?;
                a.content_base64 = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
            }
        }
    }
    Ok(Rendered::Ready(Box::new(RenderedPush::new(
        push.name().to_owned(),
        target,
        tokens,
        input.now,
        idempotency_key(push.name(), &input.event.id),
        input.secrets,
    ))))
}

/// Fills a push's template leaves for one event: a leaf with a compiled
/// template becomes its output, a literal one is copied.
struct Filler<'a> {
    catalog: &'a Catalog,
    push: &'a Push,
    ctx: &'a Value,
    event: &'a Event,
}

impl Filler<'_> {
    /// The output of the template compiled for the leaf at `path`, and
    /// whether it is a typed JSON value; `None` for a literal leaf.
    fn render(&self, path: &str) -> Result<Option<(String, bool)>, RenderError> {
        let Some(slot) = self.push.compiled.slots.get(path) else {
            return Ok(None);
        };
        let field = format!("{}.{path}", self.push.spec.target.key());
        let out = render_template(
            self.catalog,
            &slot.template,
            self.ctx,
            &field,
            None,
            self.event,
        )?;
        Ok(Some((out, slot.typed)))
    }
}

impl Fill for Filler<'_> {
    type Error = RenderError;

    fn text(&mut self, path: &str, t: &TemplateText) -> Result<String, RenderError> {
        Ok(match self.render(path)? {
            Some((out, _)) => out,
            None => t.0.clone(),
        })
    }

    fn json_text(&mut self, path: &str, s: &str) -> Result<serde_json::Value, RenderError> {
        match self.render(path)? {
            Some((out, true)) => serde_json::from_str(&out).map_err(|e| RenderError::Template {
                field: format!("{}.{path}", self.push.spec.target.key()),
                message: format!("value is not JSON-serialisable: {e}"),
            }),
            Some((out, false)) => Ok(serde_json::Value::String(out)),
            None => Ok(serde_json::Value::String(s.to_owned())),
        }
    }
}

/// Whether `push` applies to `event`: its trigger matches and its condition
/// holds. Needs no tokens (a condition sees placeholders for them). An error
/// (a field the condition needs is missing) is returned, so that the caller
/// can let delivery report it.
pub fn applies(
    catalog: &Catalog,
    push: &Push,
    event: &Event,
    now: DateTime<Utc>,
) -> Result<bool, RenderError> {
    if let Trigger::Event(on) = &push.trigger {
        if *on != event.event_type {
            return Ok(false);
        }
    }
    let Some(when) = &push.compiled.when else {
        return Ok(true);
    };
    let tokens: TokenValues = push
        .compiled
        .accounts
        .iter()
        .map(|a| (a.clone(), placeholder(&format!("oauth.{a}"))))
        .collect();
    let secrets = push
        .compiled
        .secrets
        .keys()
        .map(|label| (label.clone(), Value::from(placeholder(label))))
        .collect();
    let input = RenderInput {
        event,
        attempt: 1,
        now,
        tokens: &tokens,
        secrets: SecretMode::Masked,
    };
    let ctx = context(push, &input, &tokens, secrets);
    Ok(condition(catalog, push, when, &ctx, event)?.0)
}

/// Evaluates the condition template `when`: whether it holds, and the
/// event fields it uses that the event lacks. Unlike a body, a condition
/// treats a missing field as `false` (so `when: event.vip` skips events
/// without `vip`, and `not event.vip` takes them): the condition is first
/// evaluated strictly, and only if that fails, again with every missing
/// `event.*` field it names set to `false` (said at `debug`). Any other
/// error stays an error.
fn condition(
    catalog: &Catalog,
    push: &Push,
    when: &str,
    ctx: &Value,
    event: &Event,
) -> Result<(bool, Vec<String>), RenderError> {
    let params = &push.compiled.when_params;
    let strict = match render_template(catalog, when, ctx, "when", Some(params), event) {
        Ok(out) => return Ok((out.trim() == "true", Vec::new())),
        Err(e) => e,
    };
    let missing: Vec<String> = params
        .iter()
        .filter(|p| p.starts_with("event.") && lookup(ctx, p).is_none())
        .cloned()
        .collect();
    if missing.is_empty() {
        return Err(strict);
    }
    let mut data = event.data.clone();
    if data.is_null() {
        data = serde_json::Value::Object(Default::default());
    }
    for p in &missing {
        fill_path_with(
            &mut data,
            p.trim_start_matches("event."),
            serde_json::Value::Bool(false),
        );
    }
    let filled =
        minijinja::context! { event => Value::from(minijinja::value::Serde(&data)), ..ctx.clone() };
    let out = catalog
        .templates
        .get_template(when)
        .and_then(|t| t.render(&filled))
        .map_err(|_| strict)?;
    tracing::debug!(push = %push.name(), event = %event.id, missing = ?missing, "the condition uses fields the event lacks: they count as false");
    Ok((out.trim() == "true", missing))
}

fn context(
    push: &Push,
    input: &RenderInput<'_>,
    tokens: &TokenValues,
    secrets: BTreeMap<String, Value>,
) -> Value {
    let event = input.event;
    let oauth: BTreeMap<String, Value> = tokens
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.clone())))
        .collect();
    minijinja::context! {
        event => Value::from(minijinja::value::Serde(&event.data)),
        oauth => oauth,
        push => minijinja::context! {
            name => push.name(),
            attempt => input.attempt,
            event_id => event.id.clone(),
            event_type => event.event_type.clone(),
            event_time => event.time.to_rfc3339_opts(SecondsFormat::Secs, true),
        },
        now => input.now.to_rfc3339_opts(SecondsFormat::Secs, true),
        secrets => secrets,
    }
}

fn lookup(ctx: &Value, path: &str) -> Option<Value> {
    let mut v = ctx.clone();
    for part in path.split('.') {
        v = v.get_attr(part).ok().filter(|x| !x.is_undefined())?;
    }
    Some(v)
}

fn lookup_for_display(ctx: &Value, path: &str) -> String {
    match lookup(ctx, path) {
        Some(v) => serde_json::to_string(&v).unwrap_or_else(|_| v.to_string()),
        None => "undefined".to_owned(),
    }
}

fn render_template(
    catalog: &Catalog,
    name: &str,
    ctx: &Value,
    field: &str,
    params: Option<&BTreeSet<String>>,
    event: &Event,
) -> Result<String, RenderError> {
    let tmpl = catalog
        .templates
        .get_template(name)
        .map_err(|e| RenderError::Template {
            field: field.to_owned(),
            message: template::describe_error(&e),
        })?;
    tmpl.render(ctx).map_err(|e| {
        let mut message = template::describe_error(&e);
        let undefined = e.kind() == minijinja::ErrorKind::UndefinedError
            || e.detail().is_some_and(|d| d.contains("undefined"));
        if undefined {
            // Only on the error path: name the parameters the event lacks.
            let found: BTreeSet<String>;
            let params = match params {
                Some(p) => p,
                None => {
                    found = tmpl.undeclared_variables(true).into_iter().collect();
                    &found
                }
            };
            let absent: Vec<&String> = params
                .iter()
                .filter(|p| p.starts_with("event.") && lookup(ctx, p).is_none())
                .collect();
            // A field guarded by `default(…)` is absent too; name only those
            // whose absence alone breaks the render (found by filling in
            // the others; this runs on the error path only).
            let missing: Vec<&String> = if absent.len() <= 1 {
                absent.clone()
            } else {
                absent
                    .iter()
                    .copied()
                    .filter(|p| {
                        let mut data = event.data.clone();
                        for q in absent.iter().filter(|q| **q != *p) {
                            fill_path(&mut data, q.trim_start_matches("event."));
                        }
                        let ctx = minijinja::context! { event => Value::from(minijinja::value::Serde(&data)), ..ctx.clone() };
                        tmpl.render(&ctx).is_err()
                    })
                    .collect()
            };
            if !missing.is_empty() {
                let names: Vec<String> = missing.iter().map(|p| format!("`{p}`")).collect();
                message = format!(
                    "event `{}` has no {} (give a fallback with `| default('')`, or skip such events with `when: {} is defined`)",
                    event.id,
                    names.join(", "),
                    missing[0]
                );
            }
        }
        RenderError::Template {
            field: field.to_owned(),
            message,
        }
    })
}

/// Sets the dotted `path` in `data` to an empty string, creating objects on the way.
fn fill_path(data: &mut serde_json::Value, path: &str) {
    fill_path_with(data, path, serde_json::Value::String(String::new()))
}

/// Sets the dotted `path` in `data` to `value` (unless it is set),
/// creating objects on the way.
fn fill_path_with(data: &mut serde_json::Value, path: &str, value: serde_json::Value) {
    let mut current = data;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let Some(map) = current.as_object_mut() else {
            return;
        };
        if parts.peek().is_none() {
            map.entry(part.to_owned()).or_insert(value);
            return;
        }
        current = map
            .entry(part.to_owned())
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
    }
}

/// The files the folder uses as `${file:…}` secrets, canonical: every
/// reference in the loaded pushes and in every definitions file of the
/// catalog (valid or not, accounts included). An attachment path that an
/// event value completes must never pick one of them.
pub(crate) fn secret_files(catalog: &crate::config::Catalog) -> Vec<std::path::PathBuf> {
    use crate::secret::{find_refs, SecretSource};
    let mut out = Vec::new();
    let mut add = |base: &std::path::Path, path: &str| {
        if let Ok(c) = base.join(path).canonicalize() {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    };
    for push in &catalog.pushes {
        let base = push.file.parent().unwrap_or(std::path::Path::new("."));
        for key in push.compiled.secrets.keys() {
            if let Some(path) = key.strip_prefix("file:") {
                add(base, path);
            }
        }
    }
    for file in &catalog.files {
        let base = file.parent().unwrap_or(std::path::Path::new("."));
        // Definitions files are small (the loader refuses large ones); a
        // file that cannot be read now holds no reference to honour.
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        // Line by line: one malformed reference must not hide the others.
        for line in text.lines() {
            for (_, source) in find_refs(line).unwrap_or_default() {
                if let SecretSource::File(path) = source {
                    add(base, &path);
                }
            }
        }
    }
    out
}
