//! `serve`: the whole product on one machine, on the embedded SQLite store: the HTTP API
//! (`/v1/...`), the webhook receiver (`/webhooks/circleci`), `/healthz`, and the scheduler
//! firing each schedule at its exact slot through the same `tick` as the Lambda.
//!
//! Secrets come from the environment (or files), by the documented names:
//! `CIRCLECI_TOKEN` (or `CIRCLECI_TOKENS[_FILE]`), `CIRCLECI_WEBHOOK_SECRETS[_FILE]`,
//! `CIRCLECI_TRIGGERS_CLIENT_KEYS[_FILE]`. With `--sandbox` none are needed: an in-process
//! CircleCI simulator stands in for CircleCI and the secrets are generated.
//!
//! SIGHUP or an edit of the triggers file reloads it; a file that fails `check` is refused
//! (logged) and the running configuration stays. (Sandbox projects are created at start:
//! projects first named by a reloaded file are not simulated.)
//!
//! On SIGINT/SIGTERM the server stops accepting, finishes in-flight requests, and the
//! scheduler finishes the tick it is in (it may be sending to CircleCI under a claim).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use shared::clock::{Clock, SystemClock};
use shared::config::TriggersFile;
use shared::console::page::{StatusPage, status_router};
use shared::local::{SwappableRouter, build, local_secrets, open_outbox, open_queue, open_store};
use shared::notify::Sweeper;
use shared::secrets::LocalSecretSource;
use shared::telemetry::{LogFormat, init};
use shared::triggers::chained::queue::embedded::EmbeddedWorker;
use shared::triggers::scheduled::Scheduler;
use shared::triggers::scheduled::local::run_until;
use shared::wiring::LambdaContext;
use tokio::sync::{mpsc, watch};

use crate::sandbox::{FailingJob, Sandbox, sandbox_router};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory of the embedded store.
    #[arg(long, default_value = ".circleci-triggers")]
    data: PathBuf,
    /// Run against an in-process CircleCI simulator shaped after the triggers file, with
    /// generated secrets: no CircleCI account needed.
    #[arg(long)]
    sandbox: bool,
    /// How many times faster than real time sandbox jobs run.
    #[arg(long, default_value_t = 1.0, requires = "sandbox")]
    sandbox_speed: f64,
    /// Make a sandbox job fail: `PROJECT:JOB` (JOB is `build` or `test`); its first attempt
    /// in every workflow of the project ends `failed`, reruns succeed. Repeatable.
    #[arg(long, value_name = "PROJECT:JOB", requires = "sandbox")]
    sandbox_fail: Vec<FailingJob>,
    /// Added to every simulated CircleCI response (shows what a slow CircleCI looks like).
    #[arg(long, default_value_t = 0, requires = "sandbox", hide = true)]
    sandbox_latency_ms: u64,
    /// Deliver every sandbox webhook twice, as CircleCI's redeliveries do.
    #[arg(long, requires = "sandbox", hide = true)]
    sandbox_duplicate_webhooks: bool,
}

pub fn run(config: &Path, args: ServeArgs) -> anyhow::Result<ExitCode> {
    init(LogFormat::Text);
    let triggers = shared::config::load_file(config)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(serve(config, args, triggers))
}

