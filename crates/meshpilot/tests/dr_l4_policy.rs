//! DestinationRule policies that act on TCP connections, served by the real `meshpilot serve`
//! to a real Envoy 1.40 sidecar on loopback: `connectionPool.tcp.idleTimeout` closes a
//! connection left idle through the proxy (while one to a host without it stays open), and
//! `maxConnectionDuration` one kept busy (the idle timeout also on a sniffed port's TCP fallback);
//! `proxyProtocol` makes the proxy send a PROXY header that the backend reads, and `tunnel`
//! carries the connection inside an HTTP CONNECT to the rule's target.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use support::{Envoy, Meshpilot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// Starts a sidecar Envoy in `default` (label `app=client`, interception NONE).
async fn sidecar(server: &Meshpilot) -> (Envoy, IpAddr) {
    let ip = support::loopback_ip();
    let admin = support::admin_addr();
    let id = support::node_id(
        "sidecar",
        ip,
        &format!("client-{}", ip.to_string().replace('.', "-")),
        "default",
    );
    let mut args = support::bootstrap_args(&id, server.xds(), admin);
    args.labels = vec![("app".to_string(), "client".to_string())];
    (
        Envoy::start(support::render_bootstrap(&args), admin).await,
        ip,
    )
}

/// A TCP backend on `addr` that echoes what it reads until the peer closes.
async fn echo(addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}

/// A TCP service `name` on `port` whose pod listens on `ip`, as YAML.
fn service(name: &str, port: u16, ip: IpAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  selector: {{app: {name}}}\n  ports: [{{name: tcp, port: {port}, targetPort: {port}}}]\n---\n{}",
        support::pod_yaml(name, "default", &[("app", name)], ip, &[])
    )
}

/// `service` with its port unnamed, so that its protocol is sniffed (HTTP, else TCP).
fn sniffed_service(name: &str, port: u16, ip: IpAddr) -> String {
    service(name, port, ip).replace("name: tcp, ", "")
}

/// A connection through the proxy at `addr` that has carried one echoed message.
async fn echoed_connection(addr: SocketAddr) -> TcpStream {
    echoed_connection_of(addr, b"ping").await
}

