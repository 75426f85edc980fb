//! The token files (`DATA/ingest-token`, `admin-token`, `metrics-token`)
//! attacked through the real binary: the daemon stops at start with a
//! reason naming the file rather than read a huge file whole or run with a
//! token no client can send. (A FIFO, a directory or a symlink in their
//! place is refused before, by the data directory's own check.)

use pushwerk_testkit::daemon::World;

const INGEST: &str = "attack-tokens-ingest-token-0123";
const ADMIN: &str = "attack-tokens-admin-token-01234";

/// `pushwerk serve` with `env`, expected to refuse to start within 20 s:
/// its stderr. A daemon still running then (hanging or started) is
/// stopped and the test fails.
async fn refused(world: &World, env: &[(&str, &str)]) -> String {
    fails(world, &["serve", "--listen", "127.0.0.1:0"], env).await
}

/// `pushwerk args…` with `env`, expected to fail within 20 s: its stderr.
/// A process still running then (hanging, or a daemon that started) is
/// stopped and the test fails.
async fn fails(world: &World, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = world.command();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    crate::util::fails_within_20s(cmd).await
}

/// Was: a 64 MiB file in place
/// of `DATA/ingest-token` was read whole and its NUL bytes became the
/// token; a two-line `DATA/metrics-token` (a second token appended, a
/// comment) became a token with a line break that no `Authorization`
/// header can carry, so every scrape was refused with no hint why. Now
/// each stops the start with a reason that names the file, and no token.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_token_files_stop_the_start_with_a_reason_naming_the_file() {
    // A huge (sparse) file as the ingest token.
    let world = World::new(crate::util::kit(), &[]);
    let data = world.data();
    std::fs::create_dir_all(&data).unwrap();
    let huge = data.join("ingest-token");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let text = refused(&world, &[("PUSHWERK_ADMIN_TOKEN", ADMIN)]).await;
    assert!(text.contains(&huge.display().to_string()), "{text}");
    assert!(text.contains("larger than 4096 bytes"), "{text}");

    // Two lines in the metrics token.
    let world = World::new(crate::util::kit(), &[]);
    let data = world.data();
    std::fs::create_dir_all(&data).unwrap();
    let two = data.join("metrics-token");
    std::fs::write(
        &two,
        "metrics-token-line-one-0123\nmetrics-token-line-two-4567\n",
    )
    .unwrap();
    let text = refused(
        &world,
        &[
            ("PUSHWERK_INGEST_TOKEN", INGEST),
            ("PUSHWERK_ADMIN_TOKEN", ADMIN),
        ],
    )
    .await;
    assert!(text.contains(&two.display().to_string()), "{text}");
    assert!(text.contains("line break"), "{text}");
    assert!(!text.contains("line-one"), "no token in the reason: {text}");
}

/// Was: the CLI read `DATA/ingest-token` and `DATA/admin-token` with a
/// reader of its own, and for a node on PostgreSQL (no store in its data
/// directory, so no check of the directory on the way) a FIFO in place of
/// `DATA/admin-token` hung `pushwerk oauth status` for good. Now the CLI
/// reads them as the daemon does, and says which file is wrong.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_reads_token_files_as_the_daemon_does() {
    let server = crate::pg_server::PgServer::start();
    let world = World::new(crate::util::kit(), &[]);
    let _served = world
        .serve()
        .token(INGEST)
        .global(&["--store", "postgres", "--node-name", "tokens"])
        .env("PUSHWERK_DATABASE_URL", &server.url())
        .start()
        .await;
    let token = world.data().join("admin-token");
    assert!(token.is_file(), "the node generated its admin token");
    std::fs::remove_file(&token).unwrap();
    let c = std::ffi::CString::new(token.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let text = fails(
        &world,
        &[
            "--store",
            "postgres",
            "--node-name",
            "tokens",
            "oauth",
            "status",
        ],
        &[("PUSHWERK_DATABASE_URL", &server.url())],
    )
    .await;
    assert!(text.contains(&token.display().to_string()), "{text}");
    assert!(text.contains("not a regular file"), "{text}");
}

/// Was: a short token written by hand into `DATA/admin-token` (or
/// `metrics-token`) stopped the start with "the admin token is 6
/// characters long: … or leave --admin-token / PUSHWERK_ADMIN_TOKEN unset
/// to have one generated into DATA/admin-token" — which is what the user
/// had done: the file it came from was not named. Now the reason names the
/// file and says to lengthen or delete it, and still not the token.
#[tokio::test(flavor = "multi_thread")]
async fn a_short_token_in_a_file_is_refused_naming_the_file() {
    for (file, env) in [
        ("admin-token", vec![("PUSHWERK_INGEST_TOKEN", INGEST)]),
        (
            "metrics-token",
            vec![
                ("PUSHWERK_INGEST_TOKEN", INGEST),
                ("PUSHWERK_ADMIN_TOKEN", ADMIN),
            ],
        ),
    ] {
        let world = World::new(crate::util::kit(), &[]);
        let data = world.data();
        std::fs::create_dir_all(&data).unwrap();
        let path = data.join(file);
        std::fs::write(&path, "s3cr3t\n").unwrap();
        let text = refused(&world, &env).await;
        assert!(
            text.contains(&format!(
                "the token in {} is 6 characters long",
                path.display()
            )),
            "{text}"
        );
        assert!(text.contains("delete the file"), "{text}");
        assert!(!text.contains("s3cr3t"), "{text}");
    }
}

/// A short ingest token (`--ingest-token abc`, a hand-written
/// `DATA/ingest-token`) is guessable by anyone who reaches the port: the
/// daemon still starts with it (running setups keep working) but says so,
/// with the length and the fix — never the token. A token of 16
/// characters or more, and a generated one, is not warned about.
#[tokio::test(flavor = "multi_thread")]
async fn a_short_ingest_token_is_warned_about_and_still_works() {
    let short = "s3cr3t";
    let world = World::new(crate::util::kit(), &[]);
    let served = world.serve().token(short).start().await;
    let log = served.log_text();
    assert!(
        log.contains("the ingest token is 6 characters long"),
        "{log}"
    );
    assert!(
        !log.contains(short),
        "the token itself is never logged: {log}"
    );
    let r = served
        .http()
        .get(served.url("/v1/deliveries"))
        .bearer_auth(short)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the short token still opens the API");
    for long in [Some(INGEST), None] {
        let world = World::new(crate::util::kit(), &[]);
        let served = match long {
            Some(t) => world.serve().token(t).start().await,
            None => world.serve().generated_token().start().await,
        };
        let log = served.log_text();
        assert!(!log.contains("the ingest token is"), "{log}");
    }
}
