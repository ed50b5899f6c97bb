//! The `cairn` binary: the whole command line over the embedded sled store.

fn main() -> std::process::ExitCode {
    cairn_app::Cli::new(cairn_app::SledStores).run()
}
