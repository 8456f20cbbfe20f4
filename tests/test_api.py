"""The public API is the facade ``modelmgr``: the names a script or a plugin imports resolve to
the same objects whatever was imported before, in a fresh interpreter."""
from __future__ import annotations

import subprocess
import sys

import modelmgr

PLUGIN_API = (
    "Backend", "Availability", "LoadOptions", "LoadedModel", "ModelInfo", "Message", "Generation",
    "GenerationSettings", "estimate_memory", "free_ram", "hookimpl", "ModelmgrError", "BackendError", "UnsafeModel",
)


def fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout.strip()


def test_pull_and_load_are_functions_after_their_modules_are_imported():
    # The README's example used to end in "'module' object is not callable": importing the
    # submodule modelmgr.pull replaced the facade's function of the same name.
    out = fresh("import modelmgr, modelmgr.fetch.pull, modelmgr.run.plan; print(modelmgr.pull, modelmgr.load)")
    assert out.startswith("<function pull at") and "<function load at" in out
    out = fresh("import modelmgr; modelmgr.load; import modelmgr.fetch.pull; print(callable(modelmgr.pull), type(modelmgr.pull).__name__)")
    assert out == "True function"


def test_the_plugin_api_comes_from_modelmgr_alone():
    for name in PLUGIN_API:
        assert getattr(modelmgr, name) is not None, name
    assert set(PLUGIN_API) <= set(dir(modelmgr))
    from modelmgr.run.api import Backend

    assert modelmgr.Backend is Backend


def test_importing_modelmgr_imports_nothing_heavy():
    out = fresh("import sys, modelmgr; modelmgr.Backend; modelmgr.hookimpl; modelmgr.pull; "
                "print(sorted(m for m in ('torch', 'transformers', 'huggingface_hub', 'numpy') if m in sys.modules))")
    assert out == "[]"
