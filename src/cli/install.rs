//! What installing pushwerk needs beyond the binary: shell completions and
//! a man page, generated from the clap definition of [`super::Cli`] so that
//! they always match the real commands and options, and the long version
//! string (commit and build date, from `build.rs`).

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory;

use super::Cli;

/// `pushwerk --version`: the crate version, the git commit it was built
/// from (`-dirty` if the tree had changes; `unknown` outside a git
/// checkout) and the build date (`SOURCE_DATE_EPOCH` if set). Exists so
/// that a bug report names the exact build.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PUSHWERK_GIT_COMMIT"),
    ", built ",
    env!("PUSHWERK_BUILD_DATE"),
    ")"
);

/// Writes the completion script for `shell` to `out` (`pushwerk
/// completions bash > /etc/bash_completion.d/pushwerk`).
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "pushwerk", &mut buf);
    out.write_all(&buf)
        .context("cannot write the completions")?;
    Ok(())
}

/// Writes the man page `pushwerk(1)` to `out`, or, with `dir`, one page per
/// command (`pushwerk.1`, `pushwerk-serve.1`, …) into that folder.
pub fn man(dir: Option<&Path>, out: &mut dyn Write) -> anyhow::Result<()> {
    let cmd = Cli::command();
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        clap_mangen::generate_to(cmd, dir)
            .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
        writeln!(out, "wrote man pages into {}", dir.display())?;
        return Ok(());
    }
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut buf)
        .context("cannot render the man page")?;
    out.write_all(&buf).context("cannot write the man page")?;
    Ok(())
}
