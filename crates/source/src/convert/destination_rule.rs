//! DestinationRule: read the spec and check what istiod's validation checks, naming the field
//! (`spec.subsets[1].trafficPolicy.loadBalancer.consistentHash`). Fields meshpilot reads but
//! does not serve are reported by the index, not here: the rest of the rule still serves.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Ctx;
use meshpilot_model::{
    ConnectionPoolSettings, DestinationRule, Diagnostic, LoadBalancerSettings, OutlierDetection,
    TrafficPolicy, TunnelSettings,
};

type Result<T = ()> = std::result::Result<T, Diagnostic>;

pub(super) fn convert(doc: Value, ctx: &Ctx) -> Result<DestinationRule> {
    let dr: DestinationRule = ctx.spec(doc)?;
    if dr.host.trim().is_empty() {
        return Err(ctx.err("spec.host", "a DestinationRule needs a host"));
    }
    super::export_to::check(ctx, "spec.exportTo", &dr.export_to)?;
    if let Some(policy) = &dr.traffic_policy {
        traffic_policy(ctx, "spec.trafficPolicy", policy)?;
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, subset) in dr.subsets.iter().enumerate() {
        let at = format!("spec.subsets[{i}]");
        if subset.name.is_empty() {
            return Err(ctx.err(&format!("{at}.name"), "a subset needs a name"));
        }
        if let Some(first) = seen.insert(&subset.name, i) {
            return Err(ctx.err(
                &format!("{at}.name"),
                format!(
                    "duplicate subset name `{}` (also spec.subsets[{first}])",
                    subset.name
                ),
            ));
        }
        if let Some(policy) = &subset.traffic_policy {
            traffic_policy(ctx, &format!("{at}.trafficPolicy"), policy)?;
        }
    }
    Ok(dr)
}

fn traffic_policy(ctx: &Ctx, at: &str, p: &TrafficPolicy) -> Result {
    super::security::client_tls(ctx, &format!("{at}.tls"), p.tls.as_deref())?;
    if let Some(lb) = &p.load_balancer {
        load_balancer(ctx, &format!("{at}.loadBalancer"), lb)?;
    }
    if let Some(pool) = &p.connection_pool {
        connection_pool(ctx, &format!("{at}.connectionPool"), pool)?;
    }
    if let Some(od) = &p.outlier_detection {
        outlier_detection(ctx, &format!("{at}.outlierDetection"), od)?;
    }
    if let Some(tunnel) = &p.tunnel {
        tunnel_settings(ctx, &format!("{at}.tunnel"), tunnel)?;
    }
    if let Some(budget) = &p.retry_budget
        && let Some(pct) = &budget.percent
        && !(0.0..=100.0).contains(&pct.value)
    {
        return Err(ctx.err(
            &format!("{at}.retryBudget.percent"),
            format!("{} is out of range (0-100)", pct.value),
        ));
    }
    let mut ports: BTreeMap<u32, usize> = BTreeMap::new();
    for (i, pl) in p.port_level_settings.iter().enumerate() {
        let at = format!("{at}.portLevelSettings[{i}]");
        let Some(port) = &pl.port else {
            return Err(ctx.err(
                &format!("{at}.port"),
                "port-level settings need a port (port.number)",
            ));
        };
        ctx.port(&format!("{at}.port.number"), port.number.into())?;
        if let Some(first) = ports.insert(port.number, i) {
            return Err(ctx.err(
                &format!("{at}.port.number"),
                format!(
                    "port {} has settings twice (also portLevelSettings[{first}])",
                    port.number
                ),
            ));
        }
        if let Some(lb) = &pl.load_balancer {
            load_balancer(ctx, &format!("{at}.loadBalancer"), lb)?;
        }
        if let Some(pool) = &pl.connection_pool {
            connection_pool(ctx, &format!("{at}.connectionPool"), pool)?;
        }
        if let Some(od) = &pl.outlier_detection {
            outlier_detection(ctx, &format!("{at}.outlierDetection"), od)?;
        }
    }
    Ok(())
}

/// A tunnel needs somewhere to go, as istiod's validation demands: a `targetHost`, a valid
/// `targetPort`, and CONNECT or POST.
fn tunnel_settings(ctx: &Ctx, at: &str, tunnel: &TunnelSettings) -> Result {
    if let Some(protocol) = tunnel.protocol.as_deref()
        && !matches!(protocol, "CONNECT" | "POST")
    {
        return Err(ctx.err(
            &format!("{at}.protocol"),
            format!("`{protocol}` is not a tunnel protocol (CONNECT or POST)"),
        ));
    }
    if tunnel.target_host.trim().is_empty() {
        return Err(ctx.err(
            &format!("{at}.targetHost"),
            "a tunnel needs the host to tunnel to",
        ));
    }
    ctx.port(&format!("{at}.targetPort"), tunnel.target_port.into())?;
    Ok(())
}

