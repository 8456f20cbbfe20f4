"""``modelmgr list`` against ``hf cache ls`` on fabricated caches of 0, 100, 1000 and 5000 repos.

Two shapes of repo. "small": a small real model, five blobs (config, generation config,
tokenizer, tokenizer config, weights), one snapshot of relative links, refs/main. "two
revisions": the shape of a real user's cache, two revisions of six files with eight blobs (four
shared, two changed), refs/main and a tag: 27 entries a repo. Sizes run in the small shape, and
1000 repos in both. The commands run as the
installed console scripts next to this Python, alternating, after one warm-up run each; the
table reports the median wall time of each and the ratios, and goes into docs/benchmarks.md
under "## modelmgr list vs hf cache ls" (other sections of that file are kept).

``modelmgr list`` is measured three times: as it runs by default (its scan index, built by the
warm-up run, serves unchanged repos), with ``MODELMGR_SCAN_INDEX=0`` (every repo read file by file,
what the first ``list`` after a change costs; a large cache is read by one process per CPU), and,
for the record, with that and ``MODELMGR_SCAN_WORKERS=1`` (one process, as hf reads). The caches are left to settle for a few seconds
before the warm-up, since the index ignores folders changed within the last two seconds.
Bytecode is cached for both tools (``PYTHONPYCACHEPREFIX`` in a temporary folder), as it is for
any installed package, whatever ``PYTHONDONTWRITEBYTECODE`` says in the calling shell.

    python benchmarks/bench_list.py                 # the full run, a few minutes
    python benchmarks/bench_list.py --sizes 0 1000 --shapes "two revisions" --repeat 3 --no-write
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from report import write_section  # benchmarks/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## modelmgr list vs hf cache ls"
TARGETS = {0: 1 / 3, 1000: 1 / 5}  # modelmgr's time / hf's time must not exceed these, index on and off
SETTLE_SECONDS = 2.5  # longer than modelmgr.cache.scan_index.RACY_SECONDS
BIN = Path(sys.executable).parent

FILES = {
    "config.json": 700,
    "generation_config.json": 120,
    "tokenizer.json": 4000,
    "tokenizer_config.json": 900,
    "model.safetensors": 20000,
}


# The "two revisions" shape: six files, of which the last two change between the revisions.
FILES_2 = {
    "config.json": 700,
    "generation_config.json": 120,
    "tokenizer.json": 4000,
    "tokenizer_config.json": 900,
    "model-00001-of-00002.safetensors": 20000,
    "model-00002-of-00002.safetensors": 12000,
}
SHAPES = {"small": "one revision of 5 files", "two revisions": "2 revisions of 6 files, 8 blobs, 2 refs (27 entries)"}


def _write_revision(root: Path, commit: str, files: dict[str, int], salt) -> None:
    blobs, snapshot = root / "blobs", root / "snapshots" / commit
    os.makedirs(blobs, exist_ok=True)
    os.makedirs(snapshot)
    for name, size in files.items():
        content = (f"{salt(name)}:{name}:".encode() * (size // 8 + 1))[:size]
        etag = hashlib.sha256(content).hexdigest()
        if not os.path.exists(blobs / etag):
            with open(blobs / etag, "wb") as handle:
                handle.write(content)
        os.symlink(f"../../blobs/{etag}", snapshot / name)


def fabricate(cache: Path, repos: int, shape: str = "small") -> None:
    """Write ``repos`` models the way huggingface_hub lays them out, as fast as plain os calls go."""
    cache.mkdir(parents=True, exist_ok=True)
    for index in range(repos):
        root = cache / f"models--bench-org--model-{index:05d}"
        commit = hashlib.sha1(f"commit-{index}".encode()).hexdigest()
        os.makedirs(root / "refs")
        if shape == "small":
            _write_revision(root, commit, FILES, lambda name: index)
            (root / "refs" / "main").write_text(commit)
            continue
        old = hashlib.sha1(f"old-commit-{index}".encode()).hexdigest()
        changed = list(FILES_2)[-2:]
        _write_revision(root, old, FILES_2, lambda name: f"{index}-old" if name in changed else index)
        _write_revision(root, commit, FILES_2, lambda name: f"{index}-new" if name in changed else index)
        (root / "refs" / "main").write_text(commit)
        (root / "refs" / "v1.0").write_text(old)


def timed(command: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}")
    return elapsed, result


def measure(cache: Path, repos: int, repeat: int, env: dict[str, str], shape: str) -> dict:
    env = {**env, "HF_HUB_CACHE": str(cache)}
    cold_env = {**env, "MODELMGR_SCAN_INDEX": "0"}
    single_env = {**cold_env, "MODELMGR_SCAN_WORKERS": "1"}  # for the record: the cold path in one process
    ours = [str(BIN / "modelmgr"), "list", "--json"]
    theirs = [str(BIN / "hf"), "cache", "ls", "--format", "json"]
    # Warm-up (it also builds modelmgr's scan index), and a check that every tool saw every repo.
    _, listed = timed(ours, env)
    revisions = 1 if shape == "small" else 2
    assert len(json.loads(listed.stdout)) == repos * revisions, "modelmgr list missed revisions"
    _, cold_listed = timed(ours, cold_env)
    assert cold_listed.stdout == listed.stdout, "modelmgr list differs with and without its index"
    _, hf_listed = timed(theirs, env)
    assert hf_listed.stdout.count("bench-org/model-") >= repos, "hf cache ls missed repos"
    times: dict[str, list[float]] = {"modelmgr": [], "cold": [], "single": [], "hf": []}
    for _ in range(repeat):
        times["modelmgr"].append(timed(ours, env)[0])
        times["cold"].append(timed(ours, cold_env)[0])
        times["single"].append(timed(ours, single_env)[0])
        times["hf"].append(timed(theirs, env)[0])
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "repos": repos,
        "shape": shape,
        "repeat": repeat,
        **medians,
        "ratio": medians["modelmgr"] / medians["hf"],
        "cold_ratio": medians["cold"] / medians["hf"],
        "single_ratio": medians["single"] / medians["hf"],
    }


def _verdict(row: dict) -> str:
    target = TARGETS.get(row["repos"])
    if target is None:
        return ""
    met = row["ratio"] <= target and row["cold_ratio"] <= target
    return f"≤ 1/{1 / target:.0f}, both: {'met' if met else 'MISSED'}"


def render(results: list[dict], command: str, load: tuple[float, float]) -> str:
    versions = {name: metadata.version(name) for name in ("modelmgr", "huggingface_hub", "click")}
    lines = [
        SECTION,
        "",
        f"Measured {datetime.date.today().isoformat()} on {platform.machine()} {platform.system()}, "
        f"{os.cpu_count()} CPUs (nproc), Python {platform.python_version()}, "
        f"modelmgr {versions['modelmgr']}, huggingface_hub {versions['huggingface_hub']}, click {versions['click']}.",
        "`modelmgr list --json` against `hf cache ls --format json`. Two shapes of repo: \"small\" is five",
        "blobs (25.7 kB), one snapshot of relative links, refs/main; \"two revisions\" is the shape of a",
        "real user's cache, two revisions of six files with eight blobs, refs/main and a tag (27 entries).",
        "The commands run as installed console scripts, alternating, after one warm-up run each; times",
        "are medians of wall time including interpreter start-up, with bytecode cached for both tools.",
        "`modelmgr list` is its default (unchanged repos served by its scan index, which the warm-up run",
        "built); \"index off\" is `MODELMGR_SCAN_INDEX=0`, every repo read file by file, which is what the",
        "first `list` after a change pays for the changed repos. From 150 repos a process on, modelmgr",
        "reads a cache in as many processes as there are CPUs (here 2, `cache/scan_workers.py`); hf",
        "reads in one. \"1 process\" is the index off with `MODELMGR_SCAN_WORKERS=1`, for the record.",
        "Targets: modelmgr at most 1/3 of hf's time on an empty cache and at most 1/5 with 1000 repos,",
        "with the index and without it (as it runs by default).",
        f"Load average {load[0]:.1f} before the run and {load[1]:.1f} after: on a machine shared with other",
        "work both tools slow down alike, so the ratios hold better than the times.",
        "",
        "| repos | shape | runs | `modelmgr list` | index off | index off, 1 process | `hf cache ls` | ratio | ratio, index off | ratio, 1 process | target |",
        "|------:|:------|-----:|----------------:|----------:|---------------------:|--------------:|------:|-----------------:|-----------------:|-------:|",
    ]
    for row in results:
        lines.append(
            f"| {row['repos']} | {row['shape']} | {row['repeat']} | {row['modelmgr'] * 1000:.0f} ms | {row['cold'] * 1000:.0f} ms | "
            f"{row['single'] * 1000:.0f} ms | {row['hf'] * 1000:.0f} ms | 1/{1 / row['ratio']:.1f} | 1/{1 / row['cold_ratio']:.1f} | "
            f"1/{1 / row['single_ratio']:.1f} | {_verdict(row)} |"
        )
    lines += ["", "Reproduce:", "", "```", command, "```", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 100, 1000, 5000])
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=None,
                        help="repo shapes (default: small for every size, and both shapes at 1000 repos)")
    parser.add_argument("--repeat", type=int, default=0, help="runs per command (default: 11, 5 for 5000+ repos)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs/benchmarks.md alone")
    args = parser.parse_args()
    for script in ("modelmgr", "hf"):
        if not (BIN / script).exists():
            raise SystemExit(f"{BIN / script} not found: install modelmgr and huggingface_hub into this Python's environment.")
    runs = [(repos, shape) for repos in args.sizes
            for shape in (args.shapes or (["small", "two revisions"] if repos == 1000 else ["small"]))]

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-list-") as tmp:
        config = Path(tmp, "config.toml")
        config.write_text("")
        env = {
            **os.environ,
            "MODELMGR_CONFIG": str(config),
            "XDG_CACHE_HOME": str(Path(tmp, "xdg-cache")),  # where modelmgr keeps its scan index
            "PYTHONPYCACHEPREFIX": str(Path(tmp, "pycache")),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "NO_COLOR": "1",
        }
        for variable in ("HF_HOME", "HF_ENDPOINT", "MODELMGR_CACHE_DIR", "HUGGINGFACE_HUB_CACHE",
                         "MODELMGR_SCAN_INDEX", "MODELMGR_SCAN_WORKERS", "PYTHONDONTWRITEBYTECODE"):
            env.pop(variable, None)
        results = []
        for repos, shape in runs:
            cache = Path(tmp, f"hub-{repos}-{shape.replace(' ', '-')}")
            started = time.perf_counter()
            fabricate(cache, repos, shape)
            built = time.perf_counter() - started
            time.sleep(SETTLE_SECONDS)
            repeat = args.repeat or (5 if repos >= 5000 else 11)
            row = measure(cache, repos, repeat, env, shape)
            results.append(row)
            print(
                f"{repos:>5} repos, {shape} (built in {built:.1f}s): modelmgr {row['modelmgr'] * 1000:7.1f} ms, "
                f"index off {row['cold'] * 1000:7.1f} ms (1 process {row['single'] * 1000:7.1f} ms), hf {row['hf'] * 1000:7.1f} ms, "
                f"ratio 1/{1 / row['ratio']:.1f} (index off 1/{1 / row['cold_ratio']:.1f})",
                flush=True,
            )
            if repos >= 1000 and row["modelmgr"] > 0.9 * row["cold"]:
                print("  note: the scan index hardly helped here; check that the caches had settled.", flush=True)
            shutil.rmtree(cache)

    import shlex

    command = shlex.join(["python", "benchmarks/bench_list.py", *sys.argv[1:]])
    text = render(results, command, (load_before, os.getloadavg()[0]))
    print()
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
        print(f"Wrote {DOC.relative_to(ROOT)}")
    missed = [row for row in results if _verdict(row).endswith("MISSED")]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
