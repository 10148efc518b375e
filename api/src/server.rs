//! The HTTP server under the API, the collector and the Slack endpoints, built so that clients
//! cannot exhaust the process: a bounded number of connections (the rest wait in the kernel's
//! accept queue, costing no file descriptor here), a deadline for a request's headers and a
//! bound on the pause between pieces of its body. Without them 1,100 idle sockets once took every
//! file descriptor under a limit of 1024, the snapshot write failed and the engine exited.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// `[api.server]`: limits of every HTTP listener of the process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerLimits {
    /// Connections served at once per listener; further clients wait to be accepted. Also capped
    /// at a quarter of the process's open-file limit, so sockets never starve the snapshots.
    pub max_connections: usize,
    /// A request's headers must arrive within this (slow or idle clients are disconnected).
    pub header_timeout_seconds: u64,
    /// The longest pause between two pieces of a request body.
    pub body_timeout_seconds: u64,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits { max_connections: 1024, header_timeout_seconds: 10, body_timeout_seconds: 10 }
    }
}

impl ServerLimits {
    /// The connection limit after the open-file cap.
    pub fn connections(&self) -> usize {
        let files = open_file_limit().unwrap_or(u64::MAX);
        (self.max_connections as u64).min(files / 4).max(1) as usize
    }
}

/// Connections refused or cut by the limits, for `/metrics`.
#[derive(Debug, Default)]
pub struct ServerCounters {
    pub connections_open: AtomicU64,
    pub accept_errors: AtomicU64,
}

impl ServerCounters {
    pub fn write_metrics(&self, listener: &str, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "clickflow_http_connections_open{{listener=\"{listener}\"}} {}\nclickflow_http_accept_errors_total{{listener=\"{listener}\"}} {}",
            self.connections_open.load(Ordering::Relaxed),
            self.accept_errors.load(Ordering::Relaxed)
        );
    }
}

/// The soft limit on open files of this process (`None` where it cannot be read).
pub fn open_file_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open requests finish for a
/// moment. The handlers see the peer's address as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &ServerLimits,
    counters: Arc<ServerCounters>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let body_timeout = Duration::from_secs(limits.body_timeout_seconds.max(1));
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(body_timeout));
    let permits = Arc::new(Semaphore::new(limits.connections()));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_timeout_seconds.max(1)));
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut last_error_log: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most often: wait a little instead of spinning.
                    counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                    if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        tracing::warn!(error = %e, "cannot accept a connection (repeats are not logged for 10 s)");
                        last_error_log = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            app.clone().oneshot(request)
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        let counters = counters.clone();
        counters.connections_open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            // Errors here are the client's (reset, timed out): nothing to tell the operator.
            let _ = connection.await;
            counters.connections_open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    // Open requests get a moment; change streams never end by themselves.
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
    Ok(())
}
