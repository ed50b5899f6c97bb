//! The `cairn` binary: all of it lives in the library, so it can be tested.

fn main() -> std::process::ExitCode {
    cairn_app::cli::main()
}
