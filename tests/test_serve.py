"""`modelmgr serve` end to end: a real server process on 127.0.0.1, driven by the real openai
client, generating with real transformers on the tiny model; `ps`, `stop` and `run` through it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelmgr.testing import TINY_MODEL_ID, LocalHub, build_tiny_model, free_port, tiny_model_files

from .helpers import cli

openai = pytest.importorskip("openai")
pytest.importorskip("starlette")
pytest.importorskip("transformers")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SECOND_ID = "modelmgr-test/tiny-llama-b"
KEY = "test-key-3f9a"
QUESTION = [{"role": "user", "content": "Where is the river?"}]
# The tiny model's estimate is ~401 MiB (mostly torch's runtime): the budget holds one model, not two.
BUDGET = "600M"


@dataclass
class Served:
    url: str
    port: int
    env: dict[str, str]
    process: subprocess.Popen
    log: Path

    def client(self, key: str = KEY):
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=60)

    def get(self, path: str):
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {KEY}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def ps(self) -> list[dict]:
        return self.get("/api/ps")["models"]

    def wait_for(self, condition, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out; ps: {self.ps()}"
            time.sleep(0.1)


def run_server(root: Path, port: int, env: dict, *args: str):
    """A `modelmgr serve` process for a module of tests: yielded once /health answers, stopped after."""
    log = root / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "modelmgr", "serve", *args], env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Served(f"http://127.0.0.1:{port}", port, env, process, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if server.get("/health")["status"] == "ok":
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server did not come up:\n" + log.read_text()
                time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    from modelmgr.fetch.pull import pull
    from modelmgr.project.config import load_config

    root = tmp_path_factory.mktemp("serve")
    cache, config_file = root / "hub", root / "config.toml"
    # `echo` is the second model on the example plugin's backend: a third party's, which does not batch.
    config_file.write_text(f'[models.tiny]\nid = "{TINY_MODEL_ID}"\n\n[models.echo]\nid = "{SECOND_ID}"\nbackend = "example"\n')
    environ = {"HF_HUB_CACHE": str(cache), "MODELMGR_CONFIG": str(config_file)}
    with LocalHub() as hub:
        hub.add_repo(TINY_MODEL_ID, tiny_model_files())
        hub.add_repo(SECOND_ID, build_tiny_model(root / "second", seed=1))
        for repo_id in (TINY_MODEL_ID, SECOND_ID):
            pull(repo_id, config=load_config(flag_endpoints=(hub.url,), environ=environ))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MODELMGR_", "HF_"))},
        **environ, "HF_HUB_OFFLINE": "1", "MODELMGR_API_KEY": KEY, "MODELMGR_HOST": f"127.0.0.1:{port}",
    }
    yield from run_server(root, port, env, "--max-memory", BUDGET)


def chat(served: Served, messages=QUESTION, *, max_tokens: int = 12, temperature: float = 0, **kwargs) -> str:
    reply = served.client().chat.completions.create(model=TINY_MODEL_ID, messages=messages, temperature=temperature,
                                                    max_tokens=max_tokens, **kwargs)
    return reply.choices[0].message.content


def test_models_lists_the_cache_and_the_aliases(served: Served) -> None:
    client = served.client()
    ids = [model.id for model in client.models.list().data]
    assert TINY_MODEL_ID in ids and SECOND_ID in ids and "tiny" in ids
    assert client.models.retrieve(TINY_MODEL_ID).id == TINY_MODEL_ID
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nobody/nothing")


def test_chat_streamed_and_text_completions(served: Served) -> None:
    client = served.client()
    reply = client.chat.completions.create(model=TINY_MODEL_ID, messages=QUESTION, temperature=0, max_tokens=12)
    text = reply.choices[0].message.content
    assert text and reply.choices[0].finish_reason == "length" and reply.object == "chat.completion"
    assert reply.usage.completion_tokens == 12 and reply.usage.prompt_tokens > 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 12

    stream = client.chat.completions.create(model="tiny", messages=QUESTION, temperature=0, max_tokens=12,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text  # the alias is the same model
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12

    completion = client.completions.create(model=TINY_MODEL_ID, prompt="The river", max_tokens=6, temperature=0)
    assert completion.choices[0].text and completion.usage.completion_tokens == 6
    assert completion.usage.prompt_tokens < reply.usage.prompt_tokens  # raw text: no chat template around it

    sampled = [chat(served, temperature=1.0, seed=seed) for seed in (7, 7, 8)]
    assert sampled[0] == sampled[1] != sampled[2]  # a seed repeats a sampled reply, in a batch too

    stopped = client.chat.completions.create(model=TINY_MODEL_ID, messages=QUESTION, temperature=0, max_tokens=12, stop=[text[3:6]])
    assert stopped.choices[0].message.content == text[:3] and stopped.choices[0].finish_reason == "stop"


def test_eight_concurrent_streams_each_get_their_own_text(served: Served) -> None:
    prompts = [[{"role": "user", "content": f"Tell me about stone number {i}."}] for i in range(8)]
    alone = [chat(served, p, max_tokens=24) for p in prompts]
    assert len(set(alone)) == 8
    got: dict[int, str] = {}
    in_flight: list[int] = []

    def stream(index: int) -> None:
        chunks = served.client().chat.completions.create(model=TINY_MODEL_ID, messages=prompts[index], temperature=0,
                                                         max_tokens=24, stream=True)
        pieces = []
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                if not pieces:
                    in_flight.append(sum(m["running"] for m in served.ps()))
                pieces.append(chunk.choices[0].delta.content)
        got[index] = "".join(pieces)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert [got.get(i) for i in range(8)] == alone  # batched, each stream is exactly its own reply
    assert max(in_flight) > 1, "the streams ran together, not one after another"
    assert served.ps()[0]["max_batch"] == 8


def test_a_backend_that_does_not_batch_takes_its_requests_in_turn(served: Served) -> None:
    pytest.importorskip("modelmgr_example")
    got: dict[int, str] = {}

    def ask(index: int) -> None:
        reply = served.client().chat.completions.create(model="echo", messages=[{"role": "user", "content": f"one two {index}"}])
        got[index] = reply.choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert got == {i: f"{i} two one" for i in range(4)}
    echo = [m for m in served.ps() if m["name"] == "echo"]
    assert echo and (echo[0]["backend"], echo[0]["max_batch"]) == ("example", 1)
    assert stop_via_api(served, "echo")


def stop_via_api(served: Served, name: str) -> bool:
    from modelmgr.serve.client import Client
    from modelmgr.serve.settings import Address

    return Client(Address("127.0.0.1", served.port), KEY).stop(name) == "unloaded"


def test_a_client_that_leaves_mid_stream_frees_its_slot(served: Served) -> None:
    import http.client

    chat(served)  # loaded
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    body = {"model": TINY_MODEL_ID, "messages": QUESTION, "max_tokens": 4000, "temperature": 1.0, "seed": 1, "stream": True}
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    for _ in range(3):
        assert response.readline().startswith(b"data: ")
        response.readline()
    assert served.ps()[0]["running"] == 1
    connection.close()  # the client goes away, 4000 tokens early
    served.wait_for(lambda: served.ps()[0]["running"] == 0, timeout=10)
    assert chat(served)  # and the server serves on


def test_errors_are_openai_shaped_and_the_server_keeps_serving(served: Served) -> None:
    def post(body: bytes, key: str = KEY) -> tuple[int, dict]:
        request = urllib.request.Request(f"{served.url}/v1/chat/completions", data=body, method="POST",
                                         headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    status, body = post(b'{"model": "x", "messages": [')
    assert status == 400 and "not valid JSON" in body["error"]["message"] and body["error"]["type"] == "invalid_request_error"
    client = served.client()
    with pytest.raises(openai.BadRequestError) as missing:
        client.chat.completions.create(model=TINY_MODEL_ID, messages=None)  # type: ignore[arg-type]
    assert missing.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=TINY_MODEL_ID, messages=QUESTION, max_tokens=10**6)  # over the cap
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="nobody/nothing", messages=QUESTION)
    assert unknown.value.body["code"] == "model_not_found" and "modelmgr pull nobody/nothing" in unknown.value.body["message"]
    with pytest.raises(openai.AuthenticationError) as wrong:
        served.client(key="wrong").chat.completions.create(model=TINY_MODEL_ID, messages=QUESTION)
    assert wrong.value.body["code"] == "invalid_api_key"
    status, body = post(b"{}", key="")
    assert status == 401 and KEY not in json.dumps(body)
    assert chat(served)
    assert KEY not in served.log.read_text()


def test_keep_alive_unloads_an_idle_model(served: Served) -> None:
    chat(served, extra_body={"keep_alive": "1s"})
    assert [m["name"] for m in served.ps()] == [TINY_MODEL_ID]
    served.wait_for(lambda: not served.ps(), timeout=10)


def test_a_budget_for_one_model_unloads_the_least_recently_used(served: Served) -> None:
    chat(served)
    assert [m["name"] for m in served.ps()] == [TINY_MODEL_ID]
    served.client().chat.completions.create(model=SECOND_ID, messages=QUESTION, max_tokens=4)
    assert [m["name"] for m in served.ps()] == [SECOND_ID]


def test_ps_and_stop_go_through_the_server(served: Served, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELMGR_HOST", f"127.0.0.1:{served.port}")
    monkeypatch.setenv("MODELMGR_API_KEY", KEY)
    chat(served)
    listing = cli(capsys, "ps")
    assert listing.code == 0, listing.err
    header, row = listing.out.splitlines()[:2]
    assert header.split() == ["NAME", "BACKEND", "DEVICE", "DTYPE", "SIZE", "UNLOADS"]
    assert row.startswith(TINY_MODEL_ID) and " cpu " in row and "float32" in row and " in " in row
    assert json.loads(cli(capsys, "ps", "--json").out)[0]["backend"] == "cpu"
    assert cli(capsys, "stop", TINY_MODEL_ID).out == f"Unloaded {TINY_MODEL_ID}.\n"
    assert not served.ps() and cli(capsys, "ps").out == "No models loaded.\n"
    gone = cli(capsys, "stop", TINY_MODEL_ID)
    assert gone.code == 1 and "is not loaded" in gone.err and gone.err.count("\n") == 1


def test_run_goes_through_a_running_server(served: Served) -> None:
    args = [sys.executable, "-m", "modelmgr", "run", TINY_MODEL_ID, "Where is the river?", "--temperature", "0", "--max-new-tokens", "12"]
    expected = chat(served)  # also loads the model: this is the "second run"
    started = time.perf_counter()
    process = subprocess.Popen(args, env=served.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    first = process.stdout.read(1)
    to_first = time.perf_counter() - started
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert (first + out).decode() == expected + "\n"
    assert b"Using the server at" in err and b"Loading" not in err
    # The issue asks for the first token within 0.5 s; timing is proven in benchmarks, so the
    # bound here is generous and the measure goes to the test's output.
    print(f"\nmodelmgr run through the server: first token {to_first:.3f} s after the process started")
    assert to_first < 10
    as_json = subprocess.run([*args, "--json"], env=served.env, capture_output=True, timeout=60)
    data = json.loads(as_json.stdout)
    assert data["reply"] == expected and (data["backend"], data["device"], data["dtype"]) == ("cpu", "cpu", "float32")
    assert data["completion_tokens"] == 12 and data["time_to_first_token"] > 0
    alone = subprocess.run([*args, "--no-server"], env=served.env, capture_output=True, timeout=120)
    assert alone.returncode == 0 and b"Loading" in alone.stderr and alone.stdout.decode() == expected + "\n"


def test_run_through_the_server_imports_no_heavy_library(served: Served) -> None:
    code = (
        "import sys\nfrom modelmgr.cli import main\ntry:\n    main(['run', %r, 'hi', '--max-new-tokens', '2'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'starlette', 'uvicorn', 'openai', 'httpx') if m in sys.modules))\n"
    ) % TINY_MODEL_ID
    completed = subprocess.run([sys.executable, "-c", code], env=served.env, capture_output=True, text=True, timeout=60)
    assert completed.stdout.strip().splitlines()[-1] == "[]", completed.stderr


def test_serve_refuses_a_public_address_without_a_key(capsys: pytest.CaptureFixture) -> None:
    outcome = cli(capsys, "serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert outcome.code == 1 and outcome.err.count("\n") == 1
    assert outcome.err.startswith("Error: refusing to listen on 0.0.0.0") and "--api-key" in outcome.err


# --- a second server: one request at a time, an alias that says trust_remote_code -------------

LONG_ID = "modelmgr-test/tiny-llama-long"  # the tiny model with room for long replies (RoPE has no hard limit)
CUSTOM_ID = "org/custom"  # a custom model_type: it loads only by running the repo's code


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory):
    import shutil

    from modelmgr.fetch.pull import pull
    from modelmgr.project.config import load_config

    root = tmp_path_factory.mktemp("serve-single")
    cache, config_file = root / "hub", root / "config.toml"
    long = Path(shutil.copytree(tiny_model_files(), root / "long"))
    config = json.loads((long / "config.json").read_text())
    config["max_position_embeddings"] = 65536
    (long / "config.json").write_text(json.dumps(config))
    environ = {"HF_HUB_CACHE": str(cache), "MODELMGR_CONFIG": str(config_file)}
    config_file.write_text("")  # the alias needs the commit, known once the repo is up
    with LocalHub() as hub:
        hub.add_repo(LONG_ID, long)
        commit = hub.add_repo(CUSTOM_ID, build_tiny_model(root / "custom", auto_map=True))
        for repo_id in (LONG_ID, CUSTOM_ID):
            pull(repo_id, config=load_config(flag_endpoints=(hub.url,), environ=environ))
    config_file.write_text(f'[models.custom]\nid = "{CUSTOM_ID}"\nrevision = "{commit}"\ntrust_remote_code = true\n')
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MODELMGR_", "HF_"))},
        **environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(root / "hf-home"), "MODELMGR_HOST": f"127.0.0.1:{port}",
    }
    yield from run_server(root, port, env, "--parallel", "1")


def _post(served: Served, body: dict):
    """A request on a raw connection, so the test can walk away from it."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    return connection


