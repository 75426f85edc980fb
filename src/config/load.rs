//! Loading a folder of YAML files into a [`Catalog`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

pub use super::account::OAuthAccount;
use super::compile::{compile_push, CompiledPush, Trigger};
use super::diagnostic::Diagnostic;
use super::folder::{check_nesting, collect_files, read_source};
use super::locate::{map_documents, DocumentMap, Position};
use super::model::{OAuthAccountSpec, PushDoc, PushSpec};
use crate::secret::{self, EnvLookup, Secret, SecretError};

/// What stops a folder from loading at all (a broken file never does).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The folder (or a sub-folder) cannot be listed.
    #[error("cannot read push folder {path}: {source}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// How a folder is loaded.
pub struct LoadOptions<'a> {
    /// Where `${env:NAME}` values come from.
    pub env: &'a EnvLookup,
}

impl Default for LoadOptions<'_> {
    fn default() -> Self {
        LoadOptions {
            env: &secret::process_env,
        }
    }
}

/// A push as loaded: its definition, trigger and compiled templates.
#[derive(Debug, Clone)]
pub struct Push {
    /// The definition as written.
    pub spec: PushSpec,
    /// The file it was read from.
    pub file: PathBuf,
    /// Where its document starts.
    pub position: Position,
    /// What fires it.
    pub trigger: Trigger,
    /// Its templates, ready to render.
    pub compiled: CompiledPush,
}

impl Push {
    /// The push's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

/// Everything loaded from one folder: the pushes and accounts that are valid,
/// and every problem found in the rest.
pub struct Catalog {
    /// The folder.
    pub root: PathBuf,
    /// Every YAML file read, sorted.
    pub files: Vec<PathBuf>,
    /// Valid pushes, in file order.
    pub pushes: Vec<Push>,
    /// Valid accounts by name.
    pub accounts: BTreeMap<String, OAuthAccount>,
    /// Every error and warning, sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
    /// The template environment holding every compiled template.
    pub templates: Arc<minijinja::Environment<'static>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("root", &self.root)
            .field("pushes", &self.pushes.len())
            .field("accounts", &self.accounts.len())
            .field("diagnostics", &self.diagnostics.len())
            .finish()
    }
}

impl Catalog {
    /// Loads every `*.yaml` / `*.yml` file below `root` (hidden entries skipped).
    pub fn load(root: &Path, options: &LoadOptions<'_>) -> Result<Catalog, LoadError> {
        let mut files = Vec::new();
        collect_files(root, &mut files)?;
        files.sort();
        Ok(Self::load_files(root, files, options))
    }

    /// Loads the given files, as if they were the folder `root`.
    pub fn load_files(root: &Path, files: Vec<PathBuf>, options: &LoadOptions<'_>) -> Catalog {
        let sources: Vec<(PathBuf, Result<String, String>)> =
            files.iter().map(|f| (f.clone(), read_source(f))).collect();
        Self::from_sources(root, sources, options)
    }

