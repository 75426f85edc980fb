//! The `pushwerk` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    cap_malloc_arenas();
    pushwerk::cli::main_entry()
}

/// glibc gives each thread that allocates concurrently an arena of its own
/// (up to 8 per core) and rarely returns their free memory: under a steady
/// 5,000 events/s the daemon's RSS grew to 126 MB, of which about 58 MB was
/// such fragmentation (BENCHMARKS.md). Two arenas keep it near 68 MB at
/// the same throughput. `MALLOC_ARENA_MAX` in the environment still wins.
fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before
        // any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
