//! The one template environment of pushwerk.
//!
//! Parameters are written `<< event.caller_number >>`: the delimiters are set
//! here and nowhere else. Undefined parameters are errors (strict), and
//! minijinja's debug output is off everywhere, because it prints every
//! variable a failing template used — access tokens included. The builtin
//! `debug()` function is removed for the same reason.

pub mod filters;
mod text;

use std::collections::BTreeSet;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};

pub use text::TemplateText;

/// Opens a parameter: `<< event.x >>`.
pub const VARIABLE_START: &str = "<<";
/// Closes a parameter.
pub const VARIABLE_END: &str = ">>";
/// Opens a statement: `<% if event.x %>`.
pub const BLOCK_START: &str = "<%";
/// Closes a statement.
pub const BLOCK_END: &str = "%>";
/// Opens a comment: `<# note #>`.
pub const COMMENT_START: &str = "<#";
/// Closes a comment.
pub const COMMENT_END: &str = "#>";

/// Instruction budget of one render: bounds what a template can cost.
const FUEL: u64 = 100_000;

/// A new environment with pushwerk's syntax, strictness and filters, and
/// without any way to print the render context. Templates whose names end
/// in one of `html_fields` (`#graph_mail.html`; the targets say which)
/// HTML-escape their parameters.
pub fn environment(html_fields: Vec<String>) -> Environment<'static> {
    let mut env = Environment::new();
    let syntax = SyntaxConfig::builder()
        .variable_delimiters(VARIABLE_START, VARIABLE_END)
        .block_delimiters(BLOCK_START, BLOCK_END)
        .comment_delimiters(COMMENT_START, COMMENT_END)
        .keep_trailing_newline(true)
        .build()
        .expect("the pushwerk delimiters are distinct");
    env.set_syntax(syntax);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_debug(false);
    env.remove_global("debug");
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(64);
    // Escaping is chosen deliberately, not from what looks like a file
    // extension at the end of a template's name: HTML mail bodies escape
    // parameters (`| safe` inserts markup), nothing else does.
    env.set_auto_escape_callback(move |name| {
        if html_fields.iter().any(|f| name.ends_with(f.as_str())) {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    // Payloads want `true`/`false`, and a null prints as nothing.
    env.set_formatter(|out, state, value| match value.kind() {
        ValueKind::None => Ok(()),
        ValueKind::Bool => {
            let text = if value.is_true() { "true" } else { "false" };
            out.write_str(text).map_err(|e| {
                minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string())
            })
        }
        _ => minijinja::escape_formatter(out, state, value),
    });
    filters::register(&mut env);
    env
}

/// If `text` is exactly one parameter (`<< event.duration >>`, surrounding
/// blanks allowed), the expression inside it. Such a leaf of a structured body
/// keeps its type: a number stays a number.
pub fn single_parameter(text: &str) -> Option<&str> {
    let inner = text
        .trim()
        .strip_prefix(VARIABLE_START)?
        .strip_suffix(VARIABLE_END)?;
    let clash = [VARIABLE_START, VARIABLE_END, BLOCK_START, COMMENT_START];
    if clash.iter().any(|d| inner.contains(d)) || inner.trim().is_empty() {
        return None;
    }
    Some(inner.trim())
}

/// Whether `text` contains template syntax at all.
pub fn is_template(text: &str) -> bool {
    text.contains(VARIABLE_START) || text.contains(BLOCK_START) || text.contains(COMMENT_START)
}

/// The parameters a compiled template or expression refers to, as dotted
/// paths (`oauth.ms_mail`, `event.caller_number`).
pub fn referenced(vars: std::collections::HashSet<String>) -> BTreeSet<String> {
    vars.into_iter().collect()
}

/// Filter names offered as "did you mean" for an unknown filter (those the
/// environment really has).
const FILTER_NAMES: [&str; 54] = [
    "safe",
    "escape",
    "e",
    "lower",
    "upper",
    "title",
    "capitalize",
    "replace",
    "length",
    "count",
    "items",
    "dictsort",
    "reverse",
    "trim",
    "join",
    "split",
    "lines",
    "default",
    "d",
    "round",
    "abs",
    "int",
    "float",
    "attr",
    "first",
    "last",
    "min",
    "max",
    "sort",
    "list",
    "string",
    "bool",
    "batch",
    "slice",
    "sum",
    "select",
    "reject",
    "map",
    "unique",
    "chain",
    "zip",
    "format",
    "urlencode",
    "tojson",
    "indent",
    "pprint",
    "wordcount",
    "sha256",
    "e164",
    "iso8601",
    "strftime",
    "json",
    "path",
    "selectattr",
];

/// A filter or test a template uses that the environment does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    /// `filter` or `test`.
    pub kind: &'static str,
    /// The name as written.
    pub name: String,
    /// The line inside the template (from 1).
    pub line: usize,
    /// A known name close to it, if any.
    pub suggestion: Option<String>,
}

/// Whether `env` has a filter (`test == false`) or test called `name`: asks
/// minijinja by evaluating a probe, the only public way.
fn exists(env: &Environment<'_>, name: &str, test: bool) -> bool {
    let source = if test {
        format!("none is {name}")
    } else {
        format!("none | {name}")
    };
    match env.compile_expression(&source) {
        Err(_) => true,
        Ok(expr) => match expr.eval(minijinja::context! {}) {
            Ok(_) => true,
            Err(e) => !matches!(
                e.kind(),
                minijinja::ErrorKind::UnknownFilter | minijinja::ErrorKind::UnknownTest
            ),
        },
    }
}

