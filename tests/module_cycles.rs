//! The top-level modules of the library must not form a cycle (issue 12).
//!
//! The design map gives the flow one direction: `config` → the leaves
//! (`template`, `targets`, `secret`, `net`, …) → `pipeline`/`engine` →
//! `daemon` → `server`/`console` → `cli`. A cycle between two rooms means
//! neither can be read, tested or changed without the other, so this test
//! reads every `crate::<module>` path under `src/` (comments excluded, test
//! code included: a test that needs a higher room is still a back edge) and
//! fails with the strongly connected components it finds (beyond the known
//! ones listed in the test, which may only shrink).
//!
//! Run `cargo test --test module_cycles -- --nocapture` to print the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The production source: without comment lines (`//`, `///`, `//!`: a doc
/// link does not make a dependency) and without the `#[cfg(test)] mod …`
/// at the end of a file (a leaf's unit tests may build their fixtures with a
/// higher room, as integration tests do; that is no dependency of the
/// library). Lines of code keep any trailing comment, and string literals
/// are kept: a `crate::` in one is rare and counting it errs on the side of
/// reporting.
fn strip_comments(src: &str) -> String {
    let mut out = Vec::new();
    let mut lines = src.lines().peekable();
    while let Some(line) = lines.next() {
        let code = line.trim_start();
        if code == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            break;
        }
        if !code.starts_with("//") {
            out.push(line);
        }
    }
    out.join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules named by `crate::x` and `crate::{x, y::z}` paths.
fn referenced_modules(src: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (pos, _) in src.match_indices("crate::") {
        // `pushwerk_crate::` or `mycrate::` are not ours.
        if src[..pos]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue;
        }
        let rest = &src[pos + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut start_of_item = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => start_of_item = true,
                    c if c.is_whitespace() => {}
                    _ if depth == 1 && start_of_item => {
                        start_of_item = false;
                        let id = ident_at(&group[i..]);
                        if !id.is_empty() {
                            found.insert(id.to_string());
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let id = ident_at(rest);
            if !id.is_empty() {
                found.insert(id.to_string());
            }
        }
    }
    found
}

/// Module → modules it uses, for every top-level module of `src/`.
fn module_graph(src_dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src_dir, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(src_dir).expect("under src");
        let first = rel.components().next().expect("non-empty path");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        // The crate roots are not modules: lib.rs only declares them and
        // main.rs is the binary, which sees the library from outside.
        if module == "lib" || module == "main" {
            continue;
        }
        // A module file that is only a test module (`daemon/tests.rs`).
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read source");
        let uses = referenced_modules(&strip_comments(&text));
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(uses.into_iter().filter(|m| *m != module));
    }
    // Keep only edges to modules that exist (drops `crate::Type` at the root).
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for uses in graph.values_mut() {
        uses.retain(|m| modules.contains(m));
    }
    graph
}

/// Tarjan's algorithm: the strongly connected components with more than one
/// module, each sorted, in a stable order.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in &s.graph[v] {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().expect("on stack");
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out.sort();
    s.out
}

#[test]
fn top_level_modules_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    for (module, uses) in &graph {
        let uses: Vec<&str> = uses.iter().map(String::as_str).collect();
        println!("{module} -> {}", uses.join(", "));
    }
    let found = cycles(&graph);
    for component in &found {
        let edges: Vec<String> = component
            .iter()
            .flat_map(|a| {
                graph[a]
                    .iter()
                    .filter(|b| component.contains(b))
                    .map(move |b| format!("{a} -> {b}"))
            })
            .collect();
        println!("cycle {{{}}}: {}", component.join(", "), edges.join("; "));
    }
    // No cycle is known: the design map's one direction of flow holds.
    let known: Vec<Vec<String>> = Vec::new();
    assert_eq!(
        found, known,
        "module cycles (strongly connected components) differ from the known \
         ones; run with --nocapture for the edges"
    );
}

#[test]
fn the_reader_sees_grouped_and_plain_paths_but_not_comments_or_unit_tests() {
    let src = "use crate::config::Catalog;\n\
               use crate::{targets::{a, b}, secret};\n\
               // crate::daemon in a comment\n\
               /// [`crate::server`] in a doc link ‹\n\
               let x = crate::net::http_client();\n\
               let y = mycrate::cli::run();\n\
               #[cfg(test)]\n\
               mod tests { use crate::cli::run; }\n";
    let found = referenced_modules(&strip_comments(src));
    let found: Vec<&str> = found.iter().map(String::as_str).collect();
    assert_eq!(found, ["config", "net", "secret", "targets"]);
}

#[test]
fn tarjan_reports_a_two_module_cycle_and_not_a_chain() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let edge = |g: &mut BTreeMap<String, BTreeSet<String>>, a: &str, b: &str| {
        g.entry(a.into()).or_default().insert(b.into());
        g.entry(b.into()).or_default();
    };
    edge(&mut g, "cli", "daemon");
    edge(&mut g, "daemon", "config");
    edge(&mut g, "config", "targets");
    edge(&mut g, "targets", "config");
    assert_eq!(
        cycles(&g),
        vec![vec!["config".to_string(), "targets".into()]]
    );
}
