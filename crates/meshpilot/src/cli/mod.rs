//! The istioctl-like subcommands: `proxy-status` and `proxy-config`, clients of a running
//! server's debug HTTP (`/debug/syncz`, `/debug/diagnosticz`, `/debug/config_dump`) that print
//! readable tables.
//!
//! * this file — the HTTP GET, `proxy-status`, and the table printer.
//! * [`tables`] — `proxy-config`'s clusters / listeners / routes / endpoints tables.

pub mod tables;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::config::{ConfigKind, OutputFormat, ProxyConfigArgs, ProxyStatusArgs};
use meshpilot_model::Diagnostic;

/// Longest wait for the server's answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// GETs `path` from the debug server and parses the JSON body; a non-200 answer is an error
/// carrying the server's message.
pub async fn get_json(addr: SocketAddr, path: &str) -> anyhow::Result<Value> {
    let fetch = async {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to the debug server at {addr} (is `meshpilot serve` running there? see --debug-address)"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        // Ends when the response is read and `sender` dropped, or the server closes.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .context("build request")?;
        let resp = sender.send_request(req).await.context("send request")?;
        let status = resp.status();
        let body = resp.into_body().collect().await.context("read body")?;
        anyhow::Ok((status, body.to_bytes()))
    };
    let (status, body) = tokio::time::timeout(TIMEOUT, fetch)
        .await
        .with_context(|| format!("GET {path} from {addr}: no answer within {TIMEOUT:?}"))??;
    let value: Value = serde_json::from_slice(&body)
        .with_context(|| format!("GET {path}: HTTP {status}, body is not JSON"))?;
    if !status.is_success() {
        let msg = value["error"].as_str().unwrap_or("no message");
        bail!("GET {path}: HTTP {status}: {msg}");
    }
    Ok(value)
}

/// Formats rows as columns separated by three spaces (like istioctl's tabwriter output).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(c);
                let pad = widths[i].saturating_sub(c.chars().count()) + 3;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The text `proxy-status` prints for a `/debug/syncz` answer.
pub fn format_proxy_status(syncz: &Value) -> String {
    let proxies = syncz.as_array().map(Vec::as_slice).unwrap_or_default();
    if proxies.is_empty() {
        return "no proxies connected\n".to_string();
    }
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for p in proxies {
        let node = p["node_id"].as_str().unwrap_or("?");
        let mut row = vec![
            node.to_string(),
            p["type"].as_str().unwrap_or("?").to_lowercase(),
            match p["variant"].as_str() {
                Some("Delta") => "Delta".to_string(),
                _ => "SotW".to_string(),
            },
        ];
        for t in ["Cluster", "Listener", "Endpoint", "Route"] {
            let st = &p["types"][t];
            let word = match st["status"].as_str() {
                Some("NOT_SENT") | None => "NOT SENT",
                Some(s) => s,
            };
            row.push(word.to_string());
            if word == "ERROR"
                && let Some(n) = st.get("last_nack")
            {
                let resources: Vec<String> = n["resources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        let sources: Vec<String> = r["sources"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|k| {
                                format!(
                                    "{} {}/{}",
                                    k["kind"].as_str().unwrap_or("?"),
                                    k["namespace"].as_str().unwrap_or(""),
                                    k["name"].as_str().unwrap_or("?")
                                )
                            })
                            .collect();
                        format!(
                            "{} (from {})",
                            r["name"].as_str().unwrap_or("?"),
                            if sources.is_empty() {
                                "no input object".to_string()
                            } else {
                                sources.join(", ")
                            }
                        )
                    })
                    .collect();
                errors.push(format!(
                    "{node} {}: rejected {}: {}",
                    short(t),
                    if resources.is_empty() {
                        "the last response".to_string()
                    } else {
                        resources.join("; ")
                    },
                    n["message"].as_str().unwrap_or("")
                ));
            }
        }
        row.push(p["address"].as_str().unwrap_or("-").to_string());
        rows.push(row);
    }
    let mut out = table(
        &["NAME", "TYPE", "XDS", "CDS", "LDS", "EDS", "RDS", "ADDRESS"],
        &rows,
    );
    if !errors.is_empty() {
        out.push('\n');
        for e in errors {
            out.push_str(&e);
            out.push('\n');
        }
    }
    out
}

fn short(t: &str) -> &'static str {
    match t {
        "Cluster" => "cds",
        "Listener" => "lds",
        "Endpoint" => "eds",
        _ => "rds",
    }
}

