//! The command line as a user meets it, through the real binary: bad flag
//! values are usage errors (exit 2) naming the flag and the allowed range,
//! `replay` of an unknown job is an error, `deliveries --failed` shows
//! failed attempts with timestamps to the second, and the daemon's stderr
//! is all JSON with `--log-format json` and free of colour codes when it
//! is not a terminal; and the README shows what the binary does (its tour
//! blocks and its table of flags).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{folder, stderr, stdout, EXAMPLE_ENV};
use pushwerk_testkit::daemon::{Served, World};

/// `pushwerk --dir pushes --data data args…` in `cwd`, with a clean
/// environment plus `env`.
fn command(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = crate::util::pushwerk_command();
    cmd.current_dir(cwd)
        .args(["--dir", "pushes", "--data", "data"])
        .args(args)
        .stdin(Stdio::null());
    for name in EXAMPLE_ENV {
        cmd.env_remove(name);
    }
    for name in [
        "PUSHWERK_DATA",
        "PUSHWERK_STORE",
        "PUSHWERK_KEY",
        "PUSHWERK_KEY_FILE",
        "PUSHWERK_INGEST_TOKEN",
        "PUSHWERK_LOG",
        "PUSHWERK_LOG_FORMAT",
        "PUSHWERK_SERVER",
        "PUSHWERK_LISTEN",
        "RUST_LOG",
    ] {
        cmd.env_remove(name);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs to completion; a run still going after 30 s is killed and fails
/// the test (a flag that should have been refused started the daemon).
fn run(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = command(cwd, args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pushwerk starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "pushwerk {args:?} still ran after 30 s:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// A push to a port nothing listens on: every attempt fails and is retried.
const REFUSED_PUSH: &str = "name: hook
on: call.ended
http:
  url: http://127.0.0.1:9/hook
  json:
    n: << event.n >>
retry:
  max_attempts: 5
  max_age: 1h
";

fn world() -> tempfile::TempDir {
    folder(&[("pushes/hook.yaml", REFUSED_PUSH)])
}

#[test]
fn out_of_range_durations_are_usage_errors_naming_the_flag_and_range() {
    let tmp = world();
    for (args, flag, range) in [
        (
            &["serve", "--event-window", "100000000y"][..],
            "--event-window",
            "1m to 3650d",
        ),
        (
            &["serve", "--event-window", "0s"],
            "--event-window",
            "1m to 3650d",
        ),
        (
            &["serve", "--event-window", "soon"],
            "--event-window",
            "1m to 3650d",
        ),
        (&["serve", "--grace", "100000000y"], "--grace", "0s to 1h"),
        (&["serve", "--grace", "2h"], "--grace", "0s to 1h"),
    ] {
        let mut all = args.to_vec();
        all.extend(["--listen", "127.0.0.1:0"]);
        let out = run(tmp.path(), &all, &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(flag) && err.contains(range), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(
        !tmp.path().join("data").exists(),
        "a refused command line touched nothing"
    );
}

#[test]
fn values_checked_after_parsing_are_usage_errors_too() {
    let tmp = world();
    for (args, needle) in [
        (&["--log", "pushwerk=[", "check"][..], "--log"),
        (&["replay"], "<JOB_ID>"),
        (&["replay", "7", "--failed"], "cannot be used with"),
        (&["deliveries", "--server", "not a url"], "--server"),
        (&["deliveries", "--limit", "0"], "--limit"),
        (&["serve", "--concurrency", "0"], "--concurrency"),
    ] {
        let out = run(tmp.path(), args, &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// The folder of [`world`] as the kit's [`World`] (`pushes/` and `data/`
/// in one directory, the `cwd` of [`run`]), for the tests with a daemon.
fn daemon_world() -> World {
    World::new(crate::util::kit(), &[("hook.yaml", REFUSED_PUSH)])
}

/// Starts `pushwerk serve … --grace 2s extra…` with `env` (the ingest token
/// generated unless `env` sets it) and waits until it is ready.
async fn start(world: &World, extra: &[&str], env: &[(&str, &str)]) -> Served {
    let mut serve = world.serve().args(&["--grace", "2s"]).args(extra);
    serve = match env.iter().find(|(k, _)| *k == "PUSHWERK_INGEST_TOKEN") {
        Some((_, token)) => serve.token(token),
        None => serve.generated_token(),
    };
    for (k, v) in env.iter().filter(|(k, _)| *k != "PUSHWERK_INGEST_TOKEN") {
        serve = serve.env(k, v);
    }
    serve.start().await
}

/// Posts event `id` with `token`; expects 202.
async fn post_event(daemon: &Served, token: &str, id: &str) {
    let (status, body) = daemon
        .post_raw(
            format!(
                r#"{{"id":"{id}","type":"call.ended","time":"2026-01-01T00:00:00Z","data":{{"n":1}}}}"#
            ),
            &format!("Bearer {token}"),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

/// Runs a blocking `pushwerk` off the async workers.
async fn run_async(cwd: &Path, args: Vec<String>, env: Vec<(String, String)>) -> Output {
    let cwd = cwd.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run(&cwd, &args, &env)
    })
    .await
    .unwrap()
}

/// Polls `check` every 50 ms until it is true, or fails after 20 s.
async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_an_unknown_job_fails_and_deliveries_failed_shows_failed_attempts() {
    let tmp = daemon_world();
    let token = "cli-ux-token";
    let env = vec![("PUSHWERK_INGEST_TOKEN".to_string(), token.to_string())];
    let daemon = start(&tmp, &[], &[("PUSHWERK_INGEST_TOKEN", token)]).await;
    let server = daemon.url("");

    let out = run_async(
        tmp.root(),
        vec![
            "replay".into(),
            "999".into(),
            "--server".into(),
            server.clone(),
        ],
        env.clone(),
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("no dead letter with job id 999"),
        "{}",
        stderr(&out)
    );
    assert!(!stdout(&out).contains("replayed"), "{}", stdout(&out));

    // One event: its first attempt fails (connection refused) and is retried later.
    post_event(&daemon, token, "evt-failing").await;
    let failed_args = vec![
        "deliveries".to_string(),
        "--failed".into(),
        "--server".into(),
        server.clone(),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let listing = loop {
        let out = run_async(tmp.root(), failed_args.clone(), env.clone()).await;
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        if text.contains("evt-failing") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "`deliveries --failed` never listed the failed attempt:\n{text}\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for line in listing.lines() {
        assert!(
            line.contains(" retry ") || line.contains(" dead "),
            "{line}"
        );
        // 2026-12-01T10:02:35Z: to the second, UTC.
        let at = line.split_whitespace().next().unwrap();
        assert_eq!(at.len(), 20, "timestamp `{at}` is not to the second");
        assert!(
            chrono::DateTime::parse_from_rfc3339(at).is_ok() && at.ends_with('Z'),
            "{at}"
        );
    }

    // The retried job waits in the daemon's queue: `jobs` reads the API's
    // answer (its job list) and shows the job as retrying, due to the second.
    let out = run_async(
        tmp.root(),
        vec!["jobs".into(), "--server".into(), server.clone()],
        env.clone(),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let jobs = stdout(&out);
    let line = jobs
        .lines()
        .find(|l| l.contains("event evt-failing"))
        .unwrap_or_else(|| panic!("`jobs` does not list the retried job:\n{jobs}"));
    assert!(line.contains(" retrying "), "{line}");
    let due = line.split_whitespace().next().unwrap();
    assert_eq!(due.len(), 20, "due time `{due}` is not to the second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_json_logs_every_stderr_line_of_a_serve_run_is_json() {
    let tmp = daemon_world();
    // The format from the environment; the token generated (its line logged).
    let mut daemon = start(&tmp, &["--log", "info"], &[("PUSHWERK_LOG_FORMAT", "json")]).await;
    let token = std::fs::read_to_string(tmp.data().join("ingest-token")).unwrap();
    post_event(&daemon, token.trim(), "evt-json").await;
    wait_for("the attempt is logged", || {
        daemon.log_text().contains("evt-json")
    })
    .await;
    let status = daemon.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");

    let text = daemon.log_text();
    let mut messages = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\n{text}"));
        messages.push(
            v["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    for expected in [
        "ingest token: ",
        "pushwerk serving ",
        "shutting down",
        "stopped",
    ] {
        assert!(
            messages.iter().any(|m| m.starts_with(expected)),
            "no `{expected}` line in:\n{text}"
        );
    }
    assert!(
        !text.contains(token.trim()),
        "the token itself is never logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_logs_into_a_pipe_carry_no_colour_codes() {
    let tmp = daemon_world();
    let mut daemon = start(
        &tmp,
        &["--log", "info"],
        &[("PUSHWERK_INGEST_TOKEN", "plain-token")],
    )
    .await;
    post_event(&daemon, "plain-token", "evt-plain").await;
    wait_for("the attempt is logged", || {
        daemon.log_text().contains("evt-plain")
    })
    .await;
    assert!(daemon.terminate(Duration::from_secs(20)).await.success());
    let text = daemon.log_text();
    assert!(text.contains("pushwerk serving "), "{text}");
    assert!(text.contains("stopped"), "{text}");
    assert!(
        !text.contains("\x1b["),
        "ANSI escape codes in a pipe:\n{text:?}"
    );
}

#[test]
fn the_readme_tour_shows_the_shipped_push_and_links_only_inside_the_repository() {
    let root = crate::util::root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let shipped = std::fs::read_to_string(root.join("pushes/lead-mail.yaml")).unwrap();
    let start = readme
        .find("`pushes/lead-mail.yaml` (as shipped):\n\n```yaml\n")
        .expect("the tour's lead-mail block");
    let block = &readme[start..];
    let block = &block[block.find("```yaml\n").unwrap() + 8..];
    let block = &block[..block.find("```\n").unwrap()];
    assert_eq!(
        block, shipped,
        "the tour's lead-mail.yaml differs from pushes/"
    );
    assert!(
        !readme.contains("../shared") && !readme.contains("](../"),
        "a link leaves the repository"
    );
    assert!(readme.contains("cargo install --locked --path ."));
    // Every relative link and image is a file of the repository.
    let targets = readme
        .split("](")
        .skip(1)
        .chain(readme.split("src=\"").skip(1))
        .map(|rest| &rest[..rest.find([')', '"', '#']).unwrap_or(rest.len())]);
    for target in targets {
        if target.contains("://") || target.is_empty() {
            continue;
        }
        assert!(
            root.join(target).exists(),
            "the README links to {target}, which is not in the repository"
        );
    }
}

/// Whether one line of real output matches one line of a README block, in
/// which `…` stands for any text (`found unexpected end of stream …`,
/// `"contentType":"HTML",…}`).
fn readme_line_matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == line;
    }
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether real output matches a README block, in which a line that is
/// only `…` stands for any number of lines.
fn readme_block_matches(pattern: &[String], lines: &[String]) -> bool {
    match pattern.split_first() {
        None => lines.is_empty(),
        Some((p, rest)) if p == "…" => {
            (0..=lines.len()).any(|k| readme_block_matches(rest, &lines[k..]))
        }
        Some((p, rest)) => {
            !lines.is_empty()
                && readme_line_matches(p, &lines[0])
                && readme_block_matches(rest, &lines[1..])
        }
    }
}

/// Every `YYYY-MM-DDTHH:MM:SSZ` replaced by `TIME`: the render time in
/// `params` is the clock's.
fn without_times(line: &str) -> String {
    let b = line.as_bytes();
    let shape = b"dddd-dd-ddTdd:dd:ddZ";
    let fits = |i: usize| {
        i + shape.len() <= b.len()
            && shape.iter().zip(&b[i..]).all(|(s, c)| match s {
                b'd' => c.is_ascii_digit(),
                s => s == c,
            })
    };
    let (mut out, mut i) = (Vec::new(), 0);
    while i < b.len() {
        if fits(i) {
            out.extend_from_slice(b"TIME");
            i += shape.len();
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("only ASCII was replaced")
}

/// The README's tour is what a newcomer runs first: every `check`,
/// `dry-run` and `params` command in its console blocks runs verbatim from
/// the repository's root, and its output (stderr then stdout, or stdout
/// alone) matches the block line by line, `…` standing for what the README
/// leaves out.
#[test]
fn the_readme_tour_commands_print_what_the_readme_shows() {
    let root = crate::util::root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut verified = Vec::new();
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```console\n") {
        let body = &rest[start + "```console\n".len()..];
        let end = body.find("```\n").expect("a closed console block");
        let (block, after) = body.split_at(end);
        rest = after;
        let mut commands: Vec<(&str, Vec<String>)> = Vec::new();
        for line in block.lines() {
            match line.strip_prefix("$ ") {
                Some(command) => commands.push((command, Vec::new())),
                None => {
                    if let Some((_, expected)) = commands.last_mut() {
                        expected.push(without_times(line));
                    }
                }
            }
        }
        for (command, expected) in commands {
            let words: Vec<&str> = command.split_whitespace().collect();
            if words.len() < 2
                || words[0] != "pushwerk"
                || !["check", "dry-run", "params"].contains(&words[1])
            {
                continue;
            }
            let out = run(&root, &words[1..], &[]);
            let lines = |text: String| -> Vec<String> { text.lines().map(without_times).collect() };
            let (err, out_lines) = (lines(stderr(&out)), lines(stdout(&out)));
            let both: Vec<String> = err.iter().chain(&out_lines).cloned().collect();
            assert!(
                readme_block_matches(&expected, &both) || readme_block_matches(&expected, &out_lines),
                "`{command}` printed what the README does not show.\nREADME:\n{}\nstderr:\n{}\nstdout:\n{}",
                expected.join("\n"),
                err.join("\n"),
                out_lines.join("\n"),
            );
            verified.push(command.to_owned());
        }
    }
    assert!(
        verified.len() >= 5,
        "the tour's check, dry-run and params blocks were not all found: {verified:?}"
    );
}

/// The README's table of commands names only subcommands and flags that
/// `pushwerk SUBCOMMAND --help` knows: a renamed or removed flag fails here.
#[test]
fn every_flag_in_the_readme_commands_table_exists() {
    let root = crate::util::root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut rows = 0;
    for line in readme.lines() {
        let Some(cell) = line.strip_prefix("| `pushwerk ") else {
            continue;
        };
        let cell = &cell[..cell.find("` |").expect("a table cell")];
        let subcommand: Vec<&str> = cell
            .split_whitespace()
            .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
            .filter(|w| !w.starts_with('-'))
            .collect();
        // No subcommand (`pushwerk --version`): the flags are the top level's.
        let mut args = subcommand.clone();
        args.push("--help");
        let out = run(&root, &args, &[]);
        let help = stdout(&out);
        assert!(out.status.success(), "pushwerk {args:?}: {}", stderr(&out));
        let flags = cell
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter(|w| w.starts_with("--") && w.len() > 2);
        for flag in flags {
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "the README's `pushwerk {cell}` names {flag}, which `pushwerk {} --help` does not know",
                subcommand.join(" ")
            );
        }
        rows += 1;
    }
    assert!(rows >= 15, "the commands table was not found ({rows} rows)");
}

#[test]
fn a_missing_event_and_an_attempt_count_out_of_range_are_usage_errors() {
    let tmp = world();
    for (args, needle) in [
        (&["dry-run", "hook"][..], "give one with --event FILE"),
        (&["send", "hook"], "give one with --event FILE"),
        (&["send", "hook", "--attempts", "0"], "--attempts"),
    ] {
        let out = run(tmp.path(), args, &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn oauth_status_json_gives_times_to_the_second() {
    let tmp = folder(&[(
        "pushes/accounts.yaml",
        "kind: oauth_account\nname: ms_mail\ntoken_url: http://127.0.0.1:9/token\nclient_id: c\nclient_secret: s\nscope: offline_access\n",
    )]);
    std::fs::write(
        tmp.path().join("t.json"),
        r#"{"refresh_token":"rt","access_token":"at","expires_in":3600}"#,
    )
    .unwrap();
    let out = run(
        tmp.path(),
        &["oauth", "import", "ms_mail", "--file", "t.json"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(tmp.path(), &["oauth", "status", "--format", "json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let account = &v["accounts"][0];
    for field in ["access_token_expires", "last_refresh"] {
        let t = account[field].as_str().unwrap_or_default();
        assert_eq!(t.len(), 20, "{field}: `{t}` is not to the second");
        assert!(chrono::DateTime::parse_from_rfc3339(t).is_ok(), "{t}");
    }
}

#[test]
fn oversized_event_and_token_files_are_refused_not_read_whole() {
    let tmp = folder(&[
        ("pushes/hook.yaml", REFUSED_PUSH),
        (
            "pushes/accounts.yaml",
            "kind: oauth_account\nname: ms_mail\ntoken_url: http://127.0.0.1:9/token\nclient_id: c\nclient_secret: s\nscope: offline_access\n",
        ),
    ]);
    let big = tmp.path().join("big.json");
    std::fs::write(&big, vec![b' '; 2 * 1024 * 1024]).unwrap();
    for args in [
        &["dry-run", "hook", "--event", "big.json"][..],
        &["oauth", "import", "ms_mail", "--file", "big.json"],
    ] {
        let out = run(tmp.path(), args, &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("is larger than 1024 KiB"), "{args:?}: {err}");
    }
}

#[test]
fn an_error_names_its_cause_once() {
    // The folder error names its I/O error in its own message and carries
    // it as its source: the line printed shows it once, not twice.
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run(dir.path(), &["check"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot read push folder"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}
