//! Shared helpers: running the real `pushwerk` binary, loading folders.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (where `pushes/` and `fixtures/` are).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Environment variables the examples reference: removed from every run so
/// that a developer's shell cannot change what a test sees.
pub const EXAMPLE_ENV: [&str; 7] = [
    "MS_MAIL_CLIENT_SECRET",
    "MS_ADS_CLIENT_SECRET",
    "CRM_CLIENT_SECRET",
    "BING_ADS_DEVELOPER_TOKEN",
    "BING_ADS_CUSTOMER_ID",
    "BING_ADS_ACCOUNT_ID",
    "PUSHWERK_DIR",
];

/// Runs `pushwerk args…` in the repository root with `env` set.
pub fn pushwerk(args: &[&str], env: &[(&str, &str)]) -> Output {
    pushwerk_in(&root(), args, env)
}

/// The config directory (`XDG_CONFIG_HOME`) every spawned binary of this
/// test run gets, so that the token key pushwerk generates on first use
/// lands in the build's temporary directory, never in the user's
/// `~/.config`. A test about the key sets its own.
pub fn config_home() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("config-home-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("config home");
        dir
    })
}

/// The real binary as a command, with the isolated [`config_home`] (a
/// later `.env("XDG_CONFIG_HOME", …)` replaces it).
pub fn pushwerk_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushwerk"));
    cmd.env("XDG_CONFIG_HOME", config_home());
    cmd
}

/// The binary under test for the kit's harness
/// ([`World`](pushwerk_testkit::daemon::World)), with the same
/// [`config_home`] as [`pushwerk_command`].
pub fn kit() -> &'static pushwerk_testkit::daemon::Pushwerk {
    static KIT: std::sync::OnceLock<pushwerk_testkit::daemon::Pushwerk> =
        std::sync::OnceLock::new();
    KIT.get_or_init(|| {
        pushwerk_testkit::daemon::Pushwerk::new(env!("CARGO_BIN_EXE_pushwerk"), config_home())
    })
}

/// Runs `pushwerk args…` in `dir` with `env` set.
pub fn pushwerk_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = pushwerk_command();
    cmd.current_dir(dir).args(args);
    for name in EXAMPLE_ENV {
        cmd.env_remove(name);
    }
    cmd.env_remove("PUSHWERK_GRAPH_URL")
        .env_remove("PUSHWERK_BING_ADS_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("pushwerk runs")
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("stderr is UTF-8")
}

/// Writes `files` (name, content) into a new temporary folder.
pub fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, text).expect("write");
    }
    dir
}

/// A fixed render time, so dry-run output is reproducible.
pub const NOW: &str = "2026-11-25T07:00:00Z";

/// An account document for tests.
pub const ACCOUNT_MS_MAIL: &str = "kind: oauth_account
name: ms_mail
token_url: https://login.microsoftonline.com/common/oauth2/v2.0/token
client_id: 3f2b8c1e-5d4a-4e7b-9c6d-1a2b3c4d5e6f
client_secret: ${env:MS_MAIL_CLIENT_SECRET}
scope: offline_access https://graph.microsoft.com/Mail.Send
";

/// Runs `cmd` (stdin closed, stdout dropped), expecting it to fail within
/// 20 s: its stderr. A process still running then (hanging, or a daemon
/// that started instead of refusing) is killed and the test fails; so does
/// one that succeeds.
pub async fn fails_within_20s(mut cmd: Command) -> String {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let described = format!("{cmd:?}");
    let mut child = cmd.spawn().expect("pushwerk runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{described}: still running after 20 s (hangs, or started)");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let mut text = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut text).unwrap();
    assert!(!status.success(), "{described} succeeded:\n{text}");
    text
}
