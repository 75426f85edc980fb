//! A new user's first contact with PostgreSQL (issue #15): a URL that the
//! server answers but refuses — a role that does not exist, a database that
//! does not exist — or a URL that is not one must say what to fix, not
//! "cannot reach the database … start PostgreSQL" (the server is running).

use crate::pg_server::PgServer;
use crate::util::{pushwerk_in, root};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// `pushwerk oauth status` against `url`: its exit status and stderr.
fn status_with(url: &str) -> (bool, String) {
    let data = tempfile::tempdir().unwrap();
    let data = data.path().to_str().unwrap().to_owned();
    let out = pushwerk_in(
        &root(),
        &[
            "--data",
            &data,
            "--store",
            "postgres",
            "--database-url",
            url,
            "oauth",
            "status",
        ],
        &[("PUSHWERK_KEY", KEY), ("PUSHWERK_DATABASE_URL", "")],
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_refused_login_or_missing_database_names_what_to_fix() {
    let server = PgServer::start_tcp();
    let port = server.port();

    let (ok, err) = status_with(&format!("postgres://nosuchrole@127.0.0.1:{port}/postgres"));
    assert!(!ok, "{err}");
    assert!(err.contains("role \"nosuchrole\" does not exist"), "{err}");
    assert!(err.contains("createuser"), "{err}");
    assert!(!err.contains("start PostgreSQL"), "{err}");

    let (ok, err) = status_with(&format!("postgres://postgres@127.0.0.1:{port}/nosuchdb"));
    assert!(!ok, "{err}");
    assert!(
        err.contains("database \"nosuchdb\" does not exist"),
        "{err}"
    );
    assert!(err.contains("createdb"), "{err}");
    assert!(!err.contains("start PostgreSQL"), "{err}");

    let (ok, err) = status_with("mysql://x@127.0.0.1/db");
    assert!(!ok, "{err}");
    assert!(
        err.contains("postgres://USER:PASSWORD@HOST:PORT/DB"),
        "{err}"
    );
    assert!(!err.contains("start PostgreSQL"), "{err}");

    // The server really down still says to start it.
    let (ok, err) = status_with("postgres://postgres@127.0.0.1:1/postgres");
    assert!(!ok, "{err}");
    assert!(err.contains("start PostgreSQL"), "{err}");
    // With the cause, not only "error connecting to server".
    assert!(err.contains("Connection refused"), "{err}");
}

/// Kills the node when the test ends, however it ends.
struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `pushwerk jobs --data NODE` finds the node serving that directory on
/// PostgreSQL (its data directory holds no store to lock, so the embedded
/// stores' way of telling said "no daemon is serving" while it ran).
#[test]
fn jobs_finds_the_node_serving_its_data_directory() {
    let server = PgServer::start();
    let url = server.url();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("node-a");
    let log = tmp.path().join("node-a.log");
    let mut cmd = crate::util::pushwerk_command();
    cmd.current_dir(root())
        .arg("--data")
        .arg(&data)
        .args(["--store", "postgres", "--database-url", &url])
        .args(["serve", "--node-name", "a", "--listen", "127.0.0.1:0"])
        .env("PUSHWERK_KEY", KEY)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for name in crate::util::EXAMPLE_ENV {
        cmd.env_remove(name);
    }
    for name in [
        "PUSHWERK_INGEST_TOKEN",
        "PUSHWERK_ADMIN_TOKEN",
        "PUSHWERK_DATA",
    ] {
        cmd.env_remove(name);
    }
    let node = Serving(cmd.spawn().unwrap());
    let data_dir = data.clone();
    let data = data.to_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let last = loop {
        let out = pushwerk_in(
            &root(),
            &[
                "--data",
                &data,
                "--store",
                "postgres",
                "--database-url",
                &url,
                "jobs",
            ],
            &[
                ("PUSHWERK_KEY", KEY),
                ("PUSHWERK_INGEST_TOKEN", ""),
                ("PUSHWERK_ADMIN_TOKEN", ""),
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        // Until the node has announced itself and answers.
        if out.status.success() || std::time::Instant::now() > deadline {
            break (out.status.success(), err);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(last.0, "jobs against the serving node: {}", last.1);
    // Where the node listens (it bound a port the system picked).
    let port = pushwerk_testkit::daemon::announced_port(&data_dir, node.0.id(), &log)
        .expect("the serving node announced its port");
    let addr = format!("127.0.0.1:{port}");

    // A stale announcement whose live pid is another program (this test)
    // gets no token: nothing answers for that directory.
    let stale = tmp.path().join("stale");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(
        stale.join("daemon.json"),
        format!(
            "{{\"url\":\"http://{addr}\",\"pid\":{}}}",
            std::process::id()
        ),
    )
    .unwrap();
    std::fs::write(stale.join("ingest-token"), "stale-dir-token-0123456789").unwrap();
    let out = pushwerk_in(
        &root(),
        &[
            "--data",
            stale.to_str().unwrap(),
            "--store",
            "postgres",
            "--database-url",
            &url,
            "jobs",
        ],
        &[
            ("PUSHWERK_KEY", KEY),
            ("PUSHWERK_INGEST_TOKEN", ""),
            ("PUSHWERK_ADMIN_TOKEN", ""),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no daemon is serving"), "{err}");
}

/// `serve --help` tells that `--store` takes `postgres` too, and what it
/// needs.
#[test]
fn the_store_flags_help_names_postgres_and_its_url() {
    let out = pushwerk_in(&root(), &["serve", "--help"], &[]);
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{help}");
    let at = help.find("--store <STORE>").expect("a --store flag");
    let paragraph = &help[at..];
    let paragraph = &paragraph[..paragraph.find("\n      --").unwrap_or(paragraph.len())];
    for needle in ["postgres", "--database-url", "PUSHWERK_DATABASE_URL"] {
        assert!(paragraph.contains(needle), "{needle}: {paragraph}");
    }
}
