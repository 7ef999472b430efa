//! `s3db-run [run] MANIFEST`: run a manifest until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::exit;
use crate::runtime::reload::Reloader;
use crate::runtime::Runtime;

/// How long past the grace period a stuck shutdown is waited for before the process exits.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The manifest to run.
    #[arg(default_value = "s3db.yaml")]
    pub manifest: PathBuf,
    /// How long running jobs may take to finish after SIGINT/SIGTERM before they are interrupted.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Serve the control API here instead of `server.listen` (IP:PORT).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Log lines as `human` text or `json` objects (level with RUST_LOG, default info).
    #[arg(long = "log-format", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, crate::types::DurationError> {
    s.parse::<crate::types::Duration>().map(|d| d.as_std())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        // The message and fields at the top level of each line, as log shippers expect.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Human => builder.with_ansi(super::color_stderr()).try_init(),
    };
}

pub fn run(args: &Args) -> u8 {
    init_logging(args.log_format);
    let checked = match super::load_checked(&args.manifest) {
        Ok(c) => c,
        Err(code) => return code,
    };
    super::block_on(async {
        let rt = match Runtime::build(&checked, None).await {
            Ok(rt) => rt,
            Err(e) => {
                let at = e
                    .manifest_path()
                    .and_then(|p| crate::manifest::locate(&args.manifest, &p))
                    .unwrap_or_default();
                tracing::error!(code = %e.code(), error = %e, help = e.help().unwrap_or_default(), at, "cannot start");
                return exit::INVALID;
            }
        };
        if !checked.manifest.database.single_runner {
            if let Err(problem) =
                crate::store::verify_conditional_writes(rt.db.store().as_ref()).await
            {
                tracing::error!(
                    code = "runtime::conditional_writes",
                    error = %problem,
                    help = "several runners on this store could run a slot twice or lose updates: use a store that honours If-None-Match and If-Match (AWS S3, MinIO, Ceph RGW), or set `database.singleRunner: true` if only one runner ever uses this database",
                    "cannot start"
                );
                return exit::INVALID;
            }
        }
        tracing::info!(manifest = %args.manifest.display(), sha256 = %checked.sha256, database = %checked.manifest.database.connection, "started");
        let rt = std::sync::Arc::new(rt);
        let stop = CancellationToken::new();
        let reloader = std::sync::Arc::new(Reloader::new(
            &args.manifest,
            rt.clone(),
            std::sync::Arc::new(std::sync::RwLock::new(checked.clone())),
        ));
        if let Err(e) = reloader.watch(stop.clone()) {
            tracing::warn!(error = %e, "hot reload on file change is off (SIGHUP and the API still reload)");
        }
        reloader.reload_on_sighup(stop.clone());
        let server = &checked.manifest.server;
        let api = if server.enabled {
            let addr = match args.listen.map(Ok).unwrap_or_else(|| server.listen.parse()) {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(listen = %server.listen, error = %e, "server.listen is not an address");
                    return exit::INVALID;
                }
            };
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(%addr, error = %e, "cannot listen for the control API");
                    return exit::INVALID;
                }
            };
            tracing::info!(%addr, token = server.token.is_some(), "control API listening");
            let metrics = crate::api::metrics::Metrics::new(&checked.sha256);
            metrics.follow(&rt);
            let m = metrics.clone();
            let events = crate::api::events::Events::follow(&rt);
            let e = events.clone();
            // `--listen` pins the address; otherwise a reload may move the API.
            let (moved_tx, moved_rx) = tokio::sync::watch::channel(addr);
            let pinned = args.listen.is_some();
            reloader.set_live_listen(!pinned);
            let current = reloader.clone();
            reloader.on_reload(std::sync::Arc::new(move |r| {
                m.reloaded(
                    &r.result,
                    (r.result == "applied").then_some(r.sha256.as_str()),
                );
                e.publish("reload", serde_json::to_value(r).unwrap_or_default());
                if r.result == "applied" && !pinned {
                    if let Ok(new) = current.manifest().manifest.server.listen.parse() {
                        moved_tx.send_if_modified(|a| std::mem::replace(a, new) != new);
                    }
                }
            }));
            let app = crate::api::router(std::sync::Arc::new(crate::api::ApiState {
                runtime: rt.clone(),
                reloader: reloader.clone(),
                metrics,
                restores: Default::default(),
                events,
            }));
            let idle = {
                let reloader = reloader.clone();
                std::sync::Arc::new(move || {
                    reloader
                        .manifest()
                        .manifest
                        .server
                        .idle_timeout
                        .map_or(DEFAULT_IDLE_TIMEOUT, |d| d.as_std())
                }) as IdleTimeout
            };
            Some(tokio::spawn(serve_api(
                listener,
                app,
                stop.clone(),
                moved_rx,
                idle,
            )))
        } else {
            None
        };
        tokio::spawn({
            let stop = stop.clone();
            async move {
                wait_for_signal().await;
                stop.cancel();
            }
        });
        let orderly = async {
            rt.run(stop.clone(), args.grace).await;
            if let Some(api) = api {
                let _ = api.await;
            }
        };
        // Whatever is stuck (a request to a stalled store, a connection the API waits on),
        // the process ends at most this long after the signal.
        let bound = async {
            stop.cancelled().await;
            tokio::time::sleep(args.grace + SHUTDOWN_SLACK).await;
        };
        tokio::select! {
            _ = orderly => exit::OK,
            _ = bound => {
                tracing::error!(
                    waited_secs = (args.grace + SHUTDOWN_SLACK).as_secs_f64(),
                    "shutdown did not finish within the grace period (a request to the store may be stuck); exiting anyway"
                );
                exit::FAILURE
            }
        }
    })
}

