"""Test helpers for modelmgr and its plugins: a local Hub server, faults to inject, a tiny model.

    from modelmgr.testing import LocalHub, TINY_MODEL_ID, tiny_model_files, faults

    with LocalHub() as hub:
        hub.add_repo(TINY_MODEL_ID, tiny_model_files())
        hub.add_fault(faults.ResetMidBody(1000), path="*/model.safetensors")
        ...  # point the client at hub.url

``tiny_gguf_files()`` is the same model as a GGUF repo with several quantizations (TINY_GGUF_ID).
Pytest fixtures (tiny_model_dir, local_hub, tiny_gguf_dir, gguf_hub, hub_factory) live in modelmgr.testing.fixtures:
add `pytest_plugins = ["modelmgr.testing.fixtures"]` to a conftest.py. Nothing here imports torch
or transformers until a model is built.
"""

from modelmgr.testing import faults
from modelmgr.testing.faults import (
    BadEtag,
    BadSize,
    CloseAfter,
    Drip,
    DripHeaders,
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
    RefuseRange,
    ResetMidBody,
    ShortBody,
    Stall,
    Status,
    free_port,
)
from modelmgr.testing.server import HubFile, LocalHub, RecordedRequest, git_blob_sha1
from modelmgr.testing.tinygguf import TINY_GGUF_ID, TINY_GGUF_QUANTS, build_tiny_gguf_repo, convert_llama_to_gguf, tiny_gguf_files
from modelmgr.testing.tinymodel import build_tiny_model, tiny_model_files

TINY_MODEL_ID = "modelmgr-test/tiny-llama"

__all__ = [
    "TINY_GGUF_ID",
    "TINY_GGUF_QUANTS",
    "TINY_MODEL_ID",
    "BadEtag",
    "BadSize",
    "CloseAfter",
    "Drip",
    "DripHeaders",
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
    "RefuseRange",
    "ResetMidBody",
    "ShortBody",
    "Stall",
    "Status",
    "build_tiny_gguf_repo",
    "build_tiny_model",
    "convert_llama_to_gguf",
    "faults",
    "free_port",
    "git_blob_sha1",
    "tiny_gguf_files",
    "tiny_model_files",
]