    /// Loads from in-memory sources: `(file name, text or read error)`.
    pub fn from_sources(
        root: &Path,
        sources: Vec<(PathBuf, Result<String, String>)>,
        options: &LoadOptions<'_>,
    ) -> Catalog {
        let mut diagnostics = Vec::new();
        let mut raw_pushes: Vec<RawDoc<PushDoc>> = Vec::new();
        let mut raw_accounts: Vec<RawDoc<OAuthAccountSpec>> = Vec::new();
        let files: Vec<PathBuf> = sources.iter().map(|(f, _)| f.clone()).collect();
        for (file, text) in sources {
            match text {
                Err(reason) => diagnostics.push(Diagnostic::error(
                    &file,
                    Position { line: 1, column: 1 },
                    reason,
                )),
                Ok(text) => parse_checked(
                    &file,
                    &text,
                    &mut raw_pushes,
                    &mut raw_accounts,
                    &mut diagnostics,
                ),
            }
        }

        // Accounts first: pushes are checked against them.
        let mut accounts: BTreeMap<String, OAuthAccount> = BTreeMap::new();
        for raw in raw_accounts {
            if let Some(first) = accounts.get(&raw.spec.name) {
                diagnostics.push(Diagnostic::error(
                    &raw.file,
                    raw.map.value("name"),
                    format!(
                        "duplicate account name `{}` (first defined in {}:{})",
                        raw.spec.name,
                        first.file.display(),
                        first.position.line
                    ),
                ));
                continue;
            }
            if let Some(account) = resolve_account(raw, options, &mut diagnostics) {
                accounts.insert(account.spec.name.clone(), account);
            }
        }

        let mut env = crate::template::environment(crate::targets::html_fields());
        let mut pushes: Vec<Push> = Vec::new();
        for raw in raw_pushes {
            if let Some(first) = pushes.iter().find(|p| p.spec.name == raw.spec.name) {
                diagnostics.push(Diagnostic::error(
                    &raw.file,
                    raw.map.value("name"),
                    format!(
                        "duplicate push name `{}` (first defined in {}:{})",
                        raw.spec.name,
                        first.file.display(),
                        first.position.line
                    ),
                ));
                continue;
            }
            let base_dir = raw.file.parent().unwrap_or(Path::new(".")).to_path_buf();
            let before = diagnostics.len();
            let compiled = compile_push(
                raw.spec,
                &raw.file,
                &raw.map,
                &base_dir,
                &accounts,
                options.env,
                &mut env,
                &mut diagnostics,
            );
            let failed = diagnostics[before..]
                .iter()
                .any(|d| d.severity == super::Severity::Error);
            if let (Some((spec, trigger, compiled)), false) = (compiled, failed) {
                pushes.push(Push {
                    spec,
                    file: raw.file,
                    position: raw.map.start,
                    trigger,
                    compiled,
                });
            }
        }
        diagnostics.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        diagnostics.dedup();
        Catalog {
            root: root.to_path_buf(),
            files,
            pushes,
            accounts,
            diagnostics,
            templates: Arc::new(env),
        }
    }

    /// The push named `name`.
    pub fn push(&self, name: &str) -> Option<&Push> {
        self.pushes.iter().find(|p| p.spec.name == name)
    }

    /// Number of errors (warnings not counted).
    pub fn error_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == super::Severity::Error)
            .count()
    }
}

struct RawDoc<T> {
    spec: T,
    file: PathBuf,
    map: DocumentMap,
}

/// serde_yaml's message without its trailing " at line L column C" (the
/// position is printed in front instead).
fn yaml_message(err: &serde_yaml::Error) -> String {
    let msg = err.to_string();
    match msg.rfind(" at line ") {
        Some(i) if err.location().is_some() => msg[..i].to_owned(),
        _ => msg,
    }
}

/// serde_yaml's words for an integer beyond 64 bits ("`in_flight`:
/// invalid type: integer `1e23` as u128, expected any YAML value") said
/// neither what is wrong nor what is allowed: name the field, the number's
/// problem and, where one applies, the field's range.
fn huge_integer(msg: &str) -> Option<String> {
    let (path, rest) = match msg.split_once(": invalid type: integer `") {
        Some((path, rest)) => (Some(path), rest),
        None => (None, msg.strip_prefix("invalid type: integer `")?),
    };
    let (number, tail) = rest.split_once('`')?;
    if !(tail.starts_with(" as u128") || tail.starts_with(" as i128")) {
        return None;
    }
    let shown: String = number.chars().take(40).collect();
    let range = match path.map(|p| p.rsplit('.').next().unwrap_or(p)) {
        Some("in_flight") => "; `in_flight` is from 1 to 1024",
        _ => "",
    };
    Some(match path {
        Some(path) => format!(
            "`{path}`: the number {shown} is out of range (whole numbers in definitions fit in 64 bits){range}"
        ),
        None => format!(
            "the number {shown} is out of range (whole numbers in definitions fit in 64 bits)"
        ),
    })
}

fn yaml_position(err: &serde_yaml::Error) -> Position {
    err.location()
        .map(|l| Position {
            line: l.line(),
            column: l.column(),
        })
        .unwrap_or(Position { line: 1, column: 1 })
}

/// [`parse_file`] after the nesting pre-scan: a file nested too deep is
/// one located error, never handed to a parser (which would take quadratic
/// time over it and hold up the rest of the folder).
fn parse_checked(
    file: &Path,
    text: &str,
    pushes: &mut Vec<RawDoc<PushDoc>>,
    accounts: &mut Vec<RawDoc<OAuthAccountSpec>>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    match check_nesting(text) {
        Err((pos, reason)) => diagnostics.push(Diagnostic::error(file, pos, reason)),
        Ok(()) => parse_file(file, text, pushes, accounts, diagnostics),
    }
}