/// `server.idleTimeout` when it is not set.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long requests in flight may finish once the API stops or moves.
const DRAIN: Duration = Duration::from_secs(5);

/// The running manifest's `server.idleTimeout`, read for each new connection (a reload changes
/// it for the connections after it).
type IdleTimeout = std::sync::Arc<dyn Fn() -> Duration + Send + Sync>;

/// Accepts connections until `shutdown`, then lets requests in flight finish (for at most
/// `DRAIN`). Each connection must send a request's headers within the idle timeout, whether it
/// is new or kept alive after a response, so a client that connects and goes quiet (or a half-
/// open connection) is closed instead of held forever; `axum::serve` sets no such limit.
async fn serve_connections(
    listener: &tokio::net::TcpListener,
    app: &axum::Router,
    shutdown: impl std::future::Future<Output = ()>,
    idle: &IdleTimeout,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "the control API could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(idle())
            .serve_connection(
                hyper_util::rt::TokioIo::new(stream),
                hyper_util::service::TowerToHyperService::new(app.clone()),
            );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}

/// Serves the API until `stop`. When a reload moves `server.listen`, the new address is bound
/// first; only then does the old listener close (its requests in flight finish). If the new
/// address cannot be bound, the API stays where it is and the error is logged.
async fn serve_api(
    mut listener: tokio::net::TcpListener,
    app: axum::Router,
    stop: CancellationToken,
    mut moved: tokio::sync::watch::Receiver<std::net::SocketAddr>,
    idle: IdleTimeout,
) {
    loop {
        let next: std::sync::Arc<std::sync::Mutex<Option<tokio::net::TcpListener>>> =
            Default::default();
        let shutdown = {
            let (stop, next) = (stop.clone(), next.clone());
            let mut moved = moved.clone();
            async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        changed = moved.changed() => {
                            if changed.is_err() {
                                stop.cancelled().await;
                                return;
                            }
                            let addr = *moved.borrow_and_update();
                            match tokio::net::TcpListener::bind(addr).await {
                                Ok(l) => {
                                    tracing::info!(%addr, "control API moved");
                                    *next.lock().unwrap_or_else(|e| e.into_inner()) = Some(l);
                                    return;
                                }
                                Err(e) => tracing::error!(%addr, error = %e, "cannot move the control API; it stays where it is"),
                            }
                        }
                    }
                }
            }
        };
        serve_connections(&listener, &app, shutdown, &idle).await;
        let taken = next.lock().unwrap_or_else(|e| e.into_inner()).take();
        match taken {
            Some(l) if !stop.is_cancelled() => listener = l,
            _ => return,
        }
        // The receiver clone inside saw the change; mark it seen here too.
        moved.borrow_and_update();
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = int.recv() => tracing::info!("SIGINT"),
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
