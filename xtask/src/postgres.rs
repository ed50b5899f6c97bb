//! The PostgreSQL the tests use: the database `cairn_test` on the local
//! socket, owned by the user running the tests. `cargo xtask ci` makes it
//! ready before the tests: it starts the installed cluster when it is down
//! and creates the role and the database when they are missing (as root,
//! through the `postgres` account). `CAIRN_TEST_POSTGRES` names another
//! database instead, which is then used as it is.

use std::process::Command;

use anyhow::{Result, bail};

/// The test database, as psql names it.
const DATABASE: &str = "cairn_test";

/// Whether psql reaches the test database.
fn reachable() -> bool {
    Command::new("psql")
        .args(["-qAt", "-d", DATABASE, "-c", "SELECT 1"])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Runs `line` in a shell as the `postgres` account (or, with `as_me`,
/// as this user), saying what it runs; a failure is reported, not fatal:
/// the check after says what is still missing.
fn run(line: &str, as_me: bool) {
    eprintln!("$ {}{line}", if as_me { "" } else { "(as postgres) " });
    let status = if as_me {
        Command::new("sh").args(["-c", line]).status()
    } else {
        Command::new("su").args(["postgres", "-c", line]).status()
    };
    if let Err(e) = status {
        eprintln!("  {e}");
    }
}

/// Makes the test database reachable, or says why it cannot.
pub fn ensure() -> Result<()> {
    if std::env::var_os("CAIRN_TEST_POSTGRES").is_some() || reachable() {
        return Ok(());
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    // Every installed cluster that is down is started.
    let clusters = Command::new("pg_lsclusters").arg("--no-header").output();
    if let Ok(out) = clusters {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let [version, name, _port, status, ..] = fields.as_slice()
                && *status != "online"
            {
                run(&format!("pg_ctlcluster {version} {name} start"), true);
            }
        }
    }
    run(&format!("psql -qc 'CREATE ROLE \"{user}\" SUPERUSER LOGIN'"), false);
    run(&format!("createdb -O '{user}' {DATABASE}"), false);
    if !reachable() {
        bail!(
            "the tests need PostgreSQL: install it (`apt-get install -y postgresql`), start it \
             (`pg_ctlcluster 15 main start`) and create the database `{DATABASE}` owned by `{user}`, \
             or name one in CAIRN_TEST_POSTGRES"
        );
    }
    Ok(())
}
