"""`python -m modelmgr.testing serve [ID=]DIR... [--tiny]`: a local Hub for trying clients by hand.

`python -m modelmgr.testing build-tiny DEST` writes the seeded tiny model to a folder.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from modelmgr.testing import TINY_MODEL_ID
from modelmgr.testing.server import LocalHub
from modelmgr.testing.tinymodel import build_tiny_model, tiny_model_files


def _parse_repo(spec: str) -> tuple[str, Path]:
    """`org/name=DIR`, or a bare DIR served as `local/<folder name>`."""
    repo_id, sep, folder = spec.rpartition("=")
    path = Path(folder if sep else spec)
    return (repo_id if sep else f"local/{path.resolve().name}"), path


def _serve(args: argparse.Namespace) -> int:
    hub = LocalHub(host=args.host, port=args.port)
    served: list[str] = []
    if args.tiny:
        served.append(f"{TINY_MODEL_ID} @ {hub.add_repo(TINY_MODEL_ID, tiny_model_files())}")
    for spec in args.repos:
        repo_id, folder = _parse_repo(spec)
        served.append(f"{repo_id} @ {hub.add_repo(repo_id, folder, revision=args.revision)}")
    if not served:
        print("Nothing to serve: give folders ([ORG/NAME=]DIR) or --tiny.", file=sys.stderr)
        return 2
    with hub:
        for line in served:
            print(f"serving {line}")
        print(f"export HF_ENDPOINT={hub.url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


def _build_tiny(args: argparse.Namespace) -> int:
    print(build_tiny_model(Path(args.dest), seed=args.seed))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelmgr.testing")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve folders as Hub repos until interrupted")
    serve.add_argument("repos", nargs="*", metavar="[ORG/NAME=]DIR")
    serve.add_argument("--tiny", action="store_true", help=f"also serve the tiny model as {TINY_MODEL_ID}")
    serve.add_argument("--revision", default="main")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0)
    serve.set_defaults(run=_serve)
    build = commands.add_parser("build-tiny", help="write the seeded tiny model to DEST")
    build.add_argument("dest")
    build.add_argument("--seed", type=int, default=0)
    build.set_defaults(run=_build_tiny)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
