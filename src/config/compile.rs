//! Checking and compiling one push: its trigger, its target, every template
//! in it, every parameter and account it refers to.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::account::OAuthAccount;
use super::diagnostic::Diagnostic;
use super::locate::DocumentMap;
use super::model::{PushDoc, PushSpec};
use super::secret::{self, EnvLookup, Secret, SecretError};
use crate::schedule::Schedule;
use crate::template;

/// The fields of the `push` namespace.
pub const PUSH_PARAMS: [&str; 5] = [
    "push.name",
    "push.attempt",
    "push.event_id",
    "push.event_type",
    "push.event_time",
];

/// What fires a push.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// An event of this type.
    Event(String),
    /// A cron schedule.
    Schedule(Schedule),
}

/// One string leaf of the target that is a template.
#[derive(Debug, Clone)]
pub struct Slot {
    /// The template's name in the catalog's environment.
    pub template: String,
    /// The leaf is one parameter inside a structured body: its rendered
    /// output is JSON and keeps the parameter's type.
    pub typed: bool,
}

/// A push ready to render.
#[derive(Debug, Clone)]
pub struct CompiledPush {
    /// The target as a JSON tree (rooted at the target, e.g. `{"url": …}`).
    pub target_tree: serde_json::Value,
    /// The templated leaves of `target_tree`, by path (`to[0]`, `json.phone`).
    pub slots: HashMap<String, Slot>,
    /// The condition's template name; it renders `true` or `false`.
    pub when: Option<String>,
    /// Parameters the condition uses (shown when a push is skipped).
    pub when_params: BTreeSet<String>,
    /// Accounts whose access token the push needs.
    pub accounts: BTreeSet<String>,
    /// Every parameter the push refers to.
    pub params: BTreeSet<String>,
    /// Secrets referenced with `${env:…}` / `${file:…}`, by label.
    pub secrets: BTreeMap<String, Result<Secret, SecretError>>,
}

/// What a target's load-time check reports to: errors and warnings at the
/// position of a YAML path (`graph_mail.to[0]`), and the accounts it uses.
pub struct CheckCx<'a> {
    file: &'a Path,
    map: &'a DocumentMap,
    base_dir: &'a Path,
    accounts: &'a BTreeMap<String, OAuthAccount>,
    env_lookup: &'a EnvLookup,
    diagnostics: &'a mut Vec<Diagnostic>,
    used: BTreeSet<String>,
}

impl CheckCx<'_> {
    /// An error at the value of `path`.
    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.map.value(path);
        self.diagnostics
            .push(Diagnostic::error(self.file, pos, message));
    }
    /// An error at the key of `path` (for "this field should not be here").
    pub fn error_at_key(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.map.key(path);
        self.diagnostics
            .push(Diagnostic::error(self.file, pos, message));
    }
    /// A warning at the value of `path`.
    pub fn warning(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.map.value(path);
        self.diagnostics
            .push(Diagnostic::warning(self.file, pos, message));
    }
    /// The push uses account `name` (written at `path`): an error unless
    /// the folder defines it.
    pub fn use_account(&mut self, path: &str, name: &str) {
        if self.accounts.contains_key(name) {
            self.used.insert(name.to_owned());
        } else {
            let hint = did_you_mean(name, self.accounts.keys().cloned());
            let known = if self.accounts.is_empty() {
                " (no accounts are defined: add a document with `kind: oauth_account`)".to_owned()
            } else {
                String::new()
            };
            self.error(path, format!("unknown OAuth account `{name}`{hint}{known}"));
        }
    }
    /// Checks a URL field (`http.url`, `…base_url`): http(s), and for a
    /// templated URL, who decides its host and what enters its path.
    pub fn url(&mut self, path: &str, text: &str) {
        check_url(self, path, text)
    }
    /// Checks an HTML body template's attributes (`on*`, `srcdoc`, `style`).
    pub fn html_body(&mut self, field: &str, source: &str) {
        check_html_attributes(self, field, source)
    }
}