async fn serve(
    config: &Path,
    args: ServeArgs,
    mut triggers: TriggersFile,
) -> anyhow::Result<ExitCode> {
    let sandbox = if args.sandbox {
        let sandbox = Sandbox::start(&triggers, args.sandbox_speed, &args.sandbox_fail).await?;
        sandbox.set_faults(
            Duration::from_millis(args.sandbox_latency_ms),
            args.sandbox_duplicate_webhooks,
        );
        triggers.circleci.api_url = sandbox.api_url();
        Some(sandbox)
    } else {
        None
    };
    let secrets = local_secrets(match &sandbox {
        Some(sandbox) => sandbox.secret_source(&triggers.circleci.token),
        None => LocalSecretSource::from_env(&triggers.circleci.token),
    });
    let api_url = triggers.circleci.api_url.clone();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = open_store(&args.data, &triggers, clock.clone())?;
    let queue = open_queue(&args.data, clock.clone())?;
    let outbox = open_outbox(&args.data)?;
    let server = build(
        triggers,
        clock.clone(),
        store.clone(),
        secrets.clone(),
        queue.clone(),
        outbox.clone(),
    )?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    if let Some(sandbox) = &sandbox {
        sandbox.register_webhooks(local)?;
        println!("{}", sandbox.banner(local));
        tracing::warn!(api_url = %api_url, "SANDBOX: CircleCI is simulated in this process");
    }
    tracing::info!(
        listen = %local,
        config = %config.display(),
        data = %args.data.display(),
        api_url = %api_url,
        schedules = server.context.triggers.schedule.len(),
        chains = server.context.triggers.chain.len(),
        endpoints = server.context.triggers.endpoint.len(),
        "serving"
    );
    // Tests and scripts wait for this exact line to learn the bound port.
    println!("listening on http://{local}");

    let (stop, stopped) = watch::channel(false);
    let signals = tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let routes = SwappableRouter::new(with_sandbox_routes(
        with_status_page(server.router, &server.context),
        &server.scheduler,
        sandbox.is_some(),
    ));
    let mut http = tokio::spawn(
        axum::serve(listener, routes.router())
            .with_graceful_shutdown(wait_for_stop(stopped.clone()))
            .into_future(),
    );
    let mut scheduler = running_scheduler(server.scheduler, stopped.clone());
    let mut deliveries = running_worker(server.deliveries, stopped.clone());
    let mut notifications = running_notifications(server.notifications, stopped.clone());

    // Reloads: SIGHUP or a change of the file. A file that fails `check` is refused and
    // the running configuration stays.
    let mut reloads = reload_requests(config.to_path_buf());
    let served = loop {
        let reason = tokio::select! {
            // Ends after a stop signal, once in-flight requests finished (or on failure).
            served = &mut http => break served,
            reason = reloads.recv() => match reason {
                Some(reason) => reason,
                None => std::future::pending().await,
            },
        };
        let mut triggers = match shared::config::load_file(config) {
            Ok(triggers) => triggers,
            Err(error) => {
                tracing::error!(%reason, %error,
                    "the changed triggers file fails check; keeping the running configuration");
                continue;
            }
        };
        if sandbox.is_some() {
            triggers.circleci.api_url = api_url.clone();
        }
        let rebuilt = build(
            triggers,
            clock.clone(),
            store.clone(),
            secrets.clone(),
            queue.clone(),
            outbox.clone(),
        );
        match rebuilt {
            Ok(reloaded) => {
                routes.replace(with_sandbox_routes(
                    with_status_page(reloaded.router, &reloaded.context),
                    &reloaded.scheduler,
                    sandbox.is_some(),
                ));
                // The old loop finishes the tick it is in before the new one starts.
                scheduler.stop().await;
                scheduler = running_scheduler(reloaded.scheduler, stopped.clone());
                // Deliveries in flight finish on the old rules; queued ones take the new.
                deliveries.stop().await;
                deliveries = running_worker(reloaded.deliveries, stopped.clone());
                notifications.stop().await;
                notifications = running_notifications(reloaded.notifications, stopped.clone());
                tracing::info!(%reason,
                    schedules = reloaded.context.triggers.schedule.len(),
                    chains = reloaded.context.triggers.chain.len(),
                    endpoints = reloaded.context.triggers.endpoint.len(),
                    "triggers file reloaded");
            }
            Err(error) => tracing::error!(%reason, %error,
                "cannot apply the changed triggers file; keeping the running configuration"),
        }
    };
    // Dropping the stop sender also stops the scheduler if the server failed on its own.
    signals.abort();
    let served = served.context("server task failed")?;
    let ticks = scheduler.stop().await;
    deliveries.stop().await;
    notifications.stop().await;
    served.context("server failed")?;
    tracing::info!(ticks, "stopped");
    Ok(ExitCode::SUCCESS)
}

