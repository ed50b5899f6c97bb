//! `cairn serve`: opens the data directory's store for good, drives its
//! runs through a [`Service`], and hands connections to the front the
//! binary plugged in (the HTTP server). Signals stop it cleanly.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use cairn_ports::NoSink;

use super::args::{AuthMode, LogFormat};
use super::{Verbs, exit};
use crate::error::Error;
use crate::host::Holder;
use crate::service::{FrontAuth, Service};

/// The file in the data directory that holds the local key of a server
/// with tokens: the command line of the same user reads it to go through
/// the server (no one else may read it).
pub const LOCAL_KEY_FILE: &str = "serve.key";

/// `cairn serve`.
pub(crate) fn serve(
    verbs: &Verbs<'_>,
    listen: &str,
    auth: AuthMode,
    log_format: LogFormat,
    max_runs: Option<usize>,
) -> Result<u8, Error> {
    let Some(front) = verbs.plugins.front.clone() else {
        return Err(Error::Config("this binary has no HTTP front: it cannot serve".into()));
    };
    let addr = address(listen)?;
    if auth == AuthMode::None && !addr.ip().is_loopback() {
        return Err(Error::Config(format!(
            "--auth none on {addr}: a server without tokens listens only on a loopback address (127.0.0.1, ::1)"
        )));
    }
    logs(log_format);
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr().map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?;
    let url = format!("http://{local}");
    let holder = Holder { address: Some(url.clone()), ..Holder::me("serve", None) };
    let (app, runtime) = verbs.open_app(holder, Arc::new(NoSink), crate::host::WAIT_FOR_STORE)?;
    let local_key = match auth {
        AuthMode::None => None,
        AuthMode::Token => Some(write_local_key(verbs.data_dir)?),
    };
    let front_auth = match auth {
        AuthMode::None => FrontAuth::None,
        AuthMode::Token => FrontAuth::Token { local_key },
    };
    let service = Service::limited(Arc::new(app), max_runs);
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?;
        let stop = stopped();
        let app = service.app();
        app.meter().watch(app.hub(), Arc::clone(app.store()));
        let recovered = service.recover().await?;
        if recovered > 0 {
            tracing::info!(runs = recovered, "driving on the runs a previous process left running");
        }
        service.work().await?;
        service.schedule();
        service.index();
        eprintln!("cairn serve listening on {url}");
        let served = front.serve(Arc::clone(&service), listener, front_auth, Box::pin(stop)).await;
        tracing::info!("stopping: interrupting the drives; what was in flight runs again on the next start");
        service.shutdown().await;
        served.map_err(|e| Error::Config(format!("the server stopped: {e}")))
    });
    let _ = std::fs::remove_file(verbs.data_dir.join(LOCAL_KEY_FILE));
    // The store closes (and flushes) as the last handle on it goes.
    drop(service);
    served?;
    Ok(exit::OK)
}

/// The address `listen` names (`HOST:PORT`, a name resolved).
fn address(listen: &str) -> Result<SocketAddr, Error> {
    listen
        .to_socket_addrs()
        .ok()
        .and_then(|mut all| all.next())
        .ok_or_else(|| Error::Config(format!("--listen `{listen}`: give HOST:PORT, such as 127.0.0.1:7770")))
}

/// Resolves when SIGTERM or SIGINT (Ctrl-C) comes. The handlers are in
/// place when this returns (not when it is first polled), so a signal that
/// comes while the server starts is not lost to the default action.
fn stopped() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        match signals {
            (Ok(mut terminate), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
}

/// Writes a fresh local key, readable by its owner only.
fn write_local_key(dir: &std::path::Path) -> Result<String, Error> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let key = cairn_ports::new_secret().map_err(|e| Error::Config(e.message))?;
    let path = dir.join(LOCAL_KEY_FILE);
    let _ = std::fs::remove_file(&path);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(key.as_bytes()));
    written.map_err(|e| Error::Store(format!("cannot write `{}`: {e}", path.display())))?;
    Ok(key)
}

/// Logs on stderr, as lines or JSON; `RUST_LOG` picks what (default `info`).
fn logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = super::term::Look::stderr(false).colour;
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
