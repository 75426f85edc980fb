//! Secrets in configuration: `${env:NAME}` and `${file:PATH}` references,
//! resolved when the folder is loaded, and the [`Secret`] wrapper that keeps a
//! resolved value out of every `Debug`, `Display` and serialised form.

pub mod token_file;

use std::fmt;
use std::ops::Range;
use std::path::Path;

/// A secret value with the label it is shown under (`env:MS_SECRET`,
/// `oauth.ms_mail`, `ms_mail.client_secret`). Printing it prints the
/// placeholder `‹label›`; only [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    label: String,
    value: String,
}

impl Secret {
    /// Wraps `value`, to be shown as `‹label›`.
    pub fn new(label: impl Into<String>, value: impl Into<String>) -> Secret {
        Secret {
            label: label.into(),
            value: value.into(),
        }
    }

    /// The value itself: for the request that needs it, nothing else.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The name the secret is shown under.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// What output shows instead of the value: `‹label›`.
    pub fn placeholder(&self) -> String {
        placeholder(&self.label)
    }
}

/// The masked form of a secret named `label`.
pub fn placeholder(label: &str) -> String {
    format!("‹{label}›")
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(‹{}›)", self.label)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "‹{}›", self.label)
    }
}

/// Where a referenced secret comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// `${env:NAME}`: an environment variable.
    Env(String),
    /// `${file:PATH}`: a file's content, trailing newline removed; a relative
    /// path is taken from the folder of the YAML file.
    File(String),
}

impl SecretSource {
    /// The label the value is shown under: `env:NAME` or `file:PATH`.
    pub fn label(&self) -> String {
        match self {
            SecretSource::Env(n) => format!("env:{n}"),
            SecretSource::File(p) => format!("file:{p}"),
        }
    }
}

/// Why a secret reference could not be used. Never contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// `${env:` or `${file:` without its closing brace, or with an empty name.
    #[error("malformed secret reference {0:?}: expected `${{env:NAME}}` or `${{file:PATH}}`")]
    Malformed(String),
    /// The environment variable is not set.
    #[error("environment variable {0} is not set (referenced as `${{env:{0}}}`)")]
    EnvMissing(String),
    /// The file cannot be read.
    #[error("cannot read secret file {path}: {reason}")]
    File {
        /// The path as written.
        path: String,
        /// The I/O error.
        reason: String,
    },
}

/// Looks up environment variables; tests pass their own instead of mutating
/// the process environment.
pub type EnvLookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// The process environment as an [`EnvLookup`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Every `${env:…}` / `${file:…}` reference in `text`, with its byte range.
/// Other `${…}` text is left alone (a raw body may hold a JavaScript template).
pub fn find_refs(text: &str) -> Result<Vec<(Range<usize>, SecretSource)>, SecretError> {
    let mut refs = Vec::new();
    let mut from = 0;
    while let Some(off) = text[from..].find("${") {
        let start = from + off;
        let rest = &text[start + 2..];
        let kind = if rest.starts_with("env:") {
            Some(true)
        } else if rest.starts_with("file:") {
            Some(false)
        } else {
            None
        };
        let Some(is_env) = kind else {
            from = start + 2;
            continue;
        };
        let prefix = if is_env { 4 } else { 5 };
        let Some(close) = rest.find('}') else {
            return Err(SecretError::Malformed(
                text[start..].chars().take(40).collect(),
            ));
        };
        let name = rest[prefix..close].trim();
        let valid_env = is_env
            && !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if (is_env && !valid_env) || name.is_empty() {
            return Err(SecretError::Malformed(
                text[start..start + 3 + close].to_owned(),
            ));
        }
        let source = if is_env {
            SecretSource::Env(name.to_owned())
        } else {
            SecretSource::File(name.to_owned())
        };
        refs.push((start..start + 3 + close, source));
        from = start + 3 + close;
    }
    Ok(refs)
}

/// Reads the value a reference points at.
pub fn resolve(
    source: &SecretSource,
    base_dir: &Path,
    env: &EnvLookup,
) -> Result<Secret, SecretError> {
    let value = match source {
        SecretSource::Env(name) => {
            env(name).ok_or_else(|| SecretError::EnvMissing(name.clone()))?
        }
        SecretSource::File(path) => {
            let full = base_dir.join(path);
            let mut text = std::fs::read_to_string(&full).map_err(|e| SecretError::File {
                path: path.clone(),
                reason: e.kind().to_string(),
            })?;
            while text.ends_with('\n') || text.ends_with('\r') {
                text.pop();
            }
            text
        }
    };
    Ok(Secret::new(source.label(), value))
}

/// Resolves a field whose whole value is secret (a client secret, an extra
/// token-request value): references are replaced by their values; a literal
/// value is kept, and is secret all the same.
pub fn resolve_field(
    text: &str,
    label: &str,
    base_dir: &Path,
    env: &EnvLookup,
) -> Result<Secret, SecretError> {
    let refs = find_refs(text)?;
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (range, source) in refs {
        out.push_str(&text[last..range.start]);
        out.push_str(resolve(&source, base_dir, env)?.expose());
        last = range.end;
    }
    out.push_str(&text[last..]);
    Ok(Secret::new(label, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_env_and_file_refs_and_leaves_other_dollar_braces() {
        let refs = find_refs("Bearer ${env:API_KEY} ${x} ${file:secrets/k.txt}").unwrap();
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[0].1, SecretSource::Env("API_KEY".into()));
        assert_eq!(refs[0].0, 7..21);
        assert_eq!(refs[1].1, SecretSource::File("secrets/k.txt".into()));
    }

    #[test]
    fn malformed_refs_are_errors() {
        assert!(matches!(
            find_refs("${env:A"),
            Err(SecretError::Malformed(_))
        ));
        assert!(matches!(
            find_refs("${env:}"),
            Err(SecretError::Malformed(_))
        ));
        assert!(matches!(
            find_refs("${env:A-B}"),
            Err(SecretError::Malformed(_))
        ));
    }

    #[test]
    fn resolved_secret_never_prints_its_value() {
        let env = |n: &str| (n == "K").then(|| "CANARY-123".to_owned());
        let s = resolve_field("x-${env:K}", "acc.client_secret", Path::new("."), &env).unwrap();
        assert_eq!(s.expose(), "x-CANARY-123");
        assert!(!format!("{s:?} {s}").contains("CANARY"));
        let missing = resolve_field("${env:NOPE}", "l", Path::new("."), &env).unwrap_err();
        assert_eq!(missing, SecretError::EnvMissing("NOPE".into()));
    }
}
