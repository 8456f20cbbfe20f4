"""`modelmgr doctor`: versions, devices, caches, endpoints, proxy, CA and token, and what is broken."""
from __future__ import annotations

import sys

import click

from modelmgr.commands._common import echo_json, get_config


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--offline", is_flag=True, default=None, help="Skip the endpoint checks; open no socket.")
@click.option("--endpoint", "endpoints", multiple=True, metavar="URL", help="Check this endpoint (repeatable).")
def doctor(as_json, offline, endpoints):
    """Report what this machine has for modelmgr, and what is broken, with the fix.

    Exits 1 when something needed is broken (no writable cache, no endpoint reachable, a CA or
    proxy setting that cannot work, no backend). The token is never shown, only where it goes.
    """
    from modelmgr.run.doctor import diagnose
    from modelmgr.units import format_size

    config = get_config(flags={"hub.offline": offline}, endpoints=endpoints)
    report = diagnose(config)
    if as_json:
        echo_json(report.to_dict())
        sys.exit(0 if report.ok else 1)
    out = click.echo
    out("versions: " + ", ".join(f"{k} {v}" for k, v in report.versions.items() if v))
    missing = [k for k, v in report.versions.items() if not v]
    if missing:
        out(f"  not installed: {', '.join(missing)}")
    for backend in report.backends:
        out(f"backend {backend['name']}: {'available' if backend['available'] else 'unavailable: ' + backend['reason']}")
    dev = report.devices
    if dev["cuda"]:
        for gpu in dev["gpus"]:
            out(f"gpu {gpu['index']}: {gpu['name']}, {format_size(gpu['free_bytes'])} free of {format_size(gpu['total_bytes'])}")
    else:
        out(f"cuda: no ({dev['reason']})")
    for cache in report.caches:
        free = format_size(cache["free_bytes"]) if cache["free_bytes"] is not None else "?"
        state = "writable" if cache["writable"] else "not writable"
        out(f"cache {cache['path']}: {state}, {free} free ({cache['role']})")
    for endpoint in report.endpoints:
        if endpoint.get("skipped"):
            out(f"endpoint {endpoint['name']}: not checked ({endpoint['skipped']})")
        elif endpoint["reachable"]:
            out(f"endpoint {endpoint['name']}: reachable, HTTP {endpoint['status']} in {endpoint['latency_ms']:.0f} ms")
        else:
            out(f"endpoint {endpoint['name']}: unreachable ({endpoint['error']})")
    proxy = report.network["proxy"]
    out(f"proxy: https {proxy.get('https') or 'none'}; http {proxy.get('http') or 'none'}; "
        f"no_proxy {', '.join(proxy.get('no_proxy') or []) or 'none'}")
    ca = report.network["ca"]
    out(f"trust: {ca['path'] + ' (from ' + ca['source'] + ')' if ca['path'] else ca['source']}")
    tok = report.token
    if tok["present"]:
        out(f"token: set ({tok['source']}), sent to {', '.join(tok['sent_to']) or 'no endpoint'}")
    else:
        out("token: not set (public models only; set HF_TOKEN or run `hf auth login` for gated and private ones)")
    for problem in report.problems:
        click.echo(f"Problem: {problem.rstrip('.')}.", err=True)  # messages that end with a full stop keep one
    if not report.ok:
        sys.exit(1)
    out("Everything needed works.")