fn load_balancer(ctx: &Ctx, at: &str, lb: &LoadBalancerSettings) -> Result {
    if let Some(ch) = &lb.consistent_hash {
        let at = format!("{at}.consistentHash");
        if lb.simple.is_some() {
            return Err(ctx.err(
                &at,
                "`simple` and `consistentHash` are alternatives: set one of them",
            ));
        }
        let keys = [
            ch.http_header_name.is_some(),
            ch.http_cookie.is_some(),
            ch.use_source_ip.is_some(),
            ch.http_query_parameter_name.is_some(),
        ];
        if keys.iter().filter(|k| **k).count() != 1 {
            return Err(ctx.err(
                &at,
                "set exactly one hash key: httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName",
            ));
        }
        if ch.http_header_name.as_deref().is_some_and(str::is_empty) {
            return Err(ctx.err(&format!("{at}.httpHeaderName"), "must not be empty"));
        }
        if ch
            .http_query_parameter_name
            .as_deref()
            .is_some_and(str::is_empty)
        {
            return Err(ctx.err(&format!("{at}.httpQueryParameterName"), "must not be empty"));
        }
        if let Some(cookie) = &ch.http_cookie {
            if cookie.name.is_empty() {
                return Err(ctx.err(
                    &format!("{at}.httpCookie.name"),
                    "a hash cookie needs a name",
                ));
            }
            ctx.duration(&format!("{at}.httpCookie.ttl"), cookie.ttl.as_deref())?;
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            return Err(ctx.err(
                &at,
                "`ringHash` and `maglev` are alternatives: set one of them",
            ));
        }
        if ch.minimum_ring_size.is_some() && (ch.ring_hash.is_some() || ch.maglev.is_some()) {
            return Err(ctx.err(
                &format!("{at}.minimumRingSize"),
                "the deprecated minimumRingSize cannot be set with ringHash or maglev",
            ));
        }
    }
    if let Some(l) = &lb.locality_lb_setting {
        super::locality_lb::check(ctx, &format!("{at}.localityLbSetting"), l)?;
    }
    ctx.duration(
        &format!("{at}.warmupDurationSecs"),
        lb.warmup_duration_secs.as_deref(),
    )?;
    if let Some(w) = &lb.warmup {
        let at = format!("{at}.warmup");
        match w.duration.as_deref() {
            None => return Err(ctx.err(&format!("{at}.duration"), "warmup needs a duration")),
            d => ctx.duration(&format!("{at}.duration"), d)?,
        }
        if let Some(p) = w.minimum_percent
            && !(0.0..=100.0).contains(&p)
        {
            return Err(ctx.err(
                &format!("{at}.minimumPercent"),
                format!("{p} is out of range (0-100)"),
            ));
        }
        if let Some(a) = w.aggression
            && a < 1.0
        {
            return Err(ctx.err(
                &format!("{at}.aggression"),
                format!("{a} is below the minimum of 1"),
            ));
        }
    }
    if (lb.warmup.is_some() || lb.warmup_duration_secs.is_some())
        && (lb.consistent_hash.is_some()
            || matches!(
                lb.simple,
                Some(meshpilot_model::SimpleLb::Random | meshpilot_model::SimpleLb::Passthrough)
            ))
    {
        return Err(ctx.err(
            &format!("{at}.warmup"),
            "warmup works only with ROUND_ROBIN and LEAST_REQUEST balancing",
        ));
    }
    Ok(())
}

fn connection_pool(ctx: &Ctx, at: &str, pool: &ConnectionPoolSettings) -> Result {
    if let Some(tcp) = &pool.tcp {
        let at = format!("{at}.tcp");
        ctx.duration(
            &format!("{at}.connectTimeout"),
            tcp.connect_timeout.as_deref(),
        )?;
        if let Some(t) = tcp.connect_timeout.as_deref()
            && meshpilot_model::parse_duration(t).is_some_and(|d| d.as_millis() < 1)
        {
            return Err(ctx.err(
                &format!("{at}.connectTimeout"),
                format!("`{t}` is below the minimum of 1ms"),
            ));
        }
        ctx.duration(
            &format!("{at}.maxConnectionDuration"),
            tcp.max_connection_duration.as_deref(),
        )?;
        ctx.duration(&format!("{at}.idleTimeout"), tcp.idle_timeout.as_deref())?;
        if let Some(k) = &tcp.tcp_keepalive {
            for (name, value) in [("time", &k.time), ("interval", &k.interval)] {
                let field = format!("{at}.tcpKeepalive.{name}");
                ctx.duration(&field, value.as_deref())?;
                // Envoy counts keepalive time in whole seconds, and refuses 0.
                if let Some(v) = value.as_deref()
                    && meshpilot_model::parse_duration(v).is_some_and(|d| d.as_secs() < 1)
                {
                    return Err(ctx.err(&field, format!("`{v}` is below the minimum of 1s")));
                }
            }
        }
    }
    if let Some(http) = &pool.http {
        ctx.duration(
            &format!("{at}.http.idleTimeout"),
            http.idle_timeout.as_deref(),
        )?;
    }
    Ok(())
}

fn outlier_detection(ctx: &Ctx, at: &str, od: &OutlierDetection) -> Result {
    ctx.duration(&format!("{at}.interval"), od.interval.as_deref())?;
    ctx.duration(
        &format!("{at}.baseEjectionTime"),
        od.base_ejection_time.as_deref(),
    )?;
    for (name, value) in [
        ("maxEjectionPercent", od.max_ejection_percent),
        ("minHealthPercent", od.min_health_percent),
    ] {
        if let Some(pct) = value
            && pct > 100
        {
            return Err(ctx.err(
                &format!("{at}.{name}"),
                format!("{pct} is out of range (0-100)"),
            ));
        }
    }
    if od.consecutive_local_origin_failures.is_some()
        && od.split_external_local_origin_errors != Some(true)
    {
        return Err(ctx.err(
            &format!("{at}.consecutiveLocalOriginFailures"),
            "counts only with splitExternalLocalOriginErrors: true",
        ));
    }
    Ok(())
}