/// A connection through the proxy at `addr` that has carried `message` back.
async fn echoed_connection_of(addr: SocketAddr, message: &[u8; 4]) -> TcpStream {
    support::eventually(&format!("echo through {addr}"), WAIT, || async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(message).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
            .await
            .map_err(|_| "no echo".to_string())?
            .map_err(|e| format!("read: {e}"))?;
        if &buf == message {
            Ok(s)
        } else {
            Err(format!("read {buf:?}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_idle_timeout_closes_idle_connections_through_the_proxy() {
    let _envoy_bin = support::require_envoy!();
    let (short_ip, long_ip) = (support::loopback_ip(), support::loopback_ip());
    let (brief_ip, sniffed_ip) = (support::loopback_ip(), support::loopback_ip());
    let _sniffed = echo(SocketAddr::new(sniffed_ip, 9103)).await;
    let _short = echo(SocketAddr::new(short_ip, 9100)).await;
    let _long = echo(SocketAddr::new(long_ip, 9101)).await;
    let _brief = echo(SocketAddr::new(brief_ip, 9102)).await;
    let manifests = [
        service("short", 9100, short_ip),
        service("long", 9101, long_ip),
        service("brief", 9102, brief_ip),
        sniffed_service("sniffed", 9103, sniffed_ip),
        r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: short, namespace: default}
spec:
  host: short
  trafficPolicy:
    connectionPool:
      tcp: {idleTimeout: 1s}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: brief, namespace: default}
spec:
  host: brief
  trafficPolicy:
    connectionPool:
      tcp: {maxConnectionDuration: 2s}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: sniffed, namespace: default}
spec:
  host: sniffed
  trafficPolicy:
    connectionPool:
      tcp: {idleTimeout: 1s}
"#
        .to_string(),
    ]
    .join("---\n");
    let dir = tempfile::TempDir::new().expect("temp dir");
    support::write_manifests(dir.path(), &[("l4.yaml", &manifests)]);
    let server = Meshpilot::start(&[dir.path()]).await;
    let (envoy, ip) = sidecar(&server).await;
    for port in [9100, 9101, 9102, 9103] {
        envoy.wait_for_listener(&format!("{ip}_{port}"), WAIT).await;
    }

    // With the rule: the proxy closes the connection about a second after the last byte.
    let mut short = echoed_connection(SocketAddr::new(ip, 9100)).await;
    let idle_since = Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), short.read(&mut buf)).await;
    let idle = idle_since.elapsed();
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the idle connection must be closed by the proxy, got {read:?}"
    );
    assert!(
        (Duration::from_millis(800)..Duration::from_secs(4)).contains(&idle),
        "closed after {idle:?}, want ~1s"
    );

    // A port of unknown protocol carrying non-HTTP bytes takes its TCP fallback, which has
    // the rule's idle timeout as a TCP port's proxy does.
    // (Bytes no HTTP request starts with, so that `http_inspector` decides at once.)
    let mut sniffed = echoed_connection_of(SocketAddr::new(ip, 9103), &[0, 1, 2, 3]).await;
    let idle_since = Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(5), sniffed.read(&mut buf)).await;
    let idle = idle_since.elapsed();
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the idle connection on the sniffed port must be closed by the proxy, got {read:?}"
    );
    assert!(
        (Duration::from_millis(800)..Duration::from_secs(4)).contains(&idle),
        "sniffed port closed after {idle:?}, want ~1s"
    );

    // Without it: Envoy's one hour, so the connection is still open and working.
    let mut long = echoed_connection(SocketAddr::new(ip, 9101)).await;
    let read = tokio::time::timeout(Duration::from_millis(2500), long.read(&mut buf)).await;
    assert!(read.is_err(), "no idle timeout: still open, got {read:?}");
    long.write_all(b"ping").await.expect("write after idle");
    let n = long.read(&mut buf).await.expect("echo after idle");
    assert_eq!(&buf[..n], b"ping");
    assert!(
        envoy
            .stat("tcp.outbound|9100||short.default.svc.cluster.local.idle_timeout")
            .await
            .unwrap_or(0)
            >= 1,
        "Envoy counts the close as its idle timeout"
    );

    // `maxConnectionDuration`: a connection kept busy is still closed after about 2 s.
    let mut brief = echoed_connection(SocketAddr::new(ip, 9102)).await;
    let opened = Instant::now();
    let closed_after = loop {
        if opened.elapsed() > Duration::from_secs(8) {
            panic!("a busy connection must be closed after the rule's 2 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let echoed = async {
            brief.write_all(b"ping").await?;
            brief.read(&mut buf).await
        };
        match tokio::time::timeout(Duration::from_secs(1), echoed).await {
            Ok(Ok(n)) if n > 0 => continue,
            _ => break opened.elapsed(),
        }
    };
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(5)).contains(&closed_after),
        "closed after {closed_after:?}, want ~2s"
    );
    assert!(
        envoy
            .stat("tcp.outbound|9102||brief.default.svc.cluster.local.max_downstream_connection_duration")
            .await
            .unwrap_or(0)
            >= 1,
        "Envoy counts the close as the connection's maximum duration"
    );
    envoy.assert_all_acked().await;
}

/// A backend on `addr` that reads a PROXY protocol header (V1 text or V2 binary, TCP over
/// IPv4) from each connection and answers `V1 SOURCE` or `V2 SOURCE`, or `none` without one.
async fn proxy_protocol_reader(addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 16];
                if conn.read_exact(&mut head[..12]).await.is_err() {
                    return;
                }
                let answer = if &head[..12] == V2_SIGNATURE {
                    // version/command, family/protocol, then the length of the addresses.
                    if conn.read_exact(&mut head[12..16]).await.is_err() {
                        return;
                    }
                    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
                    let mut addresses = vec![0u8; len];
                    if conn.read_exact(&mut addresses).await.is_err() || len < 4 {
                        return;
                    }
                    let src = std::net::Ipv4Addr::new(
                        addresses[0],
                        addresses[1],
                        addresses[2],
                        addresses[3],
                    );
                    format!("V2 {src}")
                } else if head.starts_with(b"PROXY ") {
                    let mut line = head[..12].to_vec();
                    let mut byte = [0u8; 1];
                    while !line.ends_with(b"\r\n") && line.len() < 108 {
                        if conn.read_exact(&mut byte).await.is_err() {
                            return;
                        }
                        line.push(byte[0]);
                    }
                    // PROXY TCP4 SOURCE DESTINATION SPORT DPORT
                    let text = String::from_utf8_lossy(&line).into_owned();
                    let src = text.split(' ').nth(2).unwrap_or("").to_string();
                    format!("V1 {src}")
                } else {
                    "none".to_string()
                };
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    })
}

