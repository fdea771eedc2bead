//! The `mx2` binary: everything lives in the library; see `cli`.

fn main() -> std::process::ExitCode {
    mx2::cli::main()
}