LONG_REPLY = {"model": LONG_ID, "messages": QUESTION, "max_tokens": 4000, "temperature": 1.0, "seed": 1}


def test_a_client_that_leaves_before_a_whole_reply_frees_its_slot(single: Served) -> None:
    single.client().chat.completions.create(model=LONG_ID, messages=QUESTION, max_tokens=2)  # loaded
    connection = _post(single, LONG_REPLY)  # not streamed: nothing is written until the end
    single.wait_for(lambda: single.ps()[0]["running"] == 1)
    time.sleep(0.5)
    connection.close()  # ~4000 tokens (tens of seconds here) early
    single.wait_for(lambda: single.ps()[0]["running"] == 0, timeout=5)
    assert single.client().chat.completions.create(model=LONG_ID, messages=QUESTION, max_tokens=2).choices[0].message.content


def test_a_client_that_leaves_the_queue_gives_up_its_place(single: Served) -> None:
    single.client().chat.completions.create(model=LONG_ID, messages=QUESTION, max_tokens=2)
    first = _post(single, {**LONG_REPLY, "stream": True})
    response = first.getresponse()
    assert response.status == 200 and response.readline().startswith(b"data: ")
    second = _post(single, LONG_REPLY)  # --parallel 1: it waits for the first
    single.wait_for(lambda: single.ps()[0]["waiting"] == 1)
    second.close()
    single.wait_for(lambda: single.ps()[0]["waiting"] == 0, timeout=5)
    assert single.ps()[0]["running"] == 1  # the first still generates
    first.close()
    single.wait_for(lambda: single.ps()[0]["running"] == 0, timeout=10)