/// Every filter and test the compiled template `name` uses that `env` does
/// not have: minijinja reports those only when the render reaches them, so
/// `check` looks for them in the compiled instructions.
pub fn unknown_filters(env: &Environment<'_>, name: &str) -> Vec<UnknownName> {
    use minijinja::machinery::{get_compiled_template, Instruction, Instructions};
    let Ok(tmpl) = env.get_template(name) else {
        return Vec::new();
    };
    let compiled = get_compiled_template(&tmpl);
    let mut out: Vec<UnknownName> = Vec::new();
    let mut scan = |instructions: &Instructions<'_>| {
        let mut idx = 0;
        while let Some(instr) = instructions.get(idx) {
            let found = match instr {
                Instruction::ApplyFilter(n, _, _) => Some(("filter", *n)),
                Instruction::PerformTest(n, _, _) => Some(("test", *n)),
                _ => None,
            };
            if let Some((kind, n)) = found {
                let known = out.iter().any(|u| u.kind == kind && u.name == n);
                if !known && !exists(env, n, kind == "test") {
                    let suggestion = (kind == "filter")
                        .then(|| {
                            FILTER_NAMES
                                .iter()
                                .map(|c| (strsim::jaro_winkler(n, c), *c))
                                .filter(|(score, c)| *score >= 0.8 && exists(env, c, false))
                                .max_by(|a, b| a.0.total_cmp(&b.0))
                                .map(|(_, c)| c.to_owned())
                        })
                        .flatten();
                    out.push(UnknownName {
                        kind,
                        name: n.to_string(),
                        line: instructions.get_line(idx).unwrap_or(1),
                        suggestion,
                    });
                }
            }
            idx += 1;
        }
    };
    scan(&compiled.instructions);
    for block in compiled.blocks.values() {
        scan(block);
    }
    out
}

/// A short, secret-free description of a minijinja error: its kind and
/// detail, without the debug dump of the context.
pub fn describe_error(err: &minijinja::Error) -> String {
    match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_angle_delimiters_and_leaves_braces_alone() {
        let env = environment(Vec::new());
        let out = env
            .render_str(
                "{{ x }} << x >> <% if x %>y<% endif %><# c #>",
                minijinja::context! { x => 1 },
            )
            .unwrap();
        assert_eq!(out, "{{ x }} 1 y");
    }

    #[test]
    fn undefined_parameter_is_an_error_and_default_still_works() {
        let env = environment(Vec::new());
        let err = env
            .render_str(
                "<< event.nope >>",
                minijinja::context! { event => minijinja::context!{} },
            )
            .unwrap_err();
        assert_eq!(err.kind(), minijinja::ErrorKind::UndefinedError);
        let out = env
            .render_str(
                "<< event.nope | default('n/a') >>",
                minijinja::context! { event => minijinja::context!{} },
            )
            .unwrap();
        assert_eq!(out, "n/a");
    }

    #[test]
    fn render_errors_never_show_context_values() {
        let env = environment(Vec::new());
        let err = env
            .render_str(
                "<< oauth.tok >> << missing >>",
                minijinja::context! { oauth => minijinja::context!{ tok => "CANARY-TOKEN" } },
            )
            .unwrap_err();
        let shown = format!("{err} {err:?} {err:#} {}", describe_error(&err));
        assert!(!shown.contains("CANARY-TOKEN"), "{shown}");
        assert!(env
            .render_str("<< debug() >>", minijinja::context! {})
            .is_err());
    }

    #[test]
    fn html_mail_bodies_escape_and_nothing_else_does() {
        let mut env = environment(crate::targets::html_fields());
        env.add_template_owned("p#graph_mail.html", "<b><< x >></b>")
            .unwrap();
        env.add_template_owned("p#http.json.html", "<< x >>")
            .unwrap();
        env.add_template_owned("p#http.json.js", "<< x >>").unwrap();
        let ctx = minijinja::context! { x => "O'Brien <b>" };
        assert_eq!(
            env.get_template("p#graph_mail.html")
                .unwrap()
                .render(&ctx)
                .unwrap(),
            "<b>O&#x27;Brien &lt;b&gt;</b>"
        );
        assert_eq!(
            env.get_template("p#http.json.html")
                .unwrap()
                .render(&ctx)
                .unwrap(),
            "O'Brien <b>"
        );
        assert_eq!(
            env.get_template("p#http.json.js")
                .unwrap()
                .render(&ctx)
                .unwrap(),
            "O'Brien <b>"
        );
    }

    #[test]
    fn booleans_print_lower_case_and_none_prints_nothing() {
        let env = environment(Vec::new());
        let out = env
            .render_str(
                "<< a >>/<< b >>/<< n >>",
                minijinja::context! { a => true, b => false, n => () },
            )
            .unwrap();
        assert_eq!(out, "true/false/");
    }

    #[test]
    fn single_parameter_detection() {
        assert_eq!(
            single_parameter(" << event.duration >> "),
            Some("event.duration")
        );
        assert_eq!(single_parameter("<< a >> and << b >>"), None);
        assert_eq!(single_parameter("x << a >>"), None);
        assert_eq!(single_parameter("<<>>"), None);
    }
}
