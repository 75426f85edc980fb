//! Installing pushwerk: `--version` names the build, `completions` and `man`
//! are generated from the real command line.

use std::process::Command;

use crate::util::{pushwerk, pushwerk_in, root, stderr, stdout};

/// Every subcommand a user can type (the top level ones).
const SUBCOMMANDS: [&str; 12] = [
    "check",
    "dry-run",
    "send",
    "params",
    "serve",
    "deliveries",
    "replay",
    "oauth",
    "schema",
    "completions",
    "man",
    "help",
];

/// `git -C root args…` if git is there and root is a checkout's top level.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root())
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn version_names_the_commit_and_the_build_date() {
    let out = pushwerk(&["--version"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let prefix = format!("pushwerk {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&prefix), "{text}");
    let rest = &text[prefix.len()..];
    let (commit, rest) = rest.split_once(", built ").expect("a build date");
    let in_checkout = git(&["rev-parse", "--show-toplevel"]).is_some_and(|top| {
        std::path::Path::new(&top).canonicalize().ok() == root().canonicalize().ok()
    });
    if in_checkout {
        let head = git(&["rev-parse", "--short=10", "HEAD"]).expect("HEAD");
        assert!(
            commit == head || commit == format!("{head}-dirty"),
            "commit `{commit}` is not HEAD `{head}`"
        );
    } else {
        assert_eq!(commit, "unknown");
    }
    // YYYY-MM-DD)
    let date = rest.trim_end();
    assert_eq!(date.len(), 11, "{date}");
    assert!(date.ends_with(')'), "{date}");
    let parts: Vec<&str> = date[..10].split('-').collect();
    assert_eq!(parts.len(), 3, "{date}");
    assert!(
        parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit())),
        "{date}"
    );
}

#[test]
fn bash_completions_are_a_bash_script_naming_the_subcommands() {
    let out = pushwerk(&["completions", "bash"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let script = stdout(&out);
    for sub in SUBCOMMANDS {
        assert!(script.contains(sub), "`{sub}` missing from the completions");
    }
    // The options of a subcommand too.
    assert!(script.contains("--deny-warnings") && script.contains("--event-window"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pushwerk.bash");
    std::fs::write(&path, &script).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("bash runs");
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Sourcing it registers the completion function for `pushwerk`.
    let source = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p pushwerk", path.display()))
        .output()
        .expect("bash runs");
    assert!(
        String::from_utf8_lossy(&source.stdout).contains("pushwerk"),
        "{}",
        String::from_utf8_lossy(&source.stderr)
    );
}

#[test]
fn zsh_and_fish_completions_name_the_subcommands() {
    for shell in ["zsh", "fish"] {
        let out = pushwerk(&["completions", shell], &[]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell}: `{sub}` missing");
        }
    }
    assert!(stdout(&pushwerk(&["completions", "zsh"], &[])).starts_with("#compdef pushwerk"));
}

#[test]
fn an_unknown_shell_is_a_clear_error() {
    let out = pushwerk(&["completions", "tcsh"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("invalid value 'tcsh'"), "{err}");
    assert!(
        err.contains("bash") && err.contains("zsh") && err.contains("fish"),
        "{err}"
    );
    assert!(stdout(&out).is_empty());
}

#[test]
fn man_page_is_roff_naming_the_subcommands() {
    let out = pushwerk(&["man"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let page = stdout(&out);
    // clap_mangen defines the `Aq` string first, then the title line.
    let first = page
        .lines()
        .find(|l| !l.starts_with(".ie ") && !l.starts_with(".el "))
        .unwrap();
    assert!(first.starts_with(".TH pushwerk 1 "), "{first}");
    assert!(first.contains(env!("CARGO_PKG_VERSION")), "{first}");
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    for sub in SUBCOMMANDS {
        let roff = format!("pushwerk\\-{}(1)", sub.replace('-', "\\-"));
        assert!(page.contains(&roff), "`{roff}` missing from the man page");
    }
    // groff, where installed, reads it without a warning.
    if let Ok(groff) = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write;
        let mut groff = groff;
        groff
            .stdin
            .take()
            .unwrap()
            .write_all(page.as_bytes())
            .unwrap();
        let done = groff.wait_with_output().unwrap();
        assert!(done.status.success());
        assert_eq!(String::from_utf8_lossy(&done.stderr), "", "groff warnings");
    }
}

#[test]
fn man_out_dir_writes_one_page_per_command_and_nothing_else() {
    let work = tempfile::tempdir().unwrap();
    // A pushes folder beside it must stay untouched (the global `--dir`).
    std::fs::create_dir(work.path().join("pushes")).unwrap();
    let out = pushwerk_in(work.path(), &["man", "--out-dir", "man1"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pages = work.path().join("man1");
    for page in ["pushwerk.1", "pushwerk-serve.1", "pushwerk-oauth-login.1"] {
        let text = std::fs::read_to_string(pages.join(page)).unwrap_or_default();
        assert!(text.contains(".TH pushwerk"), "{page}: {text}");
    }
    assert_eq!(
        std::fs::read_dir(work.path().join("pushes"))
            .unwrap()
            .count(),
        0
    );
}