def test_an_alias_does_not_let_the_server_run_remote_code(single: Served) -> None:
    with pytest.raises(openai.PermissionDeniedError) as refused:
        single.client().chat.completions.create(model="custom", messages=QUESTION, max_tokens=2)
    assert refused.value.body["code"] == "unsafe_model"
    assert "--trust-remote-code" in refused.value.body["message"] and "[models.custom]" in refused.value.body["message"]
    assert "remote code was executed" not in single.log.read_text()


def test_modelmgr_run_still_honours_the_alias(single: Served) -> None:
    from modelmgr.errors import UnsafeModel
    from modelmgr.project.config import load_config
    from modelmgr.run.plan import plan_load

    config = load_config(environ={k: v for k, v in single.env.items() if k.startswith(("MODELMGR_", "HF_"))})
    assert plan_load("custom", config=config).options.trust_remote_code  # `modelmgr run custom`: as before
    with pytest.raises(UnsafeModel):
        plan_load("custom", config=config, alias_may_trust=False)


# --- the context, keep_alive, and `run`'s key -----------------------------------------------------

def test_a_prompt_over_the_context_is_refused_and_max_tokens_is_cut_to_fit(served: Served) -> None:
    client = served.client()
    for create in (lambda: client.completions.create(model=TINY_MODEL_ID, prompt="stone " * 600, max_tokens=4),
                   lambda: client.chat.completions.create(model=TINY_MODEL_ID, messages=[{"role": "user", "content": "stone " * 600}], max_tokens=4)):
        with pytest.raises(openai.BadRequestError) as over:
            create()
        assert over.value.body["code"] == "context_length_exceeded" and "512 tokens" in over.value.body["message"]
    reply = client.completions.create(model=TINY_MODEL_ID, prompt="stone " * 480, max_tokens=100, temperature=0)
    assert reply.usage.prompt_tokens > 412  # so 100 more would not fit in 512
    assert reply.usage.prompt_tokens + reply.usage.completion_tokens <= 512
    assert reply.usage.completion_tokens < 100
    assert chat(served)