/// Adds the status page at `/` (read-only; `serve` listens where its operator is).
fn with_status_page(router: Router, context: &LambdaContext) -> Router {
    router.merge(status_router(StatusPage {
        triggers: context.triggers.clone(),
        store: context.store.clone(),
        clock: context.clock.clone(),
    }))
}

/// Adds the sandbox's run-a-schedule route when in the sandbox.
fn with_sandbox_routes(router: Router, scheduler: &Scheduler, sandbox: bool) -> Router {
    if sandbox {
        router.merge(sandbox_router(scheduler.clone()))
    } else {
        router
    }
}

/// A loop of the running configuration (the scheduler, the webhook worker): stopped on a
/// reload (after the work it is in) or with the process.
struct Running<T> {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<T>,
}

impl<T: Default + Send + 'static> Running<T> {
    /// Runs `work` until [`Running::stop`] or the process-wide stop resolves the future it
    /// is given.
    fn spawn<F, W>(process_stop: watch::Receiver<bool>, work: F) -> Self
    where
        F: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> W,
        W: Future<Output = T> + Send + 'static,
    {
        let (stop, own_stop) = watch::channel(false);
        let either = Box::pin(async move {
            tokio::select! {
                () = wait_for_stop(own_stop) => {}
                () = wait_for_stop(process_stop) => {}
            }
        });
        Self {
            stop,
            task: tokio::spawn(work(either)),
        }
    }

    /// Stops the loop after the work it is in; returns what it reports.
    async fn stop(self) -> T {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

/// The scheduler loop; it reports how many ticks it ran.
fn running_scheduler(scheduler: Scheduler, process_stop: watch::Receiver<bool>) -> Running<u64> {
    Running::spawn(process_stop, move |stop| async move {
        run_until(&scheduler, stop).await
    })
}

/// The worker settling queued webhook deliveries.
fn running_worker(worker: EmbeddedWorker, process_stop: watch::Receiver<bool>) -> Running<()> {
    Running::spawn(process_stop, move |stop| worker.run(stop))
}

/// The loop sending queued notifications (idle without `[[notify]]`).
fn running_notifications(
    sweeper: Option<Sweeper>,
    process_stop: watch::Receiver<bool>,
) -> Running<()> {
    Running::spawn(process_stop, move |stop| async move {
        match sweeper {
            Some(sweeper) => shared::notify::run_until(&sweeper, stop).await,
            None => stop.await,
        }
    })
}

/// How often the triggers file's modification time is looked at.
const FILE_POLL: Duration = Duration::from_secs(2);

/// Reasons to reload: SIGHUP, or the file's modification time or length changed.
fn reload_requests(config: PathBuf) -> mpsc::Receiver<&'static str> {
    let (requests, received) = mpsc::channel(4);
    #[cfg(unix)]
    {
        let requests = requests.clone();
        tokio::spawn(async move {
            let Ok(mut hangup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                tracing::warn!("cannot listen for SIGHUP; reload by editing the file");
                return;
            };
            while hangup.recv().await.is_some() {
                if requests.send("SIGHUP").await.is_err() {
                    break;
                }
            }
        });
    }
    tokio::spawn(async move {
        let stamp = |path: &Path| {
            std::fs::metadata(path)
                .ok()
                .map(|meta| (meta.modified().ok(), meta.len()))
        };
        let mut last = stamp(&config);
        loop {
            tokio::time::sleep(FILE_POLL).await;
            let now = stamp(&config);
            // A file that disappears (an editor's save-by-rename) is waited for, not read.
            if now.is_some() && now != last {
                last = now;
                if requests.send("file changed").await.is_err() {
                    break;
                }
            }
        }
    });
    received
}

/// Resolves once a stop was signalled (or the signal task is gone).
async fn wait_for_stop(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Resolves on SIGINT or SIGTERM; in-flight requests finish before the server returns.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!("SIGINT received, shutting down"),
        _ = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
