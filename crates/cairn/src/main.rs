//! The `cairn` binary: the whole command line over the embedded sled
//! store (or PostgreSQL, when the config or `--store` names a database),
//! with the HTTP server for `cairn serve`.
//!
//! What it does not do: anything of its own. It picks the store and the
//! front; every verb is `cairn-app`'s, the server is `cairn-server`'s and
//! the client of a server is `cairn-client`'s.
//!
//! May depend on: `cairn-app`, `cairn-client`, `cairn-server`.

fn main() -> std::process::ExitCode {
    cairn_app::Cli::new(cairn_app::DefaultStores).front(cairn_server::Http).client(cairn_client::Http).run()
}
