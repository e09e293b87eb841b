//! Wiring: binds the listeners, starts the task set (file source, Kubernetes source, push engine,
//! xDS server, debug server) and owns the shutdown order: stop accepting, end streams, stop the
//! sources.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{Instrument, info, info_span, warn};

use crate::config::ServeConfig;
use meshpilot_push::{Debounce, PushEngine};
use meshpilot_snapshot::SnapshotCache;
use meshpilot_source::{SourceId, files, kube};
use meshpilot_xds::{Connections, XdsMetrics};
use tokio_util::sync::CancellationToken as Shutdown;

/// A running control plane.
pub struct Server {
    pub xds_addr: SocketAddr,
    pub debug_addr: SocketAddr,
    /// The secure (TLS) xDS port, when the CA runs.
    pub secure_xds_addr: Option<SocketAddr>,
    shutdown: Shutdown,
    tasks: JoinSet<()>,
}

impl Server {
    /// Binds both addresses and starts every task. Returns once the sockets are bound (the
    /// first snapshot may still be building: `/ready` says when it is).
    pub async fn start(cfg: ServeConfig) -> anyhow::Result<Server> {
        // Bound with a backlog sized for a storm of reconnecting proxies (--xds-listen-backlog).
        let xds_listener = meshpilot_xds::bind(cfg.xds_address, cfg.xds_limits.listen_backlog)
            .with_context(|| format!("bind xDS address {}", cfg.xds_address))?;
        let debug_listener = TcpListener::bind(cfg.debug_address)
            .await
            .with_context(|| format!("bind debug address {}", cfg.debug_address))?;
        let xds_addr = xds_listener.local_addr()?;
        let debug_addr = debug_listener.local_addr()?;
        // Built before anything starts so a missing kubeconfig fails at once; makes no request.
        let kube_client = match &cfg.kube {
            Some(_) => Some(kube::client().await.context("--kube")?),
            None => None,
        };

        // The CA, when configured, is served on both xDS ports; its keys load before anything
        // starts.
        let ca = cfg
            .ca
            .as_ref()
            .map(|settings| crate::ca::start(settings, kube_client.as_ref()))
            .transpose()?;
        let secure_listener = match &cfg.ca {
            Some(settings) => Some(
                meshpilot_xds::bind(settings.secure_address, cfg.xds_limits.listen_backlog)
                    .with_context(|| {
                        format!("bind secure xDS address {}", settings.secure_address)
                    })?,
            ),
            None => None,
        };
        let secure_xds_addr = secure_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let also = ca.as_ref().map(|c| c.routes.clone()).unwrap_or_default();

        // Nothing is served until every expected source has synced once.
        let mut expected = BTreeSet::new();
        if !cfg.config_dirs.is_empty() {
            expected.insert(SourceId::Files);
        }
        if let Some(kube_cfg) = &cfg.kube {
            expected.extend(kube::expected_sources(kube_cfg));
        }

        let shutdown = Shutdown::new();
        let (cache, builds) = SnapshotCache::new();
        let connections = Arc::new(Connections::default());
        let (events_tx, events_rx) = mpsc::channel(64);
        let (engine, serving) = PushEngine::new(
            cache.clone(),
            cfg.domain.clone(),
            Debounce {
                quiet: cfg.debounce,
                max: cfg.debounce_max,
                leading: cfg.debounce_leading,
            },
            expected,
        );
        let mesh = match (&cfg.mesh, &kube_client) {
            (Some(mesh), _) => Some(mesh.clone()),
            // Without --mesh-config, istiod's in-cluster mesh configuration, read once here.
            (None, Some(client)) => kube::mesh_config(client).await.context("--kube")?,
            (None, None) => None,
        };
        for warning in mesh.iter().flat_map(|m| m.unread_warnings()) {
            warn!("{warning}");
        }
        let (outbound_mode, export_defaults) =
            crate::config::mesh_settings(cfg.outbound_mode, mesh.as_ref());
        let engine = engine
            .with_outbound_mode(outbound_mode)
            .with_export_defaults(export_defaults);

        let mut tasks = JoinSet::new();
        // One debounce, the push engine's: the file watcher reads a file when its save ends,
        // and only the steps of a save wait for quiet (shorter still when `--debounce-ms` is),
        // so an isolated edit is recompiled at once (`--debounce-ms` after it with
        // `--debounce-leading=false`).
        let file_source = (!cfg.config_dirs.is_empty()).then(|| {
            files::run_with_settle(
                cfg.config_dirs.clone(),
                cfg.debounce.min(files::SETTLE),
                cfg.input_limits,
                if cfg.serve_partial_config {
                    files::FirstSync::AtOnce
                } else {
                    files::FirstSync::WhenClean
                },
                events_tx.clone(),
                shutdown.clone(),
            )
        });
        let engine = engine.run(events_rx, builds, shutdown.clone());
        tasks.spawn(spawn_control(async move {
            match file_source {
                Some(files) => {
                    tokio::join!(engine, files);
                }
                None => engine.await,
            }
        })?);
        if let (Some(client), Some(ca)) = (&kube_client, &ca) {
            tasks.spawn(crate::ca::distribute_root(
                client.clone(),
                ca.ca.root_pem().to_string(),
                shutdown.clone(),
            ));
        }
        if let (Some(client), Some(kube_cfg)) = (kube_client, cfg.kube.clone()) {
            tasks.spawn(kube::run(client, kube_cfg, events_tx, shutdown.clone()));
        }
        {
            let (cache, connections, shutdown) =
                (cache.clone(), connections.clone(), shutdown.clone());
            let xds_limits = cfg.xds_limits;
            let plaintext_secrets = cfg.plaintext_secrets;
            tasks.spawn(
                async move {
                    // The process-wide metrics, resolved for the xDS server once.
                    let metrics = Arc::new(XdsMetrics::new(meshpilot_telemetry::metrics()));
                    if let Err(e) = meshpilot_xds::serve(
                        xds_listener,
                        meshpilot_xds::PortSettings {
                            secure: None,
                            limits: xds_limits,
                            plaintext_secrets,
                        },
                        cache,
                        connections,
                        metrics,
                        also,
                        shutdown,
                    )
                    .await
                    {
                        warn!(error = %e, "xDS server stopped");
                    }
                }
                .instrument(info_span!("xds")),
            );
        }
        if let (Some(listener), Some(ca), Some(settings)) = (secure_listener, ca, &cfg.ca) {
            let secure = crate::ca::secure_port(settings, &ca, shutdown.clone())?;
            let (cache, connections, shutdown) =
                (cache.clone(), connections.clone(), shutdown.clone());
            let xds_limits = cfg.xds_limits;
            tasks.spawn(
                async move {
                    let metrics = Arc::new(XdsMetrics::new(meshpilot_telemetry::metrics()));
                    if let Err(e) = meshpilot_xds::serve(
                        listener,
                        meshpilot_xds::PortSettings {
                            secure: Some(secure),
                            limits: xds_limits,
                            // Every stream here is authenticated (the setting is for others).
                            plaintext_secrets: false,
                        },
                        cache,
                        connections,
                        metrics,
                        // The secure port also answers the validating webhook (TLS, as the
                        // API server requires).
                        tonic::service::Routes::from(
                            ca.routes.into_axum_router().merge(crate::webhook::router()),
                        ),
                        shutdown,
                    )
                    .await
                    {
                        warn!(error = %e, "secure xDS server stopped");
                    }
                }
                .instrument(info_span!("xds_secure")),
            );
        }
        {
            let state = meshpilot_debug::State {
                cache,
                connections,
                serving,
                token: cfg.debug_token.as_deref().map(Arc::from),
            };
            let shutdown = shutdown.clone();
            tasks.spawn(
                async move {
                    if let Err(e) = meshpilot_debug::serve(debug_listener, state, shutdown).await {
                        warn!(error = %e, "debug server stopped");
                    }
                }
                .instrument(info_span!("debug")),
            );
        }
        info!(%xds_addr, %debug_addr, secure_xds_addr = ?secure_xds_addr, dirs = ?cfg.config_dirs, kube = cfg.kube.is_some(), "meshpilot serving");
        Ok(Server {
            xds_addr,
            debug_addr,
            secure_xds_addr,
            shutdown,
            tasks,
        })
    }

