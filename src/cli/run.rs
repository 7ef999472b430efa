//! `s3db-run [run] MANIFEST`: run a manifest until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::exit;
use crate::runtime::reload::Reloader;
use crate::runtime::Runtime;

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

fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse::<crate::manifest::types::Duration>()
        .map(|d| d.as_std())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
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
                tracing::error!(error = %e, "cannot start");
                return exit::INVALID;
            }
        };
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
            reloader.on_reload(std::sync::Arc::new(move |r| {
                m.reloaded(
                    &r.result,
                    (r.result == "applied").then_some(r.sha256.as_str()),
                );
            }));
            let app = crate::api::router(std::sync::Arc::new(crate::api::ApiState {
                runtime: rt.clone(),
                reloader: reloader.clone(),
                metrics,
            }));
            let stop = stop.clone();
            Some(tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
            }))
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
        rt.run(stop, args.grace).await;
        if let Some(api) = api {
            let _ = api.await;
        }
        exit::OK
    })
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
