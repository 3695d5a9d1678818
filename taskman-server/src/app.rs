//! Assembles the application and serves it until SIGTERM, SIGINT or SIGHUP.
//!
//! This is the one place where the parts meet, and so the one place telemetry joins them:
//!
//! - [`run`] opens storage, serves, and returns once the server has stopped, then shuts the
//!   tracer provider down with whatever is left of `server.shutdown_timeout`. The provider
//!   and breaker ([`Telemetry`]) are built before, inside the same runtime.
//! - [`app`] builds one worker's actix `App` from [`AppState`]: the `telemetry-http` routes,
//!   the HTTP metrics middleware around everything, and the server spans
//!   (`telemetry_http::ServerSpans`) around the task scope only, so `/health*` and `/metrics`
//!   stay untraced. A request whose method is none of the nine the HTTP conventions know gets
//!   a span named `HTTP {route}`.
//!
//! Shutdown: actix's own signal handling is off (it treats SIGINT as a forced stop). SIGTERM,
//! SIGINT and SIGHUP all stop accepting connections and give requests in flight up to
//! `server.shutdown_timeout` to finish. SIGHUP is a stop, not a reload: the server has nothing
//! to reload, and a supervisor or closing terminal that sends it expects the process to end,
//! which by default it would at once, cutting requests and losing unflushed spans.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use telemetry_http::TelemetryHttp;

use crate::api::{error, ready, tasks};
use crate::config::{Settings, StorageSettings};
use crate::storage::{StorageUrl, Store};
use crate::telemetry::Telemetry;

/// What every worker's application is built from. Cheap to clone: one per worker.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The task store, shared by all workers.
    pub store: Store,
    /// Largest JSON request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Health and metrics routes and the HTTP metrics middleware; one instance shared by
    /// every worker, so the `/metrics` rate limit is per client, not per worker.
    pub telemetry: TelemetryHttp,
}

/// One worker's application: HTTP metrics around everything, the telemetry routes, the
/// traced task routes, JSON errors for unknown routes.
pub fn app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let telemetry = state.telemetry;
    App::new()
        .wrap(telemetry.http_metrics())
        .app_data(web::Data::new(state.store))
        .configure(|cfg| telemetry.configure(cfg))
        .configure(ready::configure)
        .service(
            tasks::scope(state.max_body_bytes)
                // The body deadline inside the server span, so a timed-out body is a
                // traced 408.
                .wrap(from_fn(tasks::body_deadline))
                .wrap(telemetry.server_spans()),
        )
        .default_service(web::to(error::no_route))
}

/// Opens storage and serves until a stop signal; returns once the server has stopped and
/// tracing is shut down, all within `server.shutdown_timeout` of the signal. Errors name the
/// setting at fault, for instance `storage.path = ...: cannot open ...`.
pub async fn run(settings: Settings, telemetry: Telemetry) -> anyhow::Result<()> {
    // Before the first write to the database: see `storage::handle_file_size_signal`.
    if let Err(err) = crate::storage::handle_file_size_signal() {
        telemetry.abandon().await;
        return Err(err).context("cannot handle SIGXFSZ");
    }
    let store = match open_store(&settings.storage).await {
        Ok(store) => store,
        Err(err) => {
            telemetry.abandon().await;
            return Err(err);
        }
    };
    let state = AppState {
        store,
        max_body_bytes: settings.server.max_body_bytes.get(),
        telemetry: telemetry.http().clone(),
    };
    let stop_requested = Arc::new(OnceLock::new());
    if let Err(err) = serve(&settings, state, Arc::clone(&stop_requested)).await {
        telemetry.abandon().await;
        return Err(err);
    }
    let timeout = settings.server.shutdown_timeout;
    let left = stop_requested
        .get()
        .map_or(timeout, |at: &Instant| timeout.saturating_sub(at.elapsed()));
    // Even a drain that used the whole budget leaves tracing a moment to flush.
    telemetry.shutdown(left.max(SHUTDOWN_FLOOR)).await;
    Ok(())
}

/// Raises the soft limit on open files to the hard limit and returns the limit in use (the
/// listening line logs it). Every connection is a file descriptor; the soft limit is often
/// 1024, which a few hundred slow clients and the database would exhaust, while the hard
/// limit the operator set is the real ceiling. A refusal is logged, not fatal: the server still runs with the old limit.
fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
            Ok(limits) => limits,
            Err(err) => {
                tracing::warn!("cannot read the open file limit: {err}");
                return None;
            }
        };
        let limit = if soft < hard {
            match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                Ok(()) => hard,
                Err(err) => {
                    tracing::warn!(soft, hard, "cannot raise the open file limit: {err}");
                    soft
                }
            }
        } else {
            soft
        };
        Some(limit)
    }
    #[cfg(not(unix))]
    None
}

