//! A throwaway PostgreSQL server for tests: a cluster made with `initdb` in
//! a temporary directory, stopped (and the directory removed) on drop.
//! PostgreSQL refuses to run as root, so as root the server runs as
//! `nobody` (through `setpriv`), with the directory given to that user.
//! Needs Debian's `postgresql` package (`.ci/run` installs it); without it
//! the test fails and says so.
//!
//! Where it listens: by default ([`PgServer::start`]) only on a Unix socket
//! in the cluster's own directory — no port to race for, so at 8 test
//! threads no other test's server can take it (before start or between a
//! [`PgServer::stop`] and a [`PgServer::resume`]), and nothing else can
//! answer at its address. [`PgServer::start_tcp`] listens on a loopback TCP
//! port too, the way most deployments connect: PostgreSQL cannot be given
//! port 0, so the port is picked free and, if another test binds it first
//! (the postmaster then exits, "could not bind"), picked again. Readiness
//! is always checked through the private socket (so it is this cluster
//! that answers), and over TCP `SHOW data_directory` confirms that the
//! port leads to this cluster.
//!
//! Shared by the library's unit tests (`src/store/postgres/`), the
//! integration tests and `examples/cluster_bench.rs`, so it uses nothing
//! but std and tempfile.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running throwaway server.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Whether it listens on 127.0.0.1:`port` too (else only on the
    /// socket in `dir`).
    tcp: bool,
    child: Option<Child>,
    extra: Vec<String>,
}

/// The port a Unix-socket-only cluster names its socket after
/// (`.s.PGSQL.5432`): any number does, the directory is its own.
const SOCKET_PORT: u16 = 5432;

/// How a start ended, short of a running server.
enum Failed {
    /// The TCP port was taken before the postmaster bound it.
    PortTaken,
}

fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).expect(
        "PostgreSQL is not installed (/usr/lib/postgresql/<version>/bin/postgres): \
         `apt-get install -y postgresql` (.ci/run does)",
    )
}

fn is_root() -> bool {
    // The effective uid, from /proc (no libc in this helper).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// `program args…`, as `nobody` when this process is root.
fn unprivileged(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PgServer {
    /// Makes a cluster and starts it on a Unix socket only (fsync off: a
    /// test needs no durability across a machine crash; `start_durable`
    /// keeps it on).
    pub fn start() -> PgServer {
        PgServer::start_with(&["-c", "fsync=off", "-c", "synchronous_commit=off"])
    }

    /// Makes a cluster with the server's default durability and starts it
    /// on a Unix socket only.
    pub fn start_durable() -> PgServer {
        PgServer::start_with(&[])
    }

    /// Makes a cluster and starts it on a Unix socket only, with extra
    /// `postgres` options.
    pub fn start_with(extra: &[&str]) -> PgServer {
        PgServer::create(extra, false)
    }

    /// Makes a cluster and starts it on a loopback TCP port too (fsync
    /// off), for the tests of what users do: `postgres://…@127.0.0.1:PORT`.
    pub fn start_tcp() -> PgServer {
        PgServer::start_tcp_with(&["-c", "fsync=off", "-c", "synchronous_commit=off"])
    }

    /// [`PgServer::start_tcp`] with extra `postgres` options.
    pub fn start_tcp_with(extra: &[&str]) -> PgServer {
        PgServer::create(extra, true)
    }

    fn create(extra: &[&str], tcp: bool) -> PgServer {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("pushwerk-pg")
            .tempdir()
            .unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "nobody:nogroup"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown of the cluster directory failed");
        }
        let out = unprivileged(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = PgServer {
            dir,
            bin,
            port: SOCKET_PORT,
            tcp,
            child: None,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        if !tcp {
            server.resume();
            return server;
        }
        // A port picked free may be bound by another test before the
        // postmaster binds it: then it exits, and another port is tried.
        for _ in 0..20 {
            server.port = free_port();
            match server.run() {
                Ok(()) => return server,
                Err(Failed::PortTaken) => continue,
            }
        }
        panic!("postgres found no free TCP port in 20 attempts");
    }

    /// The connection URL (user `postgres`, database `postgres`): the
    /// cluster's socket directory (percent-encoded, as libpq and
    /// tokio-postgres read a host that is a path), or 127.0.0.1:PORT for
    /// [`PgServer::start_tcp`].
    pub fn url(&self) -> String {
        if self.tcp {
            return format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        }
        let mut host = String::new();
        for b in self.dir.path().to_str().expect("a UTF-8 path").bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                host.push(b as char);
            } else {
                host.push_str(&format!("%{b:02X}"));
            }
        }
        format!("postgres://postgres@{host}:{}/postgres", self.port)
    }

    /// The TCP port it listens on ([`PgServer::start_tcp`]; a socket-only
    /// cluster has none).
    pub fn port(&self) -> u16 {
        assert!(self.tcp, "a Unix-socket-only cluster has no TCP port");
        self.port
    }

    /// Runs one SQL statement through `psql`, over the cluster's own
    /// socket, and returns its output (unaligned, tuples only).
    pub fn psql(&self, sql: &str) -> String {
        self.psql_at(self.dir.path().to_str().expect("a UTF-8 path"), sql)
    }

    fn psql_at(&self, host: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", host])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", "postgres", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Starts the server again (after [`PgServer::stop`]) where it was
    /// (the same socket, or the same TCP port) and waits until it takes
    /// connections.
    pub fn resume(&mut self) {
        match self.run() {
            Ok(()) => {}
            Err(Failed::PortTaken) => panic!(
                "postgres cannot listen on port {} again (taken meanwhile):\n{}",
                self.port,
                self.log_text()
            ),
        }
    }

    /// Starts the postmaster and waits until it answers on its own socket
    /// (and, over TCP, until the port is shown to lead to this cluster).
    fn run(&mut self) -> Result<(), Failed> {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        if is_root() {
            let _ = Command::new("chown")
                .arg("nobody:nogroup")
                .arg(self.dir.path().join("server.log"))
                .status();
        }
        let listen = if self.tcp { "127.0.0.1" } else { "" };
        let child = unprivileged(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(format!("listen_addresses={listen}"))
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(["-c", "max_connections=200"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-U", "postgres", "-h"])
                .arg(self.dir.path())
                .arg("-p")
                .arg(self.port.to_string())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                break;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                let log = self.log_text();
                if self.tcp && log.contains("could not bind") {
                    return Err(Failed::PortTaken);
                }
                panic!("postgres exited ({status}): {log}");
            }
            assert!(Instant::now() < deadline, "postgres did not start in 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.tcp {
            // The postmaster exits when it cannot bind its only address,
            // so a running one holds the port; checked all the same.
            let data = self.dir.path().join("data");
            let shown = self.psql_at("127.0.0.1", "SHOW data_directory");
            assert_eq!(
                std::fs::canonicalize(&shown).ok(),
                std::fs::canonicalize(&data).ok(),
                "127.0.0.1:{} leads to another cluster",
                self.port
            );
        }
        Ok(())
    }

    /// Stops the server (fast shutdown: open connections are cut) and
    /// waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGINT: PostgreSQL's fast shutdown. `kill` is a shell-free
            // way to send it without libc.
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.wait();
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}
