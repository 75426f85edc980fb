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
    let server = PgServer::start();
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
}
