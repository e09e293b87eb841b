//! `meshpilot-peer`: serves a generated mesh with nebucloud-xds (SotW and Delta ADS from its
//! per-node snapshot cache), so the load tool can measure a peer beside meshpilot.
//!
//! The resources are the very bytes meshpilot compiles for the mesh (clusters, endpoints, and
//! the listeners/routes of the load tool's proxy class), wrapped as nebucloud `AnyResource`s.
//! nebucloud keys snapshots by node id, so one snapshot is set for each node id the load tool
//! will use (`meshpilot_load::node_id`), all sharing the same resource `Arc`s.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use meshpilot_model::Proxy;
use meshpilot_model::proxy::MetadataValue;
use meshpilot_snapshot::{Resource as MpResource, XdsType};
use nebucloud_xds::prelude::*;

#[derive(Debug, Parser)]
struct Args {
    /// The generated mesh (as written by `meshpilot-load gen`).
    #[arg(long)]
    mesh_dir: PathBuf,
    /// Node ids to serve: those of load-tool proxies 0..N.
    #[arg(long)]
    proxies: usize,
    /// The proxies' namespace (as `meshpilot-load run --namespace`).
    #[arg(long, default_value = "ns-0")]
    namespace: String,
    #[arg(long, default_value = "127.0.0.1:18000")]
    address: SocketAddr,
    /// Serve only clusters and endpoints (the peer figures were measured so).
    #[arg(long)]
    cds_eds_only: bool,
}

/// One pre-encoded resource. (nebucloud's own `AnyResource` is not exported, so this is the
/// same thing: `encode` hands out a copy of the `Any`, as nebucloud does for every send.)
#[derive(Debug)]
struct Encoded {
    type_url: &'static str,
    name: String,
    any: prost_types::Any,
}

impl Resource for Encoded {
    fn type_url(&self) -> &str {
        self.type_url
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn encode(&self) -> Result<prost_types::Any, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.any.clone())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn any(t: XdsType, r: &MpResource) -> BoxResource {
    Arc::new(Encoded {
        type_url: t.type_url(),
        name: r.name.to_string(),
        any: prost_types::Any {
            type_url: t.type_url().to_string(),
            value: r.body.to_vec(),
        },
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (objects, errors) =
        meshpilot_source::files::load_dirs(std::slice::from_ref(&args.mesh_dir));
    anyhow::ensure!(errors.is_empty(), "mesh has errors: {errors:?}");
    let mut index = meshpilot_index::Index::new();
    index.reset(meshpilot_model::SourceId::Files, objects);
    let view = index.build_view("cluster.local", None);
    let shared = meshpilot_compile::compile_shared(&view).context("compile the mesh")?;
    // The class of the load tool's proxies (class 0: `--classes 1`).
    let meta: BTreeMap<String, MetadataValue> = [
        (
            "NAMESPACE".to_string(),
            MetadataValue::String(args.namespace.clone()),
        ),
        (
            "LABELS".to_string(),
            MetadataValue::Map(
                [
                    ("app".to_string(), "load".to_string()),
                    ("load-class".to_string(), "c0".to_string()),
                ]
                .into(),
            ),
        ),
    ]
    .into();
    let proxy =
        Proxy::parse(&meshpilot_load::node_id(0, &args.namespace, meshpilot_load::Interception::Redirect), &meta).context("node id")?;
    let class = meshpilot_compile::compile_class(&view, &proxy);

    let mut builder = Snapshot::builder()
        .version("v1")
        .resources(
            TypeUrl::new(XdsType::Cluster.type_url()),
            shared
                .clusters
                .items
                .values()
                .map(|r| any(XdsType::Cluster, r)),
        )
        .resources(
            TypeUrl::new(XdsType::Endpoint.type_url()),
            shared
                .endpoints
                .items
                .values()
                .map(|r| any(XdsType::Endpoint, r)),
        );
    if !args.cds_eds_only {
        builder = builder
            .resources(
                TypeUrl::new(XdsType::Listener.type_url()),
                class
                    .listeners
                    .items
                    .values()
                    .map(|r| any(XdsType::Listener, r)),
            )
            .resources(
                TypeUrl::new(XdsType::Route.type_url()),
                class.routes.items.values().map(|r| any(XdsType::Route, r)),
            );
    }
    let snapshot = builder.build();
    let cache = Arc::new(ShardedCache::new());
    for i in 0..args.proxies {
        let id = meshpilot_load::node_id(i, &args.namespace, meshpilot_load::Interception::Redirect);
        cache.set_snapshot(NodeHash::from_id(&id), snapshot.clone());
    }
    eprintln!(
        "peer: {} clusters, {} endpoints, {} listeners, {} routes for {} node ids on {}",
        shared.clusters.items.len(),
        shared.endpoints.items.len(),
        class.listeners.items.len(),
        class.routes.items.len(),
        args.proxies,
        args.address
    );
    let server = XdsServer::builder()
        .cache(cache)
        .enable_sotw()
        .enable_delta()
        .build()
        .context("build the nebucloud server")?;
    server.serve(args.address).await.context("serve")?;
    Ok(())
}
