//! The folder loader's side of a target check: [`LoadCx`] turns the YAML
//! paths a target reports at into file positions and checks account names
//! against the folder, behind the targets' [`CheckSink`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::account::OAuthAccount;
use super::compile::did_you_mean;
use super::diagnostic::Diagnostic;
use super::locate::DocumentMap;
use crate::secret::EnvLookup;
use crate::targets::CheckSink;

/// The state of one push's check: where its diagnostics go, and the
/// accounts it uses.
pub(crate) struct LoadCx<'a> {
    pub(super) file: &'a Path,
    pub(super) map: &'a DocumentMap,
    pub(super) base_dir: &'a Path,
    pub(super) accounts: &'a BTreeMap<String, OAuthAccount>,
    pub(super) env_lookup: &'a EnvLookup,
    pub(super) diagnostics: &'a mut Vec<Diagnostic>,
    pub(super) used: BTreeSet<String>,
}

impl LoadCx<'_> {
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
}

impl CheckSink for LoadCx<'_> {
    fn error(&mut self, path: &str, message: String) {
        LoadCx::error(self, path, message)
    }
    fn error_at_key(&mut self, path: &str, message: String) {
        LoadCx::error_at_key(self, path, message)
    }
    fn warning(&mut self, path: &str, message: String) {
        LoadCx::warning(self, path, message)
    }
    fn use_account(&mut self, path: &str, name: &str) {
        LoadCx::use_account(self, path, name)
    }
}