def test_keep_alive_holds_for_its_request_only(served: Served) -> None:
    chat(served, extra_body={"keep_alive": "-1"})
    assert served.ps()[0]["keep_alive"] is None  # forever
    chat(served, extra_body={"keep_alive": "1h"})
    assert served.ps()[0]["keep_alive"] == 3600
    chat(served)  # names none: the server's default again, as ollama's
    assert served.ps()[0]["keep_alive"] == 300


def test_run_sends_no_key_to_the_health_probe(served: Served) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from modelmgr.serve.client import Client
    from modelmgr.serve.settings import Address

    seen: list[str | None] = []

    class Probe(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.headers.get("Authorization"))
            body = b'{"status": "ok"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    listener = ThreadingHTTPServer(("127.0.0.1", 0), Probe)
    thread = threading.Thread(target=listener.serve_forever, daemon=True)
    thread.start()
    try:
        assert Client(Address("127.0.0.1", listener.server_address[1]), "secret-key").is_up()
    finally:
        listener.shutdown()
        listener.server_close()
    assert seen == [None]
    assert Client(Address("127.0.0.1", served.port), "wrong").is_up()  # /health needs no key


def test_run_with_a_wrong_key_says_which_variable_and_no_server(served: Served) -> None:
    env = {**served.env, "MODELMGR_API_KEY": "wrong"}
    completed = subprocess.run([sys.executable, "-m", "modelmgr", "run", TINY_MODEL_ID, "hi", "--max-new-tokens", "2"],
                               env=env, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 1
    assert "MODELMGR_API_KEY" in completed.stderr and "--no-server" in completed.stderr and "wrong" not in completed.stderr
