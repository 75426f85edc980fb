//! Today's hardening attacked from outside, through the real binary: the
//! browser-bound sign-in, the metrics token, and the PostgreSQL node name.
//! Each test is a defect that was found and fixed; the attacks that held
//! are listed in the report of the branch that added this file.

use std::process::Stdio;
use std::time::{Duration, Instant};

use pushwerk_testkit::daemon::World;

const INGEST: &str = "attack-signin-ingest-token-0123";
const ADMIN: &str = "attack-signin-admin-token-01234";

fn world(files: &[(&str, &str)]) -> World {
    World::new(crate::util::kit(), files)
}

/// `pushwerk serve` with `args`, expected to refuse to start: its stderr.
/// A daemon that starts instead is stopped and the test fails.
async fn refused_start(world: &World, args: &[&str]) -> String {
    let mut cmd = world.command();
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("PUSHWERK_INGEST_TOKEN", INGEST)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("pushwerk runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?}: the daemon started (still running after 20 s)");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let mut text = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut text).unwrap();
    assert!(!status.success(), "{args:?} started:\n{text}");
    text
}

// ---------------------------------------------------------------------------
// /metrics

/// A metrics token that is the admin token would put the admin token into
/// every scraper's configuration (a Prometheus `credentials_file`), while
/// the README promises that the metrics token "opens nothing else": the
/// start is refused, whether the token is given or is the content of
/// `DATA/metrics-token` (a copy of `admin-token`), and the refusal does not
/// echo the token.
#[tokio::test(flavor = "multi_thread")]
async fn a_metrics_token_that_is_the_admin_token_is_refused() {
    let world = world(&[]);
    let text = refused_start(&world, &["--admin-token", ADMIN, "--metrics-token", ADMIN]).await;
    assert!(
        text.contains("the metrics token is the admin token"),
        "{text}"
    );
    assert!(!text.contains(ADMIN), "{text}");
    // Padded with blanks, as a copied file or an env file may be.
    let padded = format!(" {ADMIN}\n");
    let text = refused_start(
        &world,
        &["--admin-token", ADMIN, "--metrics-token", &padded],
    )
    .await;
    assert!(
        text.contains("the metrics token is the admin token"),
        "{text}"
    );
    // Both generated, then `cp data/admin-token data/metrics-token`.
    let mut served = world.serve().token(INGEST).start().await;
    served.stop(Duration::from_secs(10)).await;
    let data = world.data();
    std::fs::copy(data.join("admin-token"), data.join("metrics-token")).unwrap();
    let text = refused_start(&world, &[]).await;
    assert!(
        text.contains("the metrics token is the admin token"),
        "{text}"
    );
}