/// Checks and compiles `spec`. Problems go to `diagnostics`; `None` when the
/// push cannot be compiled at all.
#[allow(clippy::too_many_arguments)]
pub(crate) fn compile_push(
    doc: PushDoc,
    file: &Path,
    map: &DocumentMap,
    base_dir: &PathBuf,
    accounts: &BTreeMap<String, OAuthAccount>,
    env_lookup: &EnvLookup,
    env: &mut minijinja::Environment<'static>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<(PushSpec, Trigger, CompiledPush)> {
    let mut cx = CheckCx {
        file,
        map,
        base_dir,
        accounts,
        env_lookup,
        diagnostics,
        used: BTreeSet::new(),
    };
    let spec = &doc;
    if spec.name.trim().is_empty()
        || spec
            .name
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '#')
    {
        cx.error(
            "name",
            "push name must be non-empty, without control characters, `/` or `#`",
        );
    }

    let trigger = match (&spec.on, &spec.schedule) {
        (Some(on), None) => {
            if !crate::event::is_valid_event_type(on) {
                cx.error(
                    "on",
                    format!("`{on}` is not an event type: expected dot-separated words of a-z, 0-9, `_` or `-`, e.g. `call.ended`"),
                );
            }
            Some(Trigger::Event(on.clone()))
        }
        (None, Some(expr)) => match Schedule::parse(expr) {
            Ok(s) => {
                let s = match spec.timezone.as_deref().map(str::parse::<chrono_tz::Tz>) {
                    None => s,
                    Some(Ok(tz)) => s.in_timezone(tz),
                    Some(Err(_)) => {
                        let name = spec.timezone.clone().unwrap_or_default();
                        let hint = did_you_mean(
                            &name,
                            chrono_tz::TZ_VARIANTS.iter().map(|t| t.name().to_owned()),
                        );
                        cx.error("timezone", format!("unknown timezone `{name}`{hint}: expected an IANA name such as `Europe/Berlin` or `UTC`"));
                        s
                    }
                };
                if s.next_after(&chrono::Utc::now()).is_none() {
                    cx.warning(
                        "schedule",
                        format!("schedule `{expr}` never fires (no matching date)"),
                    );
                }
                Some(Trigger::Schedule(s))
            }
            Err(e) => {
                cx.error("schedule", format!("bad cron schedule `{expr}`: {e}"));
                None
            }
        },
        (Some(_), Some(_)) => {
            cx.error_at_key(
                "schedule",
                "a push has one trigger: `on:` (an event type) or `schedule:` (cron), not both",
            );
            None
        }
        (None, None) => {
            cx.error(
                "",
                "push has no trigger: add `on: <event type>` or `schedule: <cron line>`",
            );
            None
        }
    };
    let year = std::time::Duration::from_secs(365 * 24 * 3600);
    if spec.delay.is_some_and(|d| d.0 > year) {
        cx.error("delay", "`delay` is at most 365 days");
    }
    if spec.retry.max_age.0 > year {
        cx.error("retry.max_age", "`max_age` is at most 365 days");
    }
    if spec.retry.max_attempts == 0 {
        cx.error(
            "retry.max_attempts",
            "`max_attempts` counts the first attempt too: at least 1",
        );
    }
    match spec.in_flight {
        Some(0) | Some(1025..) => cx.error("in_flight", "`in_flight` is from 1 to 1024"),
        Some(n) if n > 4 && doc.graph_mail.is_some() => cx.warning(
            "in_flight",
            "Microsoft Graph allows 4 concurrent requests per mailbox; more are answered 429 (MailboxConcurrency)",
        ),
        _ => {}
    }
    if spec.timezone.is_some() && spec.schedule.is_none() {
        cx.error_at_key("timezone", "`timezone` applies to `schedule:` pushes only");
    }
    if spec.catch_up && spec.schedule.is_none() {
        cx.error_at_key("catch_up", "`catch_up` applies to `schedule:` pushes only");
    }

    let targets = doc.targets();
    let target = match targets.len() {
        1 => targets.into_iter().next().expect("one target"),
        0 => {
            cx.error(
                "",
                format!(
                    "push has no target: add one of {}",
                    crate::targets::KEYS
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            return None;
        }
        _ => {
            let names: Vec<&str> = targets.iter().map(|t| t.key()).collect();
            cx.error_at_key(
                names[1],
                format!(
                    "a push has exactly one target, found {}: split it into one push per target",
                    names.join(", ")
                ),
            );
            return None;
        }
    };
    let tree = target.to_tree();
    let is_http = matches!(target, crate::targets::TargetSpec::Http(_));

    let mut compiled = CompiledPush {
        target_tree: tree.clone(),
        slots: HashMap::new(),
        when: None,
        when_params: BTreeSet::new(),
        accounts: BTreeSet::new(),
        params: BTreeSet::new(),
        secrets: BTreeMap::new(),
    };

    // The condition.
    if let Some(when) = &spec.when {
        match env.compile_expression(when) {
            Err(e) => cx.error(
                "when",
                format!("bad condition: {}", template::describe_error(&e)),
            ),
            Ok(expr) => {
                let vars = template::referenced(expr.undeclared_variables(true));
                for v in &vars {
                    check_param(&mut cx, "when", v, &mut compiled);
                }
                compiled.when_params = vars;
                let name = format!("{}#when", spec.name);
                let source = format!(
                    "{bs} if ({when}) {be}true{bs} else {be}false{bs} endif {be}",
                    bs = template::BLOCK_START,
                    be = template::BLOCK_END
                );
                match env.add_template_owned(name.clone(), source) {
                    Ok(()) => {
                        report_unknown_filters(&mut cx, "when", env, &name);
                        compiled.when = Some(name)
                    }
                    Err(e) => cx.error(
                        "when",
                        format!("bad condition: {}", template::describe_error(&e)),
                    ),
                }
            }
        }
    }

    // Every string leaf of the target.
    let root = target.key();
    let mut leaves = Vec::new();
    collect_leaves(&tree, String::new(), false, is_http, &mut leaves);
    for (rel, text, typed_ctx) in leaves {
        let yaml_path = if rel.is_empty() {
            root.to_owned()
        } else if rel.starts_with('[') {
            format!("{root}{rel}")
        } else {
            format!("{root}.{rel}")
        };
        if is_reference_field(&rel) {
            continue;
        }
        let refs = match secret::find_refs(&text) {
            Ok(r) => r,
            Err(e) => {
                cx.error(&yaml_path, e.to_string());
                continue;
            }
        };
        if refs.is_empty() && !template::is_template(&text) {
            continue;
        }
        // `${env:X}` becomes `<< secrets["env:X"] >>`: the value enters as
        // data at render time, never as template source.
        let mut source = String::with_capacity(text.len());
        let mut last = 0;
        for (range, src) in refs {
            source.push_str(&text[last..range.start]);
            let label = src.label();
            source.push_str(&format!(
                "{} secrets[{}] {}",
                template::VARIABLE_START,
                serde_json::to_string(&label).expect("string"),
                template::VARIABLE_END
            ));
            if let std::collections::btree_map::Entry::Vacant(slot) = compiled.secrets.entry(label)
            {
                let resolved = secret::resolve(&src, cx.base_dir, cx.env_lookup);
                if let Err(e) = &resolved {
                    cx.warning(
                        &yaml_path,
                        format!("{e}; the push cannot be sent until it is"),
                    );
                }
                slot.insert(resolved);
            }
            last = range.end;
        }
        source.push_str(&text[last..]);
        let (source, typed) = match (typed_ctx, template::single_parameter(&source)) {
            (true, Some(expr)) => (
                // `json` (unlike `tojson`) refuses an undefined value, so a
                // missing event field is an error here as everywhere else.
                format!(
                    "{} ({expr}) | json {}",
                    template::VARIABLE_START,
                    template::VARIABLE_END
                ),
                true,
            ),
            _ => (source, false),
        };
        let name = format!("{}#{yaml_path}", spec.name);
        if let Err(e) = env.add_template_owned(name.clone(), source) {
            cx.error(
                &yaml_path,
                format!("template error: {}", template::describe_error(&e)),
            );
            continue;
        }
        report_unknown_filters(&mut cx, &yaml_path, env, &name);
        let vars = match env.get_template(&name) {
            Ok(t) => template::referenced(t.undeclared_variables(true)),
            Err(_) => BTreeSet::new(),
        };
        for v in &vars {
            check_param(&mut cx, &yaml_path, v, &mut compiled);
        }
        compiled.slots.insert(
            rel,
            Slot {
                template: name,
                typed,
            },
        );
    }

    target.check(&mut cx);
    compiled.accounts.extend(std::mem::take(&mut cx.used));
    let trigger = trigger?;
    Some((doc.into_spec(target), trigger, compiled))
}

/// Errors for filters and tests the template `name` uses that do not exist
/// (minijinja would report them only when a render reaches them).
fn report_unknown_filters(
    cx: &mut CheckCx<'_>,
    path: &str,
    env: &minijinja::Environment<'static>,
    name: &str,
) {
    for u in template::unknown_filters(env, name) {
        let hint = u
            .suggestion
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        let line = if u.line > 1 {
            format!(" (line {} of the template)", u.line)
        } else {
            String::new()
        };
        cx.error(path, format!("unknown {} `{}`{line}{hint}", u.kind, u.name));
    }
}

/// Fields that name things rather than hold templates.
fn is_reference_field(rel: &str) -> bool {
    matches!(
        rel,
        "account" | "auth.account" | "base_url" | "method" | "host" | "tls" | "content_type"
    )
}

/// Collects `(path, text, inside a structured body)` for every string leaf.
fn collect_leaves(
    value: &serde_json::Value,
    path: String,
    typed: bool,
    is_http: bool,
    out: &mut Vec<(String, String, bool)>,
) {
    match value {
        serde_json::Value::String(s) => out.push((path, s.clone(), typed)),
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_leaves(item, format!("{path}[{i}]"), typed, is_http, out);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let typed_child = typed || (is_http && path.is_empty() && k == "json");
                collect_leaves(v, child, typed_child, is_http, out);
            }
        }
        _ => {}
    }
}

