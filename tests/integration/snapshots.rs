//! Snapshots of `dry-run` for every example push, in each output format.
//! A change to what pushwerk would send shows up as a snapshot diff.

use crate::util::{pushwerk, stdout, NOW};

/// (push, event fixture) for every example in `pushes/`.
const EXAMPLES: [(&str, Option<&str>); 5] = [
    ("lead-mail", Some("fixtures/call-ended.json")),
    ("bing-call-conversion", Some("fixtures/call-ended.json")),
    ("crm-lead", Some("fixtures/call-ended.json")),
    ("daily-summary", None),
    ("missed-call-smtp", Some("fixtures/call-missed.json")),
];

fn dry_run(push: &str, event: Option<&str>, format: &str) -> String {
    let mut args = vec!["dry-run", push, "--format", format, "--now", NOW];
    if let Some(e) = event {
        args.extend(["--event", e]);
    }
    let out = pushwerk(&args, &[]);
    assert!(
        out.status.success(),
        "dry-run {push}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

#[test]
fn every_example_push_is_covered() {
    let catalog = pushwerk::config::Catalog::load(
        &crate::util::root().join("pushes"),
        &pushwerk::config::LoadOptions::default(),
    )
    .unwrap();
    let mut names: Vec<&str> = catalog.pushes.iter().map(|p| p.name()).collect();
    names.sort();
    let mut covered: Vec<&str> = EXAMPLES.iter().map(|(n, _)| *n).collect();
    covered.sort();
    assert_eq!(names, covered, "add new examples to EXAMPLES");
}

#[test]
fn dry_run_snapshots() {
    for (push, event) in EXAMPLES {
        for format in ["text", "json", "curl"] {
            let out = dry_run(push, event, format).replace("\r\n", "\n");
            insta::assert_snapshot!(format!("dry_run__{push}__{format}"), out);
        }
    }
}