/// The least time tracing gets to flush on shutdown.
const SHUTDOWN_FLOOR: Duration = Duration::from_millis(200);

async fn open_store(storage: &StorageSettings) -> anyhow::Result<Store> {
    let choice = storage.choice();
    let shown = match (&choice.url, choice.key) {
        // `storage.path = taskman.db`, as the operator wrote it.
        (StorageUrl::Sqlite(path), "storage.path") => path.display().to_string(),
        (url, _) => url.to_string(),
    };
    Store::connect(&choice.url, storage.pool())
        .await
        .with_context(|| format!("{} = {shown}", choice.key))
}

/// Binds `server.bind`, logs `listening on http://ADDRESS` once bound (port 0 is resolved),
/// and serves `state` until SIGTERM, SIGINT or SIGHUP, then drains requests in flight. The moment
/// the stop signal arrived is recorded in `stop_requested`.
pub async fn serve(
    settings: &Settings,
    state: AppState,
    stop_requested: Arc<OnceLock<Instant>>,
) -> anyhow::Result<()> {
    let server = &settings.server;
    let instance = state.telemetry.service_instance_id().map(str::to_owned);
    let body_timeout = tasks::BodyTimeout(server.request_body_timeout);
    let mut http = HttpServer::new(move || app(state.clone()).app_data(body_timeout))
        .disable_signals()
        .shutdown_timeout(whole_seconds(server.shutdown_timeout))
        .client_request_timeout(server.request_head_timeout)
        .keep_alive(server.keep_alive)
        .client_disconnect_timeout(server.client_disconnect_timeout);
    if let Some(workers) = server.workers {
        http = http.workers(workers.get());
    }
    let http = http
        .bind(server.bind.as_str())
        .with_context(|| format!("server.bind = {}: cannot listen", server.bind))?;
    let urls: Vec<String> = http.addrs().iter().map(|a| format!("http://{a}")).collect();
    // Installed before the address is announced: whoever waits for that line may signal us
    // at once, and an uncaught SIGTERM would kill the process instead of stopping it.
    let signals = StopSignals::install().context("cannot handle SIGTERM/SIGINT/SIGHUP")?;
    // Raised once the start can no longer fail, so that a failed start stays one line.
    let open_file_limit = raise_open_file_limit();
    let running = http.run();
    tracing::info!(
        storage.url = %settings.storage.choice().url,
        service.instance.id = instance.as_deref(),
        open_file_limit,
        "listening on {}",
        urls.join(", ")
    );
    tokio::spawn(stop_on_signal(
        signals,
        running.handle(),
        server.shutdown_timeout,
        stop_requested,
    ));
    running.await.context("the HTTP server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// actix counts the drain timeout in whole seconds; round up so "250ms" still drains.
fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

async fn stop_on_signal(
    mut signals: StopSignals,
    server: ServerHandle,
    timeout: Duration,
    stop_requested: Arc<OnceLock<Instant>>,
) {
    let signal = signals.next().await;
    let _ = stop_requested.set(Instant::now());
    tracing::info!(
        signal,
        "stopping: no new connections; requests in flight have {} to finish",
        humantime::format_duration(timeout)
    );
    let mut stopped = std::pin::pin!(server.stop(true));
    loop {
        tokio::select! {
            () = &mut stopped => break,
            signal = signals.next() => tracing::info!(signal, "already stopping"),
        }
    }
}

/// SIGTERM, SIGINT and SIGHUP as a stream of names.
#[derive(Debug)]
struct StopSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl StopSignals {
    #[cfg(unix)]
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    #[cfg(unix)]
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.hangup.recv() => "SIGHUP",
        }
    }

    #[cfg(not(unix))]
    fn install() -> std::io::Result<Self> {
        Ok(Self {})
    }

    #[cfg(not(unix))]
    async fn next(&mut self) -> &'static str {
        // Without a handler there is nothing to wait for; never report a signal.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        "Ctrl-C"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_timeout_rounds_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::from_secs(10)), 10);
        assert_eq!(whole_seconds(Duration::from_millis(250)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
    }
}
