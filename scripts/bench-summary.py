#!/usr/bin/env python3
"""Medians over the runs of scripts/bench.sh: one line per workload/protocol/target.

Usage: scripts/bench-summary.py [bench-results]
"""
import glob
import json
import os
import re
import statistics
import sys

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "bench-results")
groups = {}
for path in sorted(glob.glob(os.path.join(out, "*.json"))):
    m = re.match(r"(.+)-(sotw|delta)-(meshpilot|peer)-(\d+)\.json$", os.path.basename(path))
    if not m:
        continue
    try:
        with open(path) as f:
            r = json.load(f)
    except (OSError, json.JSONDecodeError):
        print(f"{path}: no report (the run failed)", file=sys.stderr)
        continue
    groups.setdefault(m.groups()[:3], []).append(r)


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}{unit}"
    return f"{v}{unit}"


def mib(kib):
    return None if kib is None else kib / 1024.0


for (w, proto, target), runs in sorted(groups.items()):
    s = [r["sync"] for r in runs]
    mem = [r.get("server_memory") or {} for r in runs]
    line = [
        f"{w:9} {proto:5} {target:9} runs {len(runs)}",
        f"all-complete {sum(x['all_complete'] for x in s)}/{len(runs)}",
        f"sync {fmt(med([x['all_complete_ms'] for x in s]), ' ms')}",
        f"after-last-connect {fmt(med([x['after_last_connect_ms'] for x in s]), ' ms')}",
        f"per-proxy p99 {fmt(med([x['per_proxy_ms']['p99'] for x in s]), ' ms')}",
        f"bytes/proxy {fmt(med([x['bytes_per_proxy']['p50'] for x in s]))}",
        f"rss-before {fmt(med([mib((m.get('before') or [None])[0]) for m in mem]), ' MiB')}",
        f"rss-synced {fmt(med([mib((m.get('synced') or [None])[0]) for m in mem]), ' MiB')}",
        f"rss-end {fmt(med([mib((m.get('end') or [None])[0]) for m in mem]), ' MiB')}",
        f"hwm {fmt(med([mib((m.get('end') or [None, None])[1]) for m in mem]), ' MiB')}",
        f"failed {max(r['failed_streams'] for r in runs)} nacks {max(r['nacks_sent'] for r in runs)}",
    ]
    cpu = [r.get("cpu") or {} for r in runs]
    if any(cpu):
        line.append(
            f"cpu-sync server {fmt(med([c.get('server_sync_ms') for c in cpu]), ' ms')}"
            f" load-tool {fmt(med([c.get('client_sync_ms') for c in cpu]), ' ms')}"
        )
    noops = [r["noop"] for r in runs if r.get("noop")]
    if noops:
        line.append(
            f"noop-bytes max {max(n['bytes'] for n in noops)} "
            f"confirmed {sum(1 for n in noops if n['recompute_confirmed'])}/{len(noops)}"
        )
    changes = [r["change"] for r in runs if r.get("change")]
    if changes:
        line.append(
            f"changes converged {sum(c['converged'] for c in changes)}/{sum(c['applied'] for c in changes)}"
            f" all-acked p50 {fmt(med([c['all_acked_ms']['p50'] for c in changes]), ' ms')}"
            f" p99 {fmt(med([c['all_acked_ms']['p99'] for c in changes]), ' ms')}"
            f" max {fmt(med([c['all_acked_ms']['max'] for c in changes]), ' ms')}"
            f" fan-out p99 {fmt(med([c['spread_ms']['p99'] for c in changes]), ' ms')}"
            f" bytes/proxy/change {fmt(med([c['bytes_per_proxy_per_change'] for c in changes]))}"
        )
        paces = [c["pace"] for c in changes if c.get("pace", {}).get("response_interval_ms", {}).get("count")]
        if paces:
            line.append(
                f"while writing: responses/s {fmt(med([p['responses_per_s'] for p in paces]))}"
                f" interval p50 {fmt(med([p['response_interval_ms']['p50'] for p in paces]), ' ms')}"
                f" changes/response {fmt(med([p['changes_per_response'] for p in paces]))}"
            )
    print("  ".join(line))