/// The `DIAGNOSTICS` section `proxy-status` prints below the table for a
/// `/debug/diagnosticz` answer: one line per diagnostic (severity, stage, then where and what);
/// nothing when there are none.
pub fn format_diagnostics(diagnosticz: &Value) -> String {
    let diagnostics: Vec<Diagnostic> = diagnosticz["diagnostics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| serde_json::from_value(d.clone()).ok())
        .collect();
    if diagnostics.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = diagnostics
        .iter()
        .map(|d| {
            let word = |v: serde_json::Result<Value>| {
                v.ok()
                    .and_then(|v| v.as_str().map(str::to_uppercase))
                    .unwrap_or_default()
            };
            vec![
                word(serde_json::to_value(d.severity)),
                word(serde_json::to_value(d.stage)),
                d.to_string(),
            ]
        })
        .collect();
    format!("\n{}", table(&["SEVERITY", "STAGE", "DIAGNOSTIC"], &rows))
}

/// `meshpilot proxy-status`: the sync table, then the control plane's diagnostics.
pub async fn proxy_status(args: &ProxyStatusArgs) -> anyhow::Result<String> {
    let syncz = get_json(args.target.debug_address, "/debug/syncz").await?;
    let mut out = format_proxy_status(&syncz);
    // A server without the endpoint (an older version) has nothing more to show.
    if let Ok(diagnosticz) = get_json(args.target.debug_address, "/debug/diagnosticz").await {
        out.push_str(&format_diagnostics(&diagnosticz));
    }
    Ok(out)
}

/// `meshpilot proxy-config`.
pub async fn proxy_config(args: &ProxyConfigArgs) -> anyhow::Result<String> {
    let t = match args.kind {
        ConfigKind::Clusters => "cds",
        ConfigKind::Listeners => "lds",
        ConfigKind::Routes => "rds",
        ConfigKind::Endpoints => "eds",
    };
    let path = format!(
        "/debug/config_dump?proxyID={}&types={t}",
        encode_query(&args.proxy_id)
    );
    let dump = get_json(args.target.debug_address, &path).await?;
    Ok(match args.output {
        OutputFormat::Json => serde_json::to_string_pretty(&dump).context("encode JSON")? + "\n",
        OutputFormat::Table => tables::render(args.kind, &dump),
    })
}

/// Percent-encodes a query value (node ids carry `~`, which is safe, and may carry others).
fn encode_query(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn proxy_status_prints_istio_words_and_the_nack_source() {
        let syncz = json!([{
            "node_id": "router~127.0.0.9~gw.istio-system~istio-system.svc.cluster.local",
            "type": "Router",
            "variant": "Sotw",
            "address": "127.0.0.9:40000",
            "types": {
                "Cluster": {"status": "SYNCED"},
                "Endpoint": {"status": "STALE"},
                "Listener": {"status": "SYNCED"},
                "Route": {"status": "ERROR", "last_nack": {
                    "message": "bad regex",
                    "resources": [{"name": "http.80", "sources": [
                        {"kind": "VirtualService", "namespace": "default", "name": "bad"}]}]
                }}
            }
        }]);
        let text = format_proxy_status(&syncz);
        let mut lines = text.lines();
        let header = lines.next().expect("header");
        assert!(header.starts_with("NAME"), "{text}");
        let row: Vec<&str> = lines.next().expect("row").split_whitespace().collect();
        assert_eq!(
            row[1..7],
            ["router", "SotW", "SYNCED", "SYNCED", "STALE", "ERROR"]
        );
        assert!(
            text.contains("rds: rejected http.80 (from VirtualService default/bad): bad regex"),
            "{text}"
        );
        assert_eq!(format_proxy_status(&json!([])), "no proxies connected\n");
    }

    #[test]
    fn proxy_status_lists_each_diagnostic_with_severity_stage_and_origin() {
        let diagnosticz = json!({"diagnostics": [{
            "severity": "warning",
            "stage": "conflict",
            "origin": {"file": "routes/a.yaml"},
            "object": {"kind": "VirtualService", "namespace": "default", "name": "vs"},
            "field": null,
            "message": "also defined by routes/b.yaml, which serves",
            "serving": {"file": "routes/b.yaml"}
        }]});
        let text = format_diagnostics(&diagnosticz);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "", "a blank line after the table: {text}");
        assert!(lines[1].starts_with("SEVERITY"), "{text}");
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            row[..3],
            ["WARNING", "CONFLICT", "routes/a.yaml:"],
            "{text}"
        );
        assert!(
            lines[2].contains("VirtualService default/vs: also defined by routes/b.yaml"),
            "{text}"
        );
        assert_eq!(format_diagnostics(&json!({"diagnostics": []})), "");
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode_query("router~1.2.3.4~a b"), "router~1.2.3.4~a%20b");
    }
}
