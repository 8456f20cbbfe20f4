"""``make demo``: pull -> list -> run -> rm on a bundled tiny model, with no network.

A seeded tiny Llama is built locally, served by the bundled Hub on 127.0.0.1, and the real
``modelmgr`` command line is run against it step by step, into a throwaway cache, so the demo
never touches the user's own cache or config.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from modelmgr.testing.server import LocalHub
from modelmgr.testing.tinymodel import build_tiny_model

DEMO_ID = "modelmgr-demo/tiny-chat"


def _step(title: str, args: list[str], env: dict[str, str], *, command: list[str] | None = None) -> None:
    shown = "modelmgr " + " ".join(shlex.quote(a) for a in args) if command is None else "python -c ..."
    print(f"\n== {title}\n$ {shown}", flush=True)
    completed = subprocess.run(command or [sys.executable, "-m", "modelmgr", *args], env=env)
    if completed.returncode != 0:
        raise SystemExit(f"demo step failed with exit code {completed.returncode}: {shown}")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="modelmgr-demo-") as scratch:
        root = Path(scratch)
        print("Building a seeded tiny Llama (random weights: its replies are gibberish, by design) ...", flush=True)
        model = build_tiny_model(root / "model")
        config = root / "config.toml"
        config.write_text("")
        with LocalHub() as hub:
            hub.add_repo(DEMO_ID, model)
            print(f"Serving it as {DEMO_ID} from a local Hub at {hub.url} (no network needed).")
            env = {
                **os.environ,
                "HF_ENDPOINT": hub.url,
                "HF_HUB_CACHE": str(root / "cache"),
                "MODELMGR_CONFIG": str(config),
                "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_XET": "1",
            }
            env.pop("HF_TOKEN", None)
            env.pop("HF_HUB_OFFLINE", None)
            print(f"Throwaway cache: {root / 'cache'}")
            _step("Pull: only what a load needs, verified, into huggingface_hub's cache layout", ["pull", DEMO_ID], env)
            _step("List the cache", ["list"], env)
            _step("Run: load model and tokenizer on the best backend, apply the chat template, stream",
                  ["run", DEMO_ID, "Hello! Who are you?", "--max-new-tokens", "24", "--temperature", "0"], env)
            loader = (
                "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
                f"model = AutoModelForCausalLM.from_pretrained({DEMO_ID!r}, local_files_only=True)\n"
                f"tokenizer = AutoTokenizer.from_pretrained({DEMO_ID!r}, local_files_only=True)\n"
                "print('plain transformers loaded', type(model).__name__, 'and', type(tokenizer).__name__, 'from the same cache')\n"
            )
            offline_env = {**env, "HF_HUB_OFFLINE": "1"}
            _step("The same cache works for plain transformers (offline)", [], offline_env,
                  command=[sys.executable, "-c", loader])
            _step("Remove it (plan, then delete; -y confirms)", ["rm", DEMO_ID, "-y"], env)
            _step("The cache is empty again", ["list"], env)
    print("\nDemo complete.")


if __name__ == "__main__":
    main()
