//! Checking and compiling one push: its trigger, its target, every template
//! in it, every parameter and account it refers to.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::account::OAuthAccount;
use super::check_cx::LoadCx;
use super::diagnostic::Diagnostic;
use super::locate::DocumentMap;
use super::model::{PushDoc, PushSpec};
use crate::schedule::Schedule;
use crate::secret::{self, EnvLookup, Secret, SecretError};
pub use crate::targets::CheckCx;
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
    /// The templated leaves of the target, by path (`to[0]`, `json.phone`).
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
    let mut cx = LoadCx {
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

    let mut compiled = CompiledPush {
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
    for crate::targets::Leaf {
        path: rel,
        source: text,
        json: typed_ctx,
    } in target.leaves()
    {
        let yaml_path = if rel.is_empty() {
            root.to_owned()
        } else if rel.starts_with('[') {
            format!("{root}{rel}")
        } else {
            format!("{root}.{rel}")
        };
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

    target.check(&mut CheckCx::new(&mut cx));
    compiled.accounts.extend(std::mem::take(&mut cx.used));
    let trigger = trigger?;
    Some((doc.into_spec(target), trigger, compiled))
}

/// Errors for filters and tests the template `name` uses that do not exist
/// (minijinja would report them only when a render reaches them).
fn report_unknown_filters(
    cx: &mut LoadCx<'_>,
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

/// Checks one parameter reference against the catalogue.
fn check_param(cx: &mut LoadCx<'_>, path: &str, var: &str, compiled: &mut CompiledPush) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_pick_the_closest_name() {
        let c = || ["ms_mail".to_string(), "crm".to_string()].into_iter();
        assert_eq!(did_you_mean("ms_mial", c()), "; did you mean `ms_mail`?");
        assert_eq!(did_you_mean("zzz", c()), "");
    }
}