/// What the backend behind the proxy at `addr` answers to a connection from `from`.
async fn read_from(from: IpAddr, addr: SocketAddr) -> Result<String, String> {
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(from, 0))
        .map_err(|e| format!("bind {from}: {e}"))?;
    let mut s = socket
        .connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    // Twelve bytes of data: what a backend reads first when no header came.
    s.write_all(b"hello, proxy")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_string(&mut text))
        .await
        .map_err(|_| "read timed out".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    Ok(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_header_reaches_the_backend_with_the_client_address() {
    let _envoy_bin = support::require_envoy!();
    let ips: Vec<IpAddr> = (0..3).map(|_| support::loopback_ip()).collect();
    let mut _backends = Vec::new();
    for (ip, port) in ips.iter().zip([9200, 9201, 9202]) {
        _backends.push(proxy_protocol_reader(SocketAddr::new(*ip, port)).await);
    }
    let rule = |host: &str, policy: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: {{name: {host}, namespace: default}}\n\
             spec:\n  host: {host}\n  trafficPolicy: {policy}\n"
        )
    };
    let manifests = [
        service("pp-one", 9200, ips[0]),
        service("pp-two", 9201, ips[1]),
        service("plain", 9202, ips[2]),
        rule("pp-one", "{proxyProtocol: {}}"),
        rule("pp-two", "{proxyProtocol: {version: V2}}"),
    ]
    .join("---\n");
    let dir = tempfile::TempDir::new().expect("temp dir");
    support::write_manifests(dir.path(), &[("l4.yaml", &manifests)]);
    let server = Meshpilot::start(&[dir.path()]).await;
    let (envoy, ip) = sidecar(&server).await;
    for port in [9200, 9201, 9202] {
        envoy.wait_for_listener(&format!("{ip}_{port}"), WAIT).await;
    }
    let client = support::loopback_ip();
    for (port, want) in [
        (9200, format!("V1 {client}")),
        (9201, format!("V2 {client}")),
        (9202, "none".to_string()),
    ] {
        let to = SocketAddr::new(ip, port);
        let got = support::eventually(&format!("PROXY header via {to}"), WAIT, || async {
            let got = read_from(client, to).await?;
            if got == want {
                Ok(got)
            } else {
                Err(format!("read {got:?}, want {want:?}"))
            }
        })
        .await;
        assert_eq!(got, want);
    }
    envoy.assert_all_acked().await;
}

/// An HTTP/1.1 tunnel endpoint on `addr`: reads the request head, answers 200 and then sends,
/// inside the tunnel, the request line it was asked with.
async fn tunnel_endpoint(addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
                    if conn.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let line = text.lines().next().unwrap_or("").to_string();
                let _ = conn
                    .write_all(format!("HTTP/1.1 200 OK\r\n\r\n{line}").as_bytes())
                    .await;
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_carries_tcp_in_http_connect_to_the_target() {
    let _envoy_bin = support::require_envoy!();
    let backend_ip = support::loopback_ip();
    let _backend = tunnel_endpoint(SocketAddr::new(backend_ip, 9300)).await;
    let manifests = [
        service("tunneled", 9300, backend_ip),
        r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tunneled, namespace: default}
spec:
  host: tunneled
  trafficPolicy:
    tunnel: {targetHost: 10.1.2.3, targetPort: 8443}
"#
        .to_string(),
    ]
    .join("---\n");
    let dir = tempfile::TempDir::new().expect("temp dir");
    support::write_manifests(dir.path(), &[("l4.yaml", &manifests)]);
    let server = Meshpilot::start(&[dir.path()]).await;
    let (envoy, ip) = sidecar(&server).await;
    envoy.wait_for_listener(&format!("{ip}_9300"), WAIT).await;
    let to = SocketAddr::new(ip, 9300);
    let want = "CONNECT 10.1.2.3:8443 HTTP/1.1";
    let got = support::eventually("tunnel through the sidecar", WAIT, || async {
        let mut s = TcpStream::connect(to)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut text = String::new();
        tokio::time::timeout(Duration::from_secs(3), s.read_to_string(&mut text))
            .await
            .map_err(|_| "read timed out".to_string())?
            .map_err(|e| format!("read: {e}"))?;
        if text == want {
            Ok(text)
        } else {
            Err(format!("read {text:?}"))
        }
    })
    .await;
    assert_eq!(got, want);
    envoy.assert_all_acked().await;
}
