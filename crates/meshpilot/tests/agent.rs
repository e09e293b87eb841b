//! `meshpilot agent` beside a stock Envoy, as pilot-agent sits beside an istio-proxy: Envoy's
//! ADS goes through the agent's Unix socket to the secure port (TLS, the pod's token added), and
//! the agent serves the workload certificate (`default`) and the mesh root (`ROOTCA`) over SDS,
//! renewed at half its life. A token the CA refuses (forged, expired, for another audience)
//! gets no certificate, and the Envoy behind that agent never becomes ready. A gateway behind
//! the agent serves its own workload certificate on an `ISTIO_MUTUAL` server and takes only
//! clients with a certificate of the mesh.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use hyper_util::rt::TokioIo;
use meshpilot_ca::testing::{TestIssuer, csr_for};
use prost::Message;
use support::mesh_ca::{ISSUER, KID, WebWithCa, create_certificate, has_web_cluster};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The agent process, stopped when the test ends (also on a failed assertion).
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn start_agent(dir: &Path, secure: std::net::SocketAddr, root: &Path, token: &Path) -> Agent {
    start_agent_as(dir, secure, root, token, ("default", "client"))
}

/// An agent for the service account `(namespace, name)`.
fn start_agent_as(
    dir: &Path,
    secure: std::net::SocketAddr,
    root: &Path,
    token: &Path,
    (namespace, service_account): (&str, &str),
) -> Agent {
    let log = dir.join("agent.log");
    let out = std::fs::File::create(&log).expect("agent log");
    let err = out.try_clone().expect("log handle");
    let child = Command::new(env!("CARGO_BIN_EXE_meshpilot"))
        .arg("agent")
        .args(["--ca-address", &secure.to_string()])
        .arg("--root-cert")
        .arg(root)
        .arg("--token-file")
        .arg(token)
        .args([
            "--namespace",
            namespace,
            "--service-account",
            service_account,
        ])
        .args(["--cert-ttl", "4"])
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start meshpilot agent");
    Agent { child, log }
}

/// A SotW SDS stream to the agent's socket asking for `name`.
async fn sds_stream(socket: PathBuf, name: &str) -> tonic::Streaming<DiscoveryResponse> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "SDS socket {socket:?} never appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let channel = tonic::transport::Endpoint::from_static("http://agent")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                tokio::net::UnixStream::connect(socket)
                    .await
                    .map(TokioIo::new)
            }
        }))
        .await
        .expect("connect to the SDS socket");
    let mut client = SecretDiscoveryServiceClient::new(channel);
    let request = DiscoveryRequest {
        resource_names: vec![name.to_string()],
        type_url: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            .to_string(),
        ..DiscoveryRequest::default()
    };
    // The request stream stays open (Envoy's does), so renewals can be pushed on it.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(request).await.expect("queue request");
    std::mem::forget(tx);
    client
        .stream_secrets(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("StreamSecrets")
        .into_inner()
}

async fn next_secret(stream: &mut tonic::Streaming<DiscoveryResponse>) -> (String, Secret) {
    let resp = tokio::time::timeout(Duration::from_secs(15), stream.message())
        .await
        .expect("an SDS response in time")
        .expect("SDS stream healthy")
        .expect("SDS stream open");
    assert_eq!(resp.resources.len(), 1, "{resp:?}");
    let secret = Secret::decode(resp.resources[0].value.as_slice()).expect("a Secret");
    (resp.version_info, secret)
}

fn inline(ds: &Option<envoy_types::pb::envoy::config::core::v3::DataSource>) -> String {
    use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
    match ds.as_ref().and_then(|d| d.specifier.as_ref()) {
        Some(Specifier::InlineBytes(b)) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("expected inline bytes, got {other:?}"),
    }
}

