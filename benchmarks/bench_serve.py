"""`modelmgr serve` against `transformers serve`: 1, 4 and 8 streaming clients on one model.

The model is a seeded random Llama of about 120M parameters (hidden 1024, 12 layers, GQA) with
the tiny test model's tokenizer and chat template, pulled from a LocalHub into a temporary Hub
cache, so both servers load the same snapshot by the same ID, offline. Each server runs alone
(started, warmed up with one request, measured, stopped), on the CPU in float32. Each client is
the real openai client streaming chat completions, greedy, a fixed max_tokens, its own prompt,
``--requests`` times in a row. Reported: total completion tokens over the wall time of the round
(first request sent to last token), and time to first token over every request of the round.

    python benchmarks/bench_serve.py             # about 5 minutes on 2 cores; writes docs/benchmarks.md
    python benchmarks/bench_serve.py --clients 1 4 --max-tokens 16 --no-write

Needs the serve extra, openai, and fastapi for `transformers serve` (`make bench` installs it).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from importlib import metadata
from pathlib import Path

from report import write_section  # benchmarks/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## modelmgr serve vs transformers serve"
MODEL_ID = "bench/llama-120m"
SHAPE = {"hidden_size": 1024, "intermediate_size": 2560, "num_hidden_layers": 12, "num_attention_heads": 16, "num_key_value_heads": 4}
TOPICS = ["the river", "the green stone", "the old bridge", "the tall tree", "the quiet town", "the long road", "the cold lake", "the red door"]


def build_model(dest: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    from modelmgr.testing import build_tiny_model

    build_tiny_model(dest, seed=seed)  # tokenizer and template; the weights are replaced
    tokenizer = AutoTokenizer.from_pretrained(dest)
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=2048, tie_word_embeddings=True, initializer_range=0.2, **SHAPE, **ids)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(**ids)
    for stale in dest.glob("*.safetensors"):
        stale.unlink()
    model.save_pretrained(dest)
    return dest


def cache_model(folder: Path, env: dict[str, str]) -> int:
    """Pull ``folder`` as MODEL_ID into the cache ``env`` names; returns its parameter count."""
    from modelmgr.fetch.pull import pull
    from modelmgr.project.config import load_config
    from modelmgr.run.modelinfo import read_model_info
    from modelmgr.testing import LocalHub

    with LocalHub() as hub:
        hub.add_repo(MODEL_ID, folder)
        pull(MODEL_ID, config=load_config(flag_endpoints=(hub.url,), environ=env))
    return read_model_info(folder).parameter_count


class Server:
    def __init__(self, name: str, command: list[str], env: dict[str, str], port: int, log: Path):
        self.name, self.command, self.env, self.port, self.log = name, command, env, port, log
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> "Server":
        with open(self.log, "wb") as out:
            # A session of its own: stopping it stops whatever it started, too.
            self.process = subprocess.Popen(self.command, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 180
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name} did not come up:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        import signal

        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def one_stream(client, index: int, max_tokens: int) -> dict:
    messages = [{"role": "user", "content": f"Tell me about {TOPICS[index % len(TOPICS)]}, number {index}."}]
    started = time.perf_counter()
    first = None
    pieces = []
    usage = None
    stream = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=max_tokens, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.perf_counter()
            pieces.append(chunk.choices[0].delta.content)
        if getattr(chunk, "usage", None):
            usage = chunk.usage.completion_tokens
    ended = time.perf_counter()
    return {"start": started, "end": ended, "ttft": (first or ended) - started, "tokens": usage if usage else len(pieces), "text": "".join(pieces)}


def round_of(server: Server, clients: int, requests: int, max_tokens: int) -> dict:
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="bench", max_retries=0, timeout=600)
    results: list[dict] = []
    errors: list[str] = []

    def worker(number: int) -> None:
        for r in range(requests):
            try:
                results.append(one_stream(client, number * requests + r, max_tokens))
            except Exception as exc:  # noqa: BLE001 - reported, not hidden
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"{server.name}, {clients} clients: {errors[0]}")
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    ttfts = sorted(r["ttft"] for r in results)
    tokens = sum(r["tokens"] for r in results)
    row = {"clients": clients, "tokens": tokens, "wall": wall, "tps": tokens / wall, "p50": percentile(ttfts, 50), "p95": percentile(ttfts, 95)}
    print(f"  {server.name:28} {clients} clients: {row['tps']:6.1f} tok/s, ttft p50 {row['p50'] * 1000:6.0f} ms, "
          f"p95 {row['p95'] * 1000:6.0f} ms ({tokens} tokens in {wall:.1f} s)", file=sys.stderr)
    return row


def percentile(values: list[float], pct: float) -> float:
    """Nearest rank: with few samples, a value that was measured, not interpolated."""
    rank = max(1, -(-len(values) * pct // 100))
    return values[int(rank) - 1]


def measure(server: Server, client_counts: list[int], requests: int, max_tokens: int) -> list[dict]:
    with server:
        round_of(server, 1, 1, 4)  # warm-up: loads the model
        return [round_of(server, n, requests, max_tokens) for n in client_counts]


def run_latency(server: Server, times: int = 5) -> list[float]:
    """Seconds from starting `modelmgr run MODEL PROMPT` to its first byte of reply on stdout,
    with the model warm in the server at MODELMGR_HOST."""
    env = {**server.env, "MODELMGR_HOST": f"127.0.0.1:{server.port}"}
    seconds = []
    for _ in range(times):
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "modelmgr", "run", MODEL_ID, "Hi", "--max-new-tokens", "4", "--temperature", "0"],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
        process.stdout.read(1)
        seconds.append(time.perf_counter() - started)
        process.communicate(timeout=60)
    print(f"  modelmgr run through the server: first token after {[round(s, 3) for s in seconds]} s", file=sys.stderr)
    return sorted(seconds)


def render(rows: dict[str, list[dict]], params: int, args: argparse.Namespace, load: str, latency: list[float]) -> str:
    import torch

    names = list(rows)
    lines = [
        SECTION,
        "",
        f"Measured {datetime.date.today().isoformat()} by `python benchmarks/bench_serve.py` on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, transformers {metadata.version('transformers')}, openai {metadata.version('openai')}. Model: a seeded random "
        f"Llama of {params / 1e6:.0f}M parameters (hidden {SHAPE['hidden_size']}, {SHAPE['num_hidden_layers']} layers), float32 on the CPU, one "
        f"snapshot in one Hub cache for both servers. Each client streams {args.requests} greedy chat completions of at most {args.max_tokens} "
        f"tokens, one after another, each with its own prompt; one run per row, one server at a time after a warm-up, on a machine shared with other work. Load average {load}.",
        "",
        "| server | clients | total tokens/s | time to first token p50 | p95 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in names:
        for row in rows[name]:
            lines.append(f"| {name} | {row['clients']} | {row['tps']:.1f} | {row['p50'] * 1000:.0f} ms | {row['p95'] * 1000:.0f} ms |")
    lines.append("")
    for base in names[1:]:
        ratios = ", ".join(
            f"{mine['clients']} clients {mine['tps'] / theirs['tps']:.1f}x" for mine, theirs in zip(rows[names[0]], rows[base])
        )
        lines.append(f"modelmgr serve's throughput over {base}'s: {ratios}.")
    lines += [
        "",
        f"With the model warm in the server, `modelmgr run {MODEL_ID} Hi` printed its first token {latency[len(latency) // 2] * 1000:.0f} ms "
        f"(median of {len(latency)}; best {latency[0] * 1000:.0f} ms, worst {latency[-1] * 1000:.0f} ms) after the process started: "
        "Python, click, the config, one probe of the server and the request; no torch.",
        "",
        "modelmgr serve batches the clients of one model continuously (one forward pass per token for all of them, newcomers "
        "joining between two tokens), so its throughput grows with the clients until the CPU's arithmetic is the limit: on these 2 cores "
        "a step for 8 sequences took about 3 times one for 1 (measured on the bare model), so 4 and 8 clients come out alike. "
        "transformers serve without `--continuous-batching` runs one generate() per request on its own thread. "
        "modelmgr serve also sets OMP_WAIT_POLICY=PASSIVE for itself: on a busy machine, torch's spinning threads made a "
        "batched matmul 10-20x slower while a sibling thread was descheduled; the passive row gives transformers serve the same.",
        "",
        "Reproduce:",
        "",
        "```",
        "python benchmarks/bench_serve.py",
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    from modelmgr.testing import free_port

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--requests", type=int, default=2, help="requests each client sends in a row")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--continuous-batching", action="store_true", help="also measure transformers serve --continuous-batching")
    parser.add_argument("--no-passive-baseline", action="store_true", help="skip transformers serve with OMP_WAIT_POLICY=PASSIVE")
    parser.add_argument("--no-write", action="store_true", help="print the section, leave docs/benchmarks.md alone")
    args = parser.parse_args()
    transformers_cli = shutil.which("transformers", path=str(Path(sys.executable).parent)) or shutil.which("transformers")
    if transformers_cli is None:
        raise SystemExit("the transformers CLI is not installed in this environment")

    with tempfile.TemporaryDirectory(prefix="modelmgr-bench-serve-") as tmp:
        root = Path(tmp)
        (root / "config.toml").write_text("")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MODELMGR_", "HF_", "OMP_"))},
            "HF_HUB_CACHE": str(root / "hub"), "HF_HOME": str(root / "hf"), "MODELMGR_CONFIG": str(root / "config.toml"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        print("building the benchmark model ...", file=sys.stderr)
        params = cache_model(build_model(root / "model"), env)
        env["HF_HUB_OFFLINE"] = "1"
        servers = []
        port = free_port()
        servers.append(Server("modelmgr serve (cpu)", [sys.executable, "-m", "modelmgr", "serve", "--port", str(port)],
                              {**env, "MODELMGR_BACKEND": "cpu"}, port, root / "modelmgr.log"))
        port = free_port()
        servers.append(Server("transformers serve", [transformers_cli, "serve", "--device", "cpu", "--port", str(port), MODEL_ID],
                              env, port, root / "transformers.log"))
        if not args.no_passive_baseline:
            # modelmgr serve sets OMP_WAIT_POLICY=PASSIVE for itself (see modelmgr/serve/server.py);
            # the same setting for transformers serve shows what is left of the difference.
            port = free_port()
            servers.append(Server("transformers serve, OMP_WAIT_POLICY=PASSIVE",
                                  [transformers_cli, "serve", "--device", "cpu", "--port", str(port), MODEL_ID],
                                  {**env, "OMP_WAIT_POLICY": "PASSIVE"}, port, root / "transformers-passive.log"))
        if args.continuous_batching:
            port = free_port()
            servers.append(Server("transformers serve --continuous-batching",
                                  [transformers_cli, "serve", "--device", "cpu", "--continuous-batching", "--port", str(port), MODEL_ID],
                                  env, port, root / "transformers-cb.log"))
        before = os.getloadavg()[0]
        rows = {}
        with servers[0]:
            round_of(servers[0], 1, 1, 4)  # the model loads: the runs below find it warm
            latency = run_latency(servers[0])
        for server in servers:
            rows[server.name] = measure(server, args.clients, args.requests, args.max_tokens)
        load = f"{before:.1f} before, {os.getloadavg()[0]:.1f} after (other work on the machine shows as spread)"
    section = render(rows, params, args, load, latency)
    print(section)
    if not args.no_write:
        write_section(SECTION, section)
        print(f"written to {DOC.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