fn parse_file(
    file: &Path,
    text: &str,
    pushes: &mut Vec<RawDoc<PushDoc>>,
    accounts: &mut Vec<RawDoc<OAuthAccountSpec>>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    // Pass 1: syntax, reported in serde_yaml's words.
    let values: Result<Vec<serde_yaml::Value>, _> = serde_yaml::Deserializer::from_str(text)
        .map(serde_yaml::Value::deserialize)
        .collect();
    let values = match values {
        Ok(v) => v,
        Err(e) => {
            diagnostics.push(Diagnostic::error(
                file,
                yaml_position(&e),
                huge_integer(&yaml_message(&e))
                    .unwrap_or_else(|| format!("YAML syntax error: {}", yaml_message(&e))),
            ));
            return;
        }
    };
    let maps = map_documents(text).unwrap_or_default();
    // Both parsers see the same documents, empty ones included; should they
    // ever disagree, positions fall back to the start of the file.
    let aligned = maps.len() == values.len();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let Some(value) = values.get(i) else { break };
        if value.is_null() {
            continue;
        }
        let map = if aligned {
            maps[i].clone()
        } else {
            DocumentMap::default()
        };
        if !value.is_mapping() {
            diagnostics.push(Diagnostic::error(
                file,
                map.start,
                format!(
                    "expected a mapping (a push, or an account with `kind: oauth_account`), found {}",
                    kind_of(value)
                ),
            ));
            continue;
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("push");
        match kind {
            "oauth_account" => match OAuthAccountSpec::deserialize(de) {
                Ok(spec) => accounts.push(RawDoc {
                    spec,
                    file: file.to_path_buf(),
                    map,
                }),
                Err(e) => diagnostics.extend(deserialize_errors::<OAuthAccountSpec>(
                    file, &map, value, &e, "account",
                )),
            },
            "push" => match PushDoc::deserialize(de) {
                Ok(spec) => pushes.push(RawDoc {
                    spec,
                    file: file.to_path_buf(),
                    map,
                }),
                Err(e) => {
                    diagnostics.extend(deserialize_errors::<PushDoc>(file, &map, value, &e, "push"))
                }
            },
            other => diagnostics.push(Diagnostic::error(
                file,
                map.value("kind"),
                format!("unknown kind `{other}`: expected `push` (the default) or `oauth_account`"),
            )),
        }
    }
}

/// The diagnostics of a document serde refused: serde stops at its first
/// problem, so every unknown field of the document is reported as well
/// (found with the type's JSON Schema), each at its key with the closest
/// allowed name.
fn deserialize_errors<T: schemars::JsonSchema>(
    file: &Path,
    map: &DocumentMap,
    value: &serde_yaml::Value,
    err: &serde_yaml::Error,
    what: &str,
) -> Vec<Diagnostic> {
    let single = || {
        vec![Diagnostic::error(
            file,
            yaml_position(err),
            format!("{what}: {}", yaml_message(err)),
        )]
    };
    let (Ok(json), Ok(schema)) = (
        serde_json::to_value(value),
        serde_json::to_value(schemars::schema_for!(T)),
    ) else {
        return single();
    };
    let unknown = super::diagnostic::unknown_fields(&json, &schema);
    // serde's own message stays unless it is about one of the unknown fields
    // reported below (a type error elsewhere is still news).
    let mut out = if unknown.is_empty() || !err.to_string().contains("unknown field") {
        single()
    } else {
        Vec::new()
    };
    out.extend(unknown.into_iter().map(|u| {
        let hint = super::compile::did_you_mean(&u.field, u.expected.iter().cloned());
        let expected: Vec<String> = u.expected.iter().map(|e| format!("`{e}`")).collect();
        let parent = if u.parent.is_empty() {
            String::new()
        } else {
            format!("{}: ", u.parent)
        };
        Diagnostic::error(
            file,
            map.key(&u.path),
            format!(
                "{what}: {parent}unknown field `{}`{hint} (expected one of {})",
                u.field,
                expected.join(", ")
            ),
        )
    }));
    out
}

fn kind_of(value: &serde_yaml::Value) -> &'static str {
    match value {
        serde_yaml::Value::Null => "nothing",
        serde_yaml::Value::Bool(_) => "a boolean",
        serde_yaml::Value::Number(_) => "a number",
        serde_yaml::Value::String(_) => "a string",
        serde_yaml::Value::Sequence(_) => "a sequence",
        serde_yaml::Value::Mapping(_) => "a mapping",
        serde_yaml::Value::Tagged(_) => "a tagged value",
    }
}

