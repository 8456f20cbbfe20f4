"""``modelmgr pull`` against ``huggingface_hub.snapshot_download`` on the same loopback LocalHub
and the same files, with 4 parallel ``curl`` as the ceiling.

The repo: FILES random safetensors shards of SIZE MiB each (4 x 512 MiB by default) plus the
small files of a real model (config, generation config, tokenizer, tokenizer config, index).
Both tools fetch all of it. Scenarios: (a) uncapped; (b) the server capping each connection at
20 MB/s (``LocalHub.set_rate_limit``), the shape of a CDN or a mirror that limits per connection.
The tools alternate within each round (after one untimed warm-up run each), each run in its own
subprocess with a fresh cache directory, after ``os.sync()``; the table shows the median over
rounds of wall time, MB/s (decimal, of all bytes
fetched), CPU seconds (user + system, from ``getrusage(RUSAGE_CHILDREN)`` deltas around the
subprocess) and peak RSS (``ru_maxrss`` of that child, from ``wait4``; the children are started
by a small launcher process, whose own RSS a child would otherwise inherit as its starting peak). curl fetches only the
shards, one process per shard at once, each writing its own file: its CPU and RSS are the sums.

The LocalHub serves from this process (``sendfile`` uncapped; a Python loop when capped), so its
CPU is not in any tool's figures but competes with them on a small machine.

    python benchmarks/bench_pull.py          # 4 x 512 MiB; 3 rounds uncapped, 2 capped: about 3.5 minutes
    python benchmarks/bench_pull.py --size-mib 64 --rounds 1 --capped-rounds 1 --no-write
    python benchmarks/bench_pull.py --shape medium   # files of 20, 30, 40, 50 and 60 MB, its own section
    python benchmarks/bench_pull.py --shape medium --min-part-mib 8 --no-write   # try another part size
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modelmgr.testing import LocalHub  # noqa: E402
from report import write_section  # noqa: E402 - benchmarks/ is on sys.path when a script runs

DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## modelmgr pull vs snapshot_download"
MEDIUM_SECTION = "## modelmgr pull vs snapshot_download, files of 20-60 MB"
MEDIUM_SIZES = (20_000_000, 30_000_000, 40_000_000, 50_000_000, 60_000_000)  # --shape medium
REPO = "bench-org/bench-model"
CAP = 20_000_000  # bytes per second per connection in the capped scenario
TOOLS = ("modelmgr", "snapshot_download", "curl")

SMALL_FILES = {
    "config.json": json.dumps({"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32}, indent=2),
    "generation_config.json": json.dumps({"bos_token_id": 1, "eos_token_id": 2}, indent=2),
    "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {f"t{i}": i for i in range(20000)}}}),
    "tokenizer_config.json": json.dumps({"model_max_length": 4096}, indent=2),
}

SNAPSHOT_DOWNLOAD = """
import sys
from huggingface_hub import snapshot_download
snapshot_download(sys.argv[1], cache_dir=sys.argv[2], endpoint=sys.argv[3], max_workers=8)
"""


def build_repo(folder: Path, sizes: list[int]) -> int:
    """Write the repo, one shard of each size in bytes; returns its total size in bytes."""
    folder.mkdir(parents=True)
    files = len(sizes)
    names = [f"model-{i + 1:05d}-of-{files:05d}.safetensors" for i in range(files)]
    block = 16 * 1024 * 1024
    for name, size in zip(names, sizes):
        with open(folder / name, "wb") as handle:
            left = size
            while left:
                handle.write(os.urandom(min(block, left)))
                left -= min(block, left)
    contents = dict(SMALL_FILES)
    contents["model.safetensors.index.json"] = json.dumps(
        {"metadata": {"total_size": sum(sizes)}, "weight_map": {f"layer.{i}": n for i, n in enumerate(names)}})
    for name, text in contents.items():
        (folder / name).write_text(text)
    return sum(p.stat().st_size for p in folder.iterdir())


# Runs the commands at once and measures them. A separate small process, because a child's
# ru_maxrss starts at its parent's RSS at fork time (Linux keeps the high-water mark across exec):
# forked from this benchmark, which holds the LocalHub, every tool would inherit its size.
LAUNCHER = """
import json, os, resource, subprocess, sys, tempfile, time
commands = json.loads(sys.argv[1])
logs = [tempfile.TemporaryFile() for _ in commands]
before = resource.getrusage(resource.RUSAGE_CHILDREN)
start = time.perf_counter()
processes = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=log) for c, log in zip(commands, logs)]
children = []
for process, log in zip(processes, logs):
    _, status, usage = os.wait4(process.pid, 0)  # this very child's rusage: its own ru_maxrss
    log.seek(0)
    children.append({"code": os.waitstatus_to_exitcode(status), "maxrss": usage.ru_maxrss * 1024,
                     "stderr": log.read().decode(errors="replace")[-2000:]})