/// Checks one parameter reference against the catalogue.
fn check_param(cx: &mut CheckCx<'_>, path: &str, var: &str, compiled: &mut CompiledPush) {
    compiled.params.insert(var.to_owned());
    let mut parts = var.splitn(3, '.');
    let head = parts.next().unwrap_or_default();
    let second = parts.next();
    match head {
        "event" | "now" | "secrets" => {}
        "oauth" => match second {
            None => cx.error(
                path,
                "`oauth` needs an account name: `<< oauth.<account> >>` is that account's access token",
            ),
            Some(name) => {
                if parts.next().is_some() {
                    cx.error(path, format!("`{var}`: `oauth.{name}` is the access token itself and has no fields"));
                }
                cx.use_account(path, name);
            }
        },
        "push" => {
            let full = second.map(|s| format!("push.{s}"));
            if let Some(full) = full {
                if !PUSH_PARAMS.contains(&full.as_str()) {
                    let hint = did_you_mean(&full, PUSH_PARAMS.iter().map(|s| s.to_string()));
                    cx.error(path, format!("unknown parameter `{full}`{hint}"));
                }
            }
        }
        _ => {
            let mut known: Vec<String> = vec!["now".into()];
            known.extend(PUSH_PARAMS.iter().map(|s| s.to_string()));
            known.extend(cx.accounts.keys().map(|a| format!("oauth.{a}")));
            let hint = did_you_mean(var, known.into_iter());
            let hint = if !hint.is_empty() {
                hint
            } else if second.is_some() && strsim::jaro_winkler(head, "event") >= 0.8 {
                // `evnt.caller_number`: a misspelt namespace, not a field.
                let rest = var.split_once('.').map_or("", |(_, r)| r);
                format!("; did you mean `event.{rest}`?")
            } else {
                format!("; event fields are written `event.{var}`")
            };
            cx.error(
                path,
                format!("unknown parameter `{var}`{hint} (parameters are `event.*`, `oauth.<account>`, `push.*`, `now`)"),
            );
        }
    }
}