    /// Signals every task and waits for them to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Starts `work` — the push engine and the file source — on a thread of its own, with a
/// single-threaded runtime; the returned future completes when the work does.
///
/// The proxies' connections share the main runtime's queues. With a thousand proxies taking a
/// push, a task woken there waits behind all of theirs, and an edit takes several such steps
/// before its snapshot goes out (the watcher's signal, the settle timer, the file read, the
/// engine's event and its debounce timer): with a thousand proxies taking 100 endpoint changes
/// a second, a change waited 33–60 ms (p50) from its write to the first proxy's ACK. On its own
/// thread, the operating system runs it when it wakes: 13–17 ms.
fn spawn_control(
    work: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<impl Future<Output = ()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the control thread's runtime")?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("meshpilot-control".into())
        .spawn(move || {
            runtime.block_on(work);
            let _ = done_tx.send(());
        })
        .context("start the control thread")?;
    // Resolves when the work ends (or the thread panicked and dropped the sender).
    Ok(async move {
        let _ = done_rx.await;
    })
}

/// Runs the control plane until SIGINT or SIGTERM.
pub async fn run(cfg: ServeConfig) -> anyhow::Result<()> {
    let server = Server::start(cfg).await?;
    wait_for_signal().await;
    info!("shutting down");
    server.stop().await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