wall = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
print(json.dumps({"wall": wall, "cpu": cpu, "children": children}))
"""


def run_measured(commands: list[list[str]], env: dict[str, str]) -> dict:
    """Wall time, CPU seconds (RUSAGE_CHILDREN delta) and summed peak RSS of the commands run at once."""
    launched = subprocess.run([sys.executable, "-c", LAUNCHER, json.dumps(commands)], env=env,
                              capture_output=True, text=True, check=True)
    result = json.loads(launched.stdout)
    failures = [f"{' '.join(c[:4])}... exited {child['code']}: {child['stderr']}"
                for c, child in zip(commands, result["children"]) if child["code"]]
    if failures:
        raise SystemExit("\n".join(failures))
    return {"wall": result["wall"], "cpu": result["cpu"], "rss": sum(c["maxrss"] for c in result["children"])}


# modelmgr with another part size, for choosing one by measurement (not a setting users have).
MODELMGR_WITH_PART = """
import sys
import modelmgr.fetch.parts
modelmgr.fetch.parts.MIN_PART = int(sys.argv[1])  # the floor of parts.part_size
from modelmgr.cli import main
main(sys.argv[2:])
"""


def tool_commands(tool: str, hub: LocalHub, cache: Path, shards: list[str], connections: int,
                  min_part: int | None = None) -> list[list[str]]:
    if tool == "modelmgr":
        pull = ["pull", REPO, "--endpoint", hub.url, "--connections", str(connections)]
        if min_part is not None:
            return [[sys.executable, "-c", MODELMGR_WITH_PART, str(min_part), *pull]]
        return [[sys.executable, "-m", "modelmgr", *pull]]
    if tool == "snapshot_download":
        return [[sys.executable, "-c", SNAPSHOT_DOWNLOAD, REPO, str(cache), hub.url]]
    cache.mkdir(parents=True)
    return [["curl", "-sSfL", "-o", str(cache / name), f"{hub.url}/{REPO}/resolve/main/{name}"] for name in shards]


def check_result(tool: str, cache: Path, source: Path, shards: list[str]) -> None:
    """The bytes landed where they should, with the right sizes (modelmgr also verified sha256)."""
    if tool == "curl":
        found = {name: (cache / name).stat().st_size for name in shards}
        expected = {name: (source / name).stat().st_size for name in shards}
    else:
        snapshots = list(cache.glob("models--*/snapshots/*"))
        if len(snapshots) != 1:
            raise SystemExit(f"{tool}: expected one snapshot in {cache}, found {snapshots}")
        found = {p.name: p.stat().st_size for p in snapshots[0].iterdir()}
        expected = {p.name: p.stat().st_size for p in source.iterdir()}
    if found != expected:
        raise SystemExit(f"{tool} fetched {found}, expected {expected}")


def measure(args, hub: LocalHub, source: Path, total: int, shard_bytes: int, work: Path) -> list[dict]:
    shards = sorted(p.name for p in source.iterdir() if p.name.endswith(".safetensors"))
    results = []
    scenarios = [("uncapped", None), (f"{CAP // 1_000_000} MB/s per connection", CAP)]
    for scenario, cap in scenarios[: 1 if args.capped_rounds == 0 else 2]:
        hub.set_rate_limit(cap)
        runs: dict[str, list[dict]] = {tool: [] for tool in args.tools}
        rounds = args.rounds if cap is None else args.capped_rounds
        # Round 0 is a warm-up, not recorded: in a VM the first use of fresh memory for the page
        # cache costs several times what reusing it does, and would fall on whichever tool is first.
        for round_index in range(0 if cap is None else 1, rounds + 1):
            # Alternate the order, so neither tool always runs on a warmer or cooler machine.
            order = list(args.tools) if round_index % 2 else list(reversed(args.tools))
            for tool in order:
                cache = work / f"cache-{tool}"
                shutil.rmtree(cache, ignore_errors=True)
                config = work / "modelmgr.toml"
                config.write_text("")
                env = {
                    **os.environ,
                    "HF_HUB_CACHE": str(cache), "MODELMGR_CONFIG": str(config),
                    "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                    "HF_HUB_ENABLE_HF_TRANSFER": "0", "HF_ENDPOINT": hub.url,
                }
                for variable in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_HOME"):
                    env.pop(variable, None)
                # The previous run's dirty pages (and the repo just written) would otherwise be
                # flushed while this run works, charging its writeback to whichever tool is next.
                os.sync()
                min_part = args.min_part_mib * 1024 * 1024 if args.min_part_mib else None
                measured = run_measured(tool_commands(tool, hub, cache, shards, args.connections, min_part), env)
                check_result(tool, cache, source, shards)
                measured["bytes"] = shard_bytes if tool == "curl" else total
                if round_index:
                    runs[tool].append(measured)
                print(f"  {scenario:<26} {f'round {round_index}' if round_index else 'warm-up':<8} {tool:<18} {measured['wall']:6.2f} s "
                      f"{measured['bytes'] / measured['wall'] / 1e6:7.1f} MB/s  cpu {measured['cpu']:5.2f} s  "
                      f"rss {measured['rss'] / 2**20:6.0f} MiB", flush=True)
                shutil.rmtree(cache, ignore_errors=True)
        for tool in args.tools:
            wall = statistics.median(r["wall"] for r in runs[tool])
            results.append({
                "scenario": scenario, "tool": tool, "wall": wall,
                "mbps": runs[tool][0]["bytes"] / wall / 1e6,
                "cpu": statistics.median(r["cpu"] for r in runs[tool]),
                "rss": max(r["rss"] for r in runs[tool]),
                "walls": [r["wall"] for r in runs[tool]],
            })
    return results


def machine() -> str:
    try:
        mem = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) * 1024
    except (OSError, AttributeError):
        mem = 0
    cpu = ""
    try:
        cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text()).group(1).strip()
    except (OSError, AttributeError):
        pass
    return f"{os.cpu_count()} CPUs ({cpu or platform.processor()}), {mem / 2**30:.0f} GiB RAM, Linux {platform.release()}"


def versions() -> str:
    curl = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split("\n")[0].split(" ")[1]
    return (f"Python {platform.python_version()}, modelmgr {metadata.version('modelmgr')}, "
            f"huggingface_hub {metadata.version('huggingface_hub')}, curl {curl}")


def _count(n: int) -> str:
    return {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}.get(n, str(n))


def render(results: list[dict], args, sizes: list[int], total: int, command: str) -> str:
    from modelmgr.fetch.parts import MIN_PART, SPREAD_PART

    files = len(sizes)
    min_part = args.min_part_mib * 1024 * 1024 if args.min_part_mib else MIN_PART
    if len(set(sizes)) == 1:
        shards = f"{files} random safetensors shards x {sizes[0] / 2**20:.0f} MiB"
    else:
        shards = f"{files} random safetensors shards of {', '.join(f'{s / 1e6:.0f}' for s in sizes)} MB"
    lines = [
        MEDIUM_SECTION if args.shape == "medium" else SECTION, "",
        f"Measured {datetime.date.today().isoformat()} on {machine()}; {versions()}.",
        "",
        f"One repo of {shards} plus 5 small files "
        f"({total / 1e9:.2f} GB in all), served by the loopback LocalHub (modelmgr.testing) from this "
        "benchmark's own process. Each tool runs in its own subprocess with a fresh cache directory; "
        f"the tools alternate within each round ({args.rounds} uncapped after an untimed warm-up round, "
        f"{args.capped_rounds} capped), `os.sync()` before each run, and the table shows the median. "
        f"modelmgr: `python -m modelmgr pull --connections {args.connections}` (sha256 verified while streaming, "
        "disk writeback started behind the download and every blob fsynced before its rename). "
        "snapshot_download: `max_workers=8`, HF_HUB_DISABLE_XET=1, "
        f"progress bars off (it checks sizes, not hashes). curl: {_count(files)} `curl -L -o` processes at once (following the Hub's redirect to its CDN), one per "
        "shard (the small files skipped): the ceiling of plain HTTP on this machine.",
        "",
        "CPU = user + system seconds of the tool's process(es), from `getrusage(RUSAGE_CHILDREN)` deltas; "
        f"peak RSS = `ru_maxrss` of that process (summed over the {_count(files)} curls), each started from a small "
        "launcher process so that none inherits the benchmark's own RSS as its high-water mark. The LocalHub's own CPU "
        "(sendfile when uncapped, a Python loop when capped) is spent in the benchmark process and is in "
        "no row, but it competes for the same cores.",
        "",
        "Capped per connection, throughput follows the connections in flight: snapshot_download and curl "
        f"fetch each file over one connection ({files} shards: at most {files} x {CAP // 1_000_000} MB/s), modelmgr "
        f"splits each shard into ranges (the pull's bytes spread over its connections, {min_part / 2**20:g} to "
        f"{SPREAD_PART / 2**20:g} MiB each) and keeps `--connections` of them in flight "
        f"({args.connections}: at most {args.connections} x {CAP // 1_000_000} MB/s). "
        "Uncapped on loopback, the cost is CPU and memory copies: modelmgr's figures include hashing "
        "every byte (a follower thread reading the written prefix back from the page cache) and the fsync.",
        "",
        "| scenario | tool | wall (median) | MB/s | CPU s | CPU s / GB | peak RSS | runs (s) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        gb = r["mbps"] * r["wall"] / 1000
        lines.append(
            f"| {r['scenario']} | {r['tool']} | {r['wall']:.2f} s | {r['mbps']:.0f} | {r['cpu']:.2f} | "
            f"{r['cpu'] / gb:.1f} | {r['rss'] / 2**20:.0f} MiB | {', '.join(f'{w:.2f}' for w in r['walls'])} |")
    lines += ["", "Reproduce:", "", "```", command, "```", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=512, help="size of each shard (default 512)")
    parser.add_argument("--files", type=int, default=4, help="number of shards (default 4)")
    parser.add_argument("--shape", choices=("shards", "medium"), default="shards",
                        help="shards: --files x --size-mib; medium: files of 20, 30, 40, 50 and 60 MB (its own section)")
    parser.add_argument("--min-part-mib", type=int, default=None, help="run modelmgr with this part size (measuring only)")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each tool uncapped (default 3)")
    parser.add_argument("--capped-rounds", type=int, default=2, help="runs of each tool capped; 0 skips it (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="modelmgr --connections (default 32, its own default)")
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--workdir", type=Path, default=None, help="where the repo and caches go (default: a temp dir)")
    parser.add_argument("--no-write", action="store_true", help="print the section, leave docs/benchmarks.md alone")
    args = parser.parse_args()
    if "curl" in args.tools and shutil.which("curl") is None:
        raise SystemExit("curl not found: install it or pass --tools modelmgr snapshot_download")

    command = "python benchmarks/bench_pull.py" + "".join(
        f" {flag} {value}" for flag, value, default in (
            ("--size-mib", args.size_mib, 512), ("--files", args.files, 4), ("--rounds", args.rounds, 3),
            ("--capped-rounds", args.capped_rounds, 2), ("--connections", args.connections, 32),
            ("--shape", args.shape, "shards"), ("--min-part-mib", args.min_part_mib, None)) if value != default)
    with tempfile.TemporaryDirectory(prefix="bench-pull-", dir=args.workdir) as tmp:
        work = Path(tmp)
        source = work / "repo"
        started = time.perf_counter()
        sizes = list(MEDIUM_SIZES) if args.shape == "medium" else [args.size_mib * 1024 * 1024] * args.files
        total = build_repo(source, sizes)
        shard_bytes = sum(sizes)
        with LocalHub() as hub:
            hub.add_repo(REPO, source)  # hashes every shard once
            print(f"built {len(sizes)} shards, {shard_bytes / 1e6:.0f} MB, in {time.perf_counter() - started:.1f} s; serving at {hub.url}",
                  flush=True)
            results = measure(args, hub, source, total, shard_bytes, work)
            if hub.errors:
                raise SystemExit("LocalHub errors:\n" + "\n".join(hub.errors))
    text = render(results, args, sizes, total, command)
    print(text)
    print(f"total {time.perf_counter() - started:.0f} s", flush=True)
    if not args.no_write:
        section = MEDIUM_SECTION if args.shape == "medium" else SECTION
        write_section(section, text)
        print(f"wrote the section {section!r} of {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
