//! The `pushwerk` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    pushwerk::cli::main_entry()
}
