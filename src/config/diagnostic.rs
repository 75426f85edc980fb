//! Problems found while loading a folder, each with its file, line and
//! column, printed the way compilers do: `file:line:col: error: message`.

use std::fmt;
use std::path::PathBuf;

use super::locate::Position;

/// How bad a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The document is not loaded; `check` fails.
    Error,
    /// Loaded, but worth a look (a literal secret in a file, a secret about to expire).
    Warning,
}

/// One problem in one file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// The file, as given (relative to where pushwerk was started when it was given so).
    pub file: PathBuf,
    /// Where in the file.
    pub line: usize,
    /// Column, counting characters from 1.
    pub column: usize,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong and what was expected.
    pub message: String,
}

impl Diagnostic {
    /// An error at `pos` in `file`.
    pub fn error(file: impl Into<PathBuf>, pos: Position, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.into(),
            line: pos.line.max(1),
            column: pos.column.max(1),
            severity: Severity::Error,
            message: message.into(),
        }
    }

    /// A warning at `pos` in `file`.
    pub fn warning(file: impl Into<PathBuf>, pos: Position, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, pos, message)
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {sev}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}