fn leaf_spiffe(chain_pem: &str) -> Vec<String> {
    let body: String = chain_pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = support::base64_decode(&body);
    let (_, cert) = X509Certificate::from_der(&der).expect("certificate");
    cert.subject_alternative_name()
        .expect("SAN")
        .map(|e| {
            e.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(u.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_envoy_behind_the_agent_gets_config_and_a_renewed_workload_certificate() {
    let _envoy_bin = support::require_envoy!();
    let mesh = WebWithCa::start().await;
    let secure = mesh.secure;
    let token = mesh.token_file("istio-token", "default", "client");
    let pod = mesh.dir.path().join("pod");
    std::fs::create_dir(&pod).expect("pod dir");
    let root = mesh.root_cert();
    let agent = start_agent(&pod, secure, &root, &token);

    // Envoy knows only the agent's sockets (relative paths, as Istio's bootstrap has them).
    let ip = support::loopback_ip();
    let admin = support::admin_addr();
    let node = support::node_id("sidecar", ip, "client", "default");
    let mut args = support::bootstrap_args(&node, secure, admin);
    args.via_agent = true;
    args.agent_xds_socket = pod.join(meshpilot_agent::XDS_SOCKET);
    args.agent_sds_socket = pod.join(meshpilot_agent::SDS_SOCKET);
    let envoy = support::Envoy::start(support::render_bootstrap(&args), admin).await;
    let dump = envoy
        .wait_for_dump(
            "web's cluster through the agent",
            Duration::from_secs(15),
            has_web_cluster,
        )
        .await;
    assert!(support::dump::error_states(&dump).is_empty());
    envoy.assert_all_acked().await;

    // SDS: the workload certificate names the pod's service account; the root is the mesh's.
    let sds = pod.join(meshpilot_agent::SDS_SOCKET);
    let mut default = sds_stream(sds.clone(), "default").await;
    let (v1, secret) = next_secret(&mut default).await;
    assert_eq!(secret.name, "default");
    let Some(secret::Type::TlsCertificate(cert)) = &secret.r#type else {
        panic!("default is a TLS certificate: {secret:?}");
    };
    assert_eq!(
        leaf_spiffe(&inline(&cert.certificate_chain)),
        vec!["spiffe://cluster.local/ns/default/sa/client".to_string()]
    );
    assert!(inline(&cert.private_key).contains("PRIVATE KEY"));
    let mut rootca = sds_stream(sds, "ROOTCA").await;
    let (_, secret) = next_secret(&mut rootca).await;
    let Some(secret::Type::ValidationContext(vc)) = &secret.r#type else {
        panic!("ROOTCA is a validation context: {secret:?}");
    };
    assert_eq!(
        inline(&vc.trusted_ca),
        std::fs::read_to_string(&root).expect("root")
    );
    // The 4 s certificate is renewed at 2 s and pushed on the open stream.
    let (v2, _) = next_secret(&mut default).await;
    assert_ne!(v1, v2, "a renewed certificate is a new version");
    assert!(
        agent.logs().matches("workload certificate issued").count() >= 2,
        "{}",
        agent.logs()
    );
}

/// Seconds since the epoch, shifted by `delta`.
fn epoch_plus(delta: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    i64::try_from(now).unwrap_or(i64::MAX) + delta
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_gets_no_certificate_and_its_envoy_never_becomes_ready() {
    let _envoy_bin = support::require_envoy!();
    let mesh = WebWithCa::start().await;
    let sub = "system:serviceaccount:default:client";
    // Each token is refused for one reason, named in the CA's answer.
    let refused = [
        (
            "forged",
            TestIssuer::new(KID).service_account_token(KID, ISSUER, "default", "client"),
            "invalidsignature",
        ),
        (
            "expired",
            mesh.issuer.token(
                KID,
                serde_json::json!({"sub": sub, "aud": ["istio-ca"], "iss": ISSUER,
                                   "exp": epoch_plus(-3600)}),
            ),
            "expiredsignature",
        ),
        (
            "wrong-audience",
            mesh.issuer.token(
                KID,
                serde_json::json!({"sub": sub, "aud": ["kubernetes.default.svc"], "iss": ISSUER,
                                   "exp": epoch_plus(600)}),
            ),
            "invalidaudience",
        ),
    ];
    let (_key, csr) = csr_for("spiffe://cluster.local/ns/default/sa/client");
    let mut sidecars = Vec::new();
    for (name, token, reason) in &refused {
        let answer = create_certificate(mesh.server.xds(), Some(token), &csr, 3600).await;
        let status = answer.expect_err("a refused token gets no certificate");
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{name}: {status:?}"
        );
        let message = status.message().to_lowercase();
        assert!(
            message.contains("verification") && message.contains(reason),
            "{name}: {message}"
        );

        // The same token behind an agent with a stock Envoy.
        let pod = mesh.dir.path().join(format!("pod-{name}"));
        std::fs::create_dir(&pod).expect("pod dir");
        let token_file = pod.join("istio-token");
        std::fs::write(&token_file, token).expect("token");
        let agent = start_agent(&pod, mesh.secure, &mesh.root_cert(), &token_file);
        let ip = support::loopback_ip();
        let admin = support::admin_addr();
        let node = support::node_id("sidecar", ip, "client", "default");
        let mut args = support::bootstrap_args(&node, mesh.secure, admin);
        args.via_agent = true;
        args.agent_xds_socket = pod.join(meshpilot_agent::XDS_SOCKET);
        args.agent_sds_socket = pod.join(meshpilot_agent::SDS_SOCKET);
        let envoy = support::Envoy::spawn(support::render_bootstrap(&args), admin);
        sidecars.push((*name, pod, agent, envoy));
    }

    // Long enough for the agents' first attempts and retries (1 s, then 2 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (name, pod, agent, envoy) in &sidecars {
        let ready = envoy.admin_get("/ready").await;
        assert!(
            !matches!(&ready, Ok(r) if r.status == 200),
            "{name}: Envoy became ready without a certificate: {ready:?}"
        );
        assert!(
            agent
                .logs()
                .contains("failed to get a workload certificate")
                && !agent.logs().contains("workload certificate issued"),
            "{name}: {}",
            agent.logs()
        );
        let dump = envoy.config_dump().await;
        assert!(!has_web_cluster(&dump), "{name}: Envoy got configuration");
        // The agent's SDS has no certificate to send.
        let mut default = sds_stream(pod.join(meshpilot_agent::SDS_SOCKET), "default").await;
        let secret = tokio::time::timeout(Duration::from_secs(2), default.message()).await;
        assert!(
            !matches!(&secret, Ok(Ok(Some(_)))),
            "{name}: SDS sent a secret: {secret:?}"
        );
    }
    let metrics = mesh
        .server
        .debug_get("/metrics")
        .await
        .expect("metrics")
        .body;
    let failures = metrics
        .lines()
        .find_map(|l| l.strip_prefix("citadel_server_authentication_failure_count "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        failures >= 6,
        "three direct refusals and three agents': {failures}"
    );
}

/// A Gateway server with `tls.mode: ISTIO_MUTUAL` on a stock Envoy behind the agent: it
/// presents the gateway's workload certificate and routes a client holding a certificate the
/// mesh CA issued; a client without one never gets an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_istio_mutual_gateway_server_takes_only_mesh_clients() {
    use support::mesh_client::{Identity, mtls_get};
    let _envoy_bin = support::require_envoy!();
    let mesh = WebWithCa::start().await;
    let echo_ip = support::loopback_ip();
    let echo = support::Backend::start(echo_ip, 8080, "echo");
    support::write_manifests(
        &mesh.dir.path().join("config"),
        &[(
            "gateway.yaml",
            &format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: default}}\n\
                 spec:\n  selector: {{app: echo}}\n  ports: [{{name: http, port: 8080}}]\n---\n{}\
                 ---\napiVersion: networking.istio.io/v1\nkind: Gateway\n\
                 metadata: {{name: gw, namespace: istio-system}}\nspec:\n  \
                 selector: {{istio: ingressgateway}}\n  servers:\n  \
                 - port: {{number: 443, name: mesh, protocol: HTTPS}}\n    hosts: [a.example.com]\n    \
                 tls: {{mode: ISTIO_MUTUAL}}\n---\n\
                 apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
                 metadata: {{name: echo, namespace: default}}\nspec:\n  hosts: [a.example.com]\n  \
                 gateways: [istio-system/gw]\n  http:\n  \
                 - route: [{{destination: {{host: echo, port: {{number: 8080}}}}}}]\n",
                support::pod_yaml("echo-1", "default", &[("app", "echo")], echo_ip, &[])
            ),
        )],
    );

    let pod = mesh.dir.path().join("gateway-pod");
    std::fs::create_dir(&pod).expect("pod dir");
    let token = mesh.token_file("gateway-token", "istio-system", "ingress");
    let _agent = start_agent_as(
        &pod,
        mesh.secure,
        &mesh.root_cert(),
        &token,
        ("istio-system", "ingress"),
    );
    let ip = support::loopback_ip();
    let admin = support::admin_addr();
    let node = support::node_id("router", ip, "ingress", "istio-system");
    let mut args = support::bootstrap_args(&node, mesh.secure, admin);
    args.labels = [("istio".to_string(), "ingressgateway".to_string())]
        .into_iter()
        .collect();
    args.via_agent = true;
    args.agent_xds_socket = pod.join(meshpilot_agent::XDS_SOCKET);
    args.agent_sds_socket = pod.join(meshpilot_agent::SDS_SOCKET);
    let gateway = support::Envoy::start(support::render_bootstrap(&args), admin).await;
    gateway
        .wait_for_listener(&format!("{ip}_443"), Duration::from_secs(15))
        .await;

    // A client workload's certificate, from the mesh CA with its own token.
    let (key, csr) = csr_for("spiffe://cluster.local/ns/default/sa/client");
    let client_token = mesh
        .issuer
        .service_account_token(KID, ISSUER, "default", "client");
    let issued = create_certificate(mesh.server.xds(), Some(&client_token), &csr, 3600)
        .await
        .expect("a client certificate");
    let chain_pem = issued.cert_chain.concat();
    let key_pem = key.serialize_pem();
    let client = Identity {
        chain_pem: &chain_pem,
        key_pem: &key_pem,
    };
    let addr = std::net::SocketAddr::new(ip, 443);
    let answer = support::eventually(
        "a mesh client through the gateway",
        Duration::from_secs(15),
        || async {
            match mtls_get(addr, "a.example.com", Some(&client)).await {
                Ok(a) if a.response.starts_with("HTTP/1.1 200") => Ok(a),
                Ok(a) => Err(a.response),
                Err(e) => Err(e),
            }
        },
    )
    .await;
    assert!(
        answer.response.contains("x-backend: echo"),
        "{}",
        answer.response
    );
    assert_eq!(
        answer.server_sans,
        ["spiffe://cluster.local/ns/istio-system/sa/ingress"],
        "the gateway presents its own workload certificate"
    );
    assert!(echo.requests() >= 1);

    // Without a client certificate: no answer (the handshake or the first read fails).
    let refused = mtls_get(addr, "a.example.com", None).await;
    assert!(
        !matches!(&refused, Ok(a) if a.response.starts_with("HTTP/1.1")),
        "a client without a certificate got an answer: {:?}",
        refused.as_ref().map(|a| &a.response)
    );
    gateway.assert_all_acked().await;
}
