//! Build facts for `pushwerk --version`: the git commit (with `-dirty` if
//! the work tree had changes) and the build date.
//!
//! - Outside a git checkout (a crate tarball, `cargo install` from a
//!   download) the commit is `unknown`. A checkout only counts if its top
//!   level is this package's folder, so a tarball unpacked inside some other
//!   repository does not borrow that repository's commit.
//! - The date is `SOURCE_DATE_EPOCH` (reproducible builds) if set, else
//!   the time of the build, as a UTC date `YYYY-MM-DD`.
//! - It reruns only when HEAD, the branch it points to, the packed refs or
//!   the index change (a commit, a checkout, a `git add`) or
//!   `SOURCE_DATE_EPOCH` does — not on every build. So `-dirty` reflects
//!   the tree when one of those last changed.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");

    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let commit = git_commit(&manifest).unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=PUSHWERK_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=PUSHWERK_BUILD_DATE={}", build_date());
}

/// Runs git in `dir` and returns its trimmed stdout, or None.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        // `git status` may otherwise rewrite the index it refreshes, which
        // is watched: that would make every build rerun this script.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_owned())
}

fn git_commit(manifest: &Path) -> Option<String> {
    let top = git(manifest, &["rev-parse", "--show-toplevel"])?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same(Path::new(&top), manifest) {
        return None;
    }
    // Rerun when HEAD moves, the branch it names moves, or the index
    // changes. `--git-path` resolves them in a linked worktree too.
    let mut watched = vec![
        "HEAD".to_owned(),
        "packed-refs".to_owned(),
        "index".to_owned(),
    ];
    if let Some(branch) = git(manifest, &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(manifest, &["rev-parse", "--git-path", &name]) {
            let path = manifest.join(path); // relative paths are relative to the manifest dir
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    let hash = git(manifest, &["rev-parse", "--short=10", "HEAD"])?;
    if hash.is_empty() || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // `--porcelain` lists changed and untracked files; ignored ones are not
    // changes of the source.
    let dirty = git(manifest, &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{hash}-dirty") } else { hash })
}

/// `SOURCE_DATE_EPOCH` or now, as a UTC date.
fn build_date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`), so that build.rs needs no date crate.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}