fn resolve_account(
    raw: RawDoc<OAuthAccountSpec>,
    options: &LoadOptions<'_>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<OAuthAccount> {
    let spec = &raw.spec;
    let file = &raw.file;
    let base_dir = file.parent().unwrap_or(Path::new("."));
    let mut ok = true;
    if !is_parameter_name(&spec.name) {
        diagnostics.push(Diagnostic::error(
            file,
            raw.map.value("name"),
            format!(
                "account name `{}` cannot be a parameter name: use letters, digits and `_`, starting with a letter (it becomes `oauth.<name>`)",
                spec.name
            ),
        ));
        ok = false;
    }
    for (field, value) in [
        ("token_url", &spec.token_url),
        (
            "authorize_url",
            spec.authorize_url.as_ref().unwrap_or(&spec.token_url),
        ),
    ] {
        match url::Url::parse(value) {
            Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {}
            Ok(u) => {
                diagnostics.push(Diagnostic::error(
                    file,
                    raw.map.value(field),
                    format!(
                        "`{field}` must be an http(s) URL, found scheme `{}`",
                        u.scheme()
                    ),
                ));
                ok = false;
            }
            Err(e) => {
                diagnostics.push(Diagnostic::error(
                    file,
                    raw.map.value(field),
                    format!("`{field}` is not a URL: {e}"),
                ));
                ok = false;
            }
        }
    }
    if let Some(expires) = spec.client_secret_expires {
        let days = (expires - chrono::Utc::now().date_naive()).num_days();
        if days < 0 {
            diagnostics.push(Diagnostic::warning(
                file,
                raw.map.value("client_secret_expires"),
                format!("the client secret of `{}` expired on {expires}: token requests fail with invalid_client until a new one is set", spec.name),
            ));
        } else if days <= SECRET_EXPIRY_WARNING_DAYS {
            diagnostics.push(Diagnostic::warning(
                file,
                raw.map.value("client_secret_expires"),
                format!(
                    "the client secret of `{}` expires on {expires}, in {}: create a new one in Azure before then",
                    spec.name,
                    super::diagnostic::counted(days.unsigned_abs() as usize, "day", "days")
                ),
            ));
        }
    }
    let label = |field: &str| format!("{}.{field}", spec.name);
    let mut check = |field_path: &str, text: &str| -> Result<Secret, SecretError> {
        let refs = secret::find_refs(text);
        if let Ok(refs) = &refs {
            if refs.is_empty() && field_path == "client_secret" {
                diagnostics.push(Diagnostic::warning(
                    file,
                    raw.map.value(field_path),
                    "client_secret is written into the file: reference it as `${env:NAME}` or `${file:PATH}` so it stays out of the folder",
                ));
            }
        }
        let resolved = secret::resolve_field(text, &label(field_path), base_dir, options.env);
        if let Err(e) = &resolved {
            let pos = raw.map.value(field_path);
            match e {
                SecretError::Malformed(_) => {
                    diagnostics.push(Diagnostic::error(file, pos, e.to_string()))
                }
                _ => diagnostics.push(Diagnostic::warning(
                    file,
                    pos,
                    format!(
                        "{e}; token requests of account `{}` fail until it is",
                        spec.name
                    ),
                )),
            }
        }
        resolved
    };
    let client_secret = spec
        .client_secret
        .as_deref()
        .map(|s| check("client_secret", s));
    let extra: BTreeMap<String, Result<Secret, SecretError>> = spec
        .extra
        .iter()
        .map(|(k, v)| (k.clone(), check(&format!("extra.{k}"), v)))
        .collect();
    let malformed = |r: &Result<Secret, SecretError>| matches!(r, Err(SecretError::Malformed(_)));
    if client_secret.as_ref().is_some_and(malformed) || extra.values().any(malformed) {
        ok = false;
    }
    ok.then_some(OAuthAccount {
        position: raw.map.start,
        spec: raw.spec,
        file: raw.file,
        client_secret,
        extra,
    })
}

/// A client secret expiring within this many days is warned about.
pub const SECRET_EXPIRY_WARNING_DAYS: i64 = 30;

/// Whether `name` can be used after `oauth.` in a template.
pub(crate) fn is_parameter_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
