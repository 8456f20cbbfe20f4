"""Test helpers for modelmgr and its plugins: a local Hub server, faults to inject, a tiny model.

    from modelmgr.testing import LocalHub, TINY_MODEL_ID, tiny_model_files, faults

    with LocalHub() as hub:
        hub.add_repo(TINY_MODEL_ID, tiny_model_files())
        hub.add_fault(faults.ResetMidBody(1000), path="*/model.safetensors")
        ...  # point the client at hub.url

Pytest fixtures (tiny_model_dir, local_hub, hub_factory) live in modelmgr.testing.fixtures:
add `pytest_plugins = ["modelmgr.testing.fixtures"]` to a conftest.py. Nothing here imports torch
or transformers until a model is built.
"""

from modelmgr.testing import faults
from modelmgr.testing.faults import (
    BadEtag,
    BadSize,
    Fault,
    FaultRule,
    FlipByte,
    Hangup,
    PauseMidBody,
    RewriteLink,
    HostileTree,
    HtmlPage,
    IgnoreRange,
    RedirectTo,
    ResetMidBody,
    ShortBody,
    Stall,
    Status,
    free_port,
)
from modelmgr.testing.server import HubFile, LocalHub, RecordedRequest, git_blob_sha1
from modelmgr.testing.tinymodel import build_tiny_model, tiny_model_files

TINY_MODEL_ID = "modelmgr-test/tiny-llama"

__all__ = [
    "TINY_MODEL_ID",
    "BadEtag",
    "BadSize",
    "Fault",
    "FaultRule",
    "FlipByte",
    "Hangup",
    "PauseMidBody",
    "RewriteLink",
    "HostileTree",
    "HtmlPage",
    "HubFile",
    "IgnoreRange",
    "LocalHub",
    "RecordedRequest",
    "RedirectTo",
    "ResetMidBody",
    "ShortBody",
    "Stall",
    "Status",
    "build_tiny_model",
    "faults",
    "free_port",
    "git_blob_sha1",
    "tiny_model_files",
]