/// `; did you mean `x`?` for the closest candidate, or nothing: the hint
/// appended to "unknown name" errors.
pub fn did_you_mean(word: &str, candidates: impl Iterator<Item = String>) -> String {
    let best = candidates
        .map(|c| (strsim::jaro_winkler(word, &c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, c)) => format!("; did you mean `{c}`?"),
        None => String::new(),
    }
}

fn check_url(cx: &mut CheckCx<'_>, path: &str, text: &str) {
    // A templated URL is checked once rendered; a fixed one now.
    if template::is_template(text) || text.contains("${") {
        let prefix = text
            .split(template::VARIABLE_START)
            .next()
            .unwrap_or_default();
        if path == "http.url" && template::is_template(text) && !fixed_origin(text) {
            cx.warning(
                path,
                "a parameter decides the scheme, host or user:password of this URL: an event value could send the request (and its headers) to another host; write `https://host/` literally and put values in the path with `| path` or in `query:`",
            );
        }
        if path == "http.url" && fixed_origin(text) {
            if let Some(expr) = unencoded_path_parameter(text) {
                cx.warning(
                    path,
                    format!("`<< {expr} >>` is put into the URL's path unencoded: an event value with `/`, `..`, `\\`, `?` or `#` changes the path and query (`../../admin?x=1` reaches `/admin?x=1`); write `<< {expr} | path >>` (one encoded segment) or pass it in `query:`"),
                );
            }
        }
        if !(prefix.is_empty() || prefix.starts_with("http://") || prefix.starts_with("https://")) {
            cx.error(path, "URL must start with `http://` or `https://`");
        }
        return;
    }
    match url::Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        Ok(u) => cx.error(
            path,
            format!("URL scheme must be http or https, found `{}`", u.scheme()),
        ),
        Err(e) => cx.error(path, format!("not a URL: {e}")),
    }
}

