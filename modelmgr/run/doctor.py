"""`modelmgr doctor`: what this machine has, and what is broken, each with its fix.

It lives in run/, the highest core layer, because it reports on every layer below: the config,
the caches, the network path to each endpoint, and the backends with their runtimes. torch is
imported here only, when the report asks about devices.
"""
from __future__ import annotations

import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from modelmgr._version import __version__
from modelmgr.errors import ModelmgrError
from modelmgr.project.config import HUGGINGFACE_CO, Config

RUNTIMES = ("torch", "transformers", "accelerate", "safetensors", "tokenizers", "bitsandbytes", "huggingface_hub",
            "llama-cpp-python", "vllm", "truststore")
PROBE_TIMEOUT = 5.0  # seconds: a reachability check, not a download


@dataclass
class Report:
    versions: dict[str, str | None] = field(default_factory=dict)
    backends: list[dict[str, Any]] = field(default_factory=list)
    devices: dict[str, Any] = field(default_factory=dict)
    caches: list[dict[str, Any]] = field(default_factory=list)
    endpoints: list[dict[str, Any]] = field(default_factory=list)
    network: dict[str, Any] = field(default_factory=dict)
    token: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # each: what is broken, then the fix

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in self.__dict__.items()}, "ok": self.ok}


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"modelmgr": __version__, "python": platform.python_version()}
    for name in RUNTIMES:
        found[name] = _version(name)
    return found


def devices() -> dict[str, Any]:
    """CUDA as torch sees it; the reason when there is none."""
    try:
        import torch
    except ImportError:
        return {"cuda": False, "reason": "torch is not installed: pip install 'modelmgr[run]'", "torch_cuda_build": None, "gpus": []}
    build = torch.version.cuda
    report: dict[str, Any] = {"cuda": False, "torch_cuda_build": build, "gpus": []}
    if build is None:
        report["reason"] = f"torch {torch.__version__} is a CPU-only build: install a CUDA build of torch to use a GPU"
        return report
    if not torch.cuda.is_available():
        report["reason"] = f"torch {torch.__version__} is built for CUDA {build}, but no GPU or driver is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)"
        return report
    report["cuda"] = True
    report["reason"] = None
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        report["gpus"].append({"index": index, "name": torch.cuda.get_device_name(index), "free_bytes": free, "total_bytes": total})
    return report


def caches(config: Config) -> tuple[list[dict[str, Any]], list[str]]:
    rows, problems = [], []
    writable_dir = config.cache_dir
    for directory in config.cache_dirs:
        existing = directory
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        writable = existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)
        try:
            free = shutil.disk_usage(existing).free
        except OSError:
            free = None
        rows.append({"path": str(directory), "exists": directory.is_dir(), "writable": writable, "free_bytes": free,
                     "role": "writes here" if directory == writable_dir else "read-only"})
    if not any(row["writable"] for row in rows):
        problems.append(f"no cache directory is writable ({', '.join(str(d) for d in config.cache_dirs)}): "
                        "set HF_HUB_CACHE to a folder you can write, or fix its permissions")
    return rows, problems


def probe_endpoints(config: Config) -> tuple[list[dict[str, Any]], list[str]]:
    from modelmgr.fetch.transport import EndpointFailure, Transport

    rows: list[dict[str, Any]] = []
    try:
        transport: Transport | None = Transport.for_config(config)
        unusable = None
    except ModelmgrError as exc:  # a proxy URL that cannot work: network() reports it with its fix
        transport, unusable = None, str(exc).rstrip(".")
    for endpoint in config.endpoints:
        row: dict[str, Any] = {"name": endpoint.name, "url": endpoint.url, "send_token": endpoint.send_token}
        if config.offline:
            rows.append({**row, "reachable": None, "skipped": "offline"})
            continue
        if transport is None:
            rows.append({**row, "reachable": False, "error": unusable})
            continue
        began = time.monotonic()
        try:
            response = transport.request(endpoint, "HEAD", "/api/models", timeout=min(PROBE_TIMEOUT, endpoint.timeout))
            response.release()
            row.update(reachable=True, status=response.status, latency_ms=round((time.monotonic() - began) * 1000, 1))
        except EndpointFailure as failure:
            row.update(reachable=False, error=failure.reason)
        except ModelmgrError as exc:  # a CA setting naming a missing or non-PEM file
            row.update(reachable=False, error=str(exc).rstrip("."))
        rows.append(row)
    problems = []
    if rows and not config.offline and not any(row.get("reachable") for row in rows):
        reasons = "; ".join(f"{r['name']}: {r.get('error')}" for r in rows)
        problems.append(f"no endpoint is reachable ({reasons}): check the network, the proxy (HTTPS_PROXY) and "
                        "the CA settings, or work offline with HF_HUB_OFFLINE=1")
    return rows, problems


def network(config: Config) -> tuple[dict[str, Any], list[str]]:
    from modelmgr.fetch.proxy import ProxySettings
    from modelmgr.fetch.trust import ssl_context, trust_source

    problems = []
    try:
        proxies = ProxySettings(configured=config.proxy, no_proxy=config.no_proxy).describe()
    except ModelmgrError as exc:
        proxies, _ = {"error": str(exc)}, problems.append(str(exc))
    source, location = trust_source(config.ca_bundle)
    try:
        ssl_context(config.ca_bundle)
    except ModelmgrError as exc:
        problems.append(str(exc))
    return {"proxy": proxies, "ca": {"source": source, "path": location}}, problems


def token(config: Config) -> dict[str, Any]:
    """Whether a token is present and which hosts receive it: never the token itself."""
    from modelmgr.fetch.transport import token_allowed

    if not config.token:
        return {"present": False, "sent_to": []}
    source = "HF_TOKEN" if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") else "stored token file"
    hosts = [e.host for e in config.endpoints if token_allowed(e, e.url + "/")]
    return {"present": True, "source": source, "sent_to": hosts,
            "note": None if hosts else f"no configured endpoint receives it (only {HUGGINGFACE_CO} and send_token = true ones do)"}


def diagnose(config: Config) -> Report:
    report = Report(versions=versions())
    from modelmgr.run.registry import backend_statuses

    try:
        report.backends = [s.to_dict() for s in backend_statuses()]
    except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, not fatal to the report
        report.problems.append(f"the backends could not be listed ({type(exc).__name__}: {exc}): run `modelmgr backends --debug`")
    if report.backends and not any(b["available"] for b in report.backends):
        report.problems.append("no backend is available here: pip install 'modelmgr[run]' for the cpu backend")
    report.devices = devices()
    report.caches, problems = caches(config)
    report.problems += problems
    report.network, problems = network(config)
    report.problems += problems
    report.endpoints, problems = probe_endpoints(config)
    report.problems += problems
    report.token = token(config)
    return report