/// The first parameter of a URL template that takes an event value (it
/// names `event`) into the path — before any literal `?` or `#` — without
/// a last `| path` or `| urlencode` filter, as written (trimmed).
fn unencoded_path_parameter(text: &str) -> Option<&str> {
    let mut rest = text;
    let mut offset = 0;
    while let Some(start) = rest.find(template::VARIABLE_START) {
        let before = &text[..offset + start];
        if before.contains(['?', '#']) {
            return None;
        }
        let inner_start = start + template::VARIABLE_START.len();
        let end = rest[inner_start..].find(template::VARIABLE_END)?;
        let expr = rest[inner_start..inner_start + end].trim();
        let last_filter = expr
            .rsplit('|')
            .next()
            .unwrap_or_default()
            .trim()
            .split(['(', ' '])
            .next()
            .unwrap_or_default();
        let encoded = expr.contains('|') && matches!(last_filter, "path" | "urlencode");
        if expr.contains("event") && !encoded {
            return Some(expr);
        }
        let next = inner_start + end + template::VARIABLE_END.len();
        offset += next;
        rest = &rest[next..];
    }
    None
}

/// Whether the text before a URL's first parameter or statement fixes its
/// scheme, user:password and host: it has `://` and then the end of the
/// authority (`/`, `?` or `#`). A URL starting with a `${env:…}` secret is
/// the operator's choice, not an event's.
fn fixed_origin(text: &str) -> bool {
    let cut = [
        template::VARIABLE_START,
        template::BLOCK_START,
        template::COMMENT_START,
    ]
    .iter()
    .filter_map(|d| text.find(d))
    .min()
    .unwrap_or(text.len());
    let fixed = text[..cut].trim_start();
    fixed.starts_with("${")
        || fixed
            .split_once("://")
            .is_some_and(|(_, rest)| rest.contains(['/', '?', '#']))
}

/// A parameter in an `on*` handler or `srcdoc` of an HTML body is an
/// error: HTML escaping does not neutralise a value there (the handler
/// runs it as script after the entities are decoded, `srcdoc` renders it
/// as a document). In `style` it is a warning: CSS can load URLs.
fn check_html_attributes(cx: &mut CheckCx<'_>, field: &str, source: &str) {
    for (attr, value) in crate::targets::templated_attributes(source) {
        if crate::targets::is_script_attribute(&attr) {
            cx.error(
                field,
                format!(
                    "a parameter in the `{attr}` attribute (`{attr}=\"{}\"`): HTML escaping does not make an event value safe in an event handler or `srcdoc`; move the value into a data attribute or the text",
                    value.chars().take(80).collect::<String>()
                ),
            );
        } else if attr == "style" {
            cx.warning(
                field,
                format!(
                    "a parameter in a `style` attribute (`style=\"{}\"`): an event value can change the layout or load a URL there; prefer fixed styles",
                    value.chars().take(80).collect::<String>()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_is_fixed_only_when_the_authority_ends_before_a_parameter() {
        assert!(fixed_origin(
            "https://api.example.com/v1/<< event.id | path >>"
        ));
        assert!(fixed_origin("https://api.example.com?x=<< event.id >>"));
        assert!(fixed_origin("${env:CRM_URL}/<< event.id >>"));
        assert!(!fixed_origin("https://<< event.host >>/x"));
        assert!(!fixed_origin("https://api.example.com<< event.path >>"));
        assert!(!fixed_origin("<< event.url >>"));
        assert!(!fixed_origin("https://<< event.user >>@api.example.com/"));
    }

    #[test]
    fn suggestions_pick_the_closest_name() {
        let c = || ["ms_mail".to_string(), "crm".to_string()].into_iter();
        assert_eq!(did_you_mean("ms_mial", c()), "; did you mean `ms_mail`?");
        assert_eq!(did_you_mean("zzz", c()), "");
    }
}
