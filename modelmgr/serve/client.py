"""A client for a running `modelmgr serve`, on the standard library alone: `ps`, `stop` and `run`
use it, and must start in a fraction of a second (no openai, no httpx, no torch).

``RemoteBackend`` is a Backend whose generate() streams from the server, so `run`'s one-shot
reply and chat loop work unchanged on top of it.
"""
from __future__ import annotations

import http.client
import json
from typing import Any, Iterator, Sequence

from modelmgr.errors import ModelmgrError
from modelmgr.run.api import Backend, Generation, GenerationSettings, LoadedModel, Message
from modelmgr.serve.settings import Address

PROBE_TIMEOUT = 0.5  # seconds: on loopback a running server answers in about a millisecond


class ServerError(ModelmgrError):
    pass


class Client:
    def __init__(self, address: Address, api_key: str | None = None, *, timeout: float = 600):
        self.address = address
        self.api_key = api_key
        self.timeout = timeout

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        host = self.address.client_url.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")
        return http.client.HTTPConnection(host, self.address.port, timeout=timeout)

    def _headers(self, *, key: bool = True) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key and self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def request(self, method: str, path: str, body: Any = None, *, timeout: float | None = None,
                key: bool = True) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """``key=False`` sends no API key: for /health, which needs none, and which may be asked
        of whatever listens at MODELMGR_HOST before anything says it is our server."""
        connection = self._connect(self.timeout if timeout is None else timeout)
        try:
            connection.request(method, path, body=None if body is None else json.dumps(body), headers=self._headers(key=key))
            return connection, connection.getresponse()
        except OSError:
            connection.close()
            raise

    def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            connection, response = self.request(method, path, body)
        except OSError as exc:
            raise ServerError(f"no server answers at {self.address.client_url} ({exc.strerror or exc}). Start one with modelmgr serve, "
                              "or point MODELMGR_HOST at it.") from None
        try:
            data = _read_json(response)
        finally:
            connection.close()
        if response.status == 401:
            raise ServerError(_refused(self))
        if response.status >= 400:
            raise ServerError(f"the server at {self.address.client_url} answered {response.status}: {_message(data)}")
        return data

    def is_up(self) -> bool:
        """Whether a modelmgr server answers at the address, asked with a short timeout."""
        try:
            connection, response = self.request("GET", "/health", timeout=PROBE_TIMEOUT, key=False)
        except OSError:
            return False
        try:
            data = _read_json(response)
        except (OSError, ServerError):
            return False
        finally:
            connection.close()
        return response.status == 200 and isinstance(data, dict) and data.get("status") == "ok"

    def ps(self) -> list[dict[str, Any]]:
        return self.call("GET", "/api/ps")["models"]

    def stop(self, model: str) -> str:
        return self.call("POST", "/api/stop", {"model": model})["status"]


def _read_json(response: http.client.HTTPResponse) -> Any:
    raw = response.read()
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        raise ServerError(f"the server sent something that is not JSON (HTTP {response.status}): is it a modelmgr server?") from None


def _refused(client: Client, *, run: bool = False) -> str:
    """A 401: the key this side sends (MODELMGR_API_KEY, or serve.api_key) is missing or not the server's."""
    why = "is not the key it was started with" if client.api_key else "is not set"
    also = ", or rerun with --no-server to load the model in this process" if run else ""
    return (f"the server at {client.address.client_url} wants an API key and MODELMGR_API_KEY (or serve.api_key) {why}: "
            f"set MODELMGR_API_KEY to the server's key{also}.")


def _message(data: Any) -> str:
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return str(data["error"].get("message"))
    return str(data)[:200]


class RemoteGeneration(Generation):
    """A streamed chat completion. Usage comes in the stream's last chunk (include_usage)."""

    def __init__(self, client: Client, model: str, messages: Sequence[Message], settings: GenerationSettings):
        self._client = client
        self._body = {
            "model": model, "messages": [dict(m) for m in messages], "stream": True, "stream_options": {"include_usage": True},
            "max_tokens": settings.max_new_tokens, "temperature": settings.temperature,
            **({"top_p": settings.top_p} if settings.top_p is not None else {}),
            **({"seed": settings.seed} if settings.seed is not None else {}),
        }
        self._connection: http.client.HTTPConnection | None = None

    def __iter__(self) -> Iterator[str]:
        try:
            self._connection, response = self._client.request("POST", "/v1/chat/completions", self._body)
        except OSError as exc:
            raise ServerError(f"lost the server at {self._client.address.client_url}: {exc.strerror or exc}. Rerun with --no-server.") from None
        try:
            if response.status == 401:
                raise ServerError(_refused(self._client, run=True))
            if response.status >= 400:
                raise ServerError(_message(_read_json(response)))
            for line in response:
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    break
                chunk = json.loads(payload)
                if "error" in chunk:
                    raise ServerError(_message(chunk))
                if chunk.get("usage"):
                    self.prompt_tokens = chunk["usage"]["prompt_tokens"]
                    self.completion_tokens = chunk["usage"]["completion_tokens"]
                for choice in chunk.get("choices", []):
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield text
        finally:
            self.cancel()

    def cancel(self) -> None:
        # Closing the connection is how a client cancels: the server stops generating for it.
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class RemoteBackend(Backend):
    name = "server"
    description = "a running modelmgr serve"

    def __init__(self, client: Client, model: str):
        self.client = client
        self.model = model

    def generate(self, loaded: LoadedModel, messages: Sequence[Message], settings: GenerationSettings) -> Generation:
        return RemoteGeneration(self.client, self.model, messages, settings)

    def loaded(self) -> LoadedModel:
        return LoadedModel(model=None, tokenizer=None, backend_name="server", device=self.client.address.client_url, dtype="")

    def served(self) -> LoadedModel:
        """How the server loaded the model (from its ps line), once it has."""
        for entry in self.client.ps():
            if self.model in (entry.get("name"), entry.get("model")):
                return LoadedModel(model=None, tokenizer=None, backend_name=entry["backend"], device=entry["device"],
                                   dtype=entry["dtype"], load_seconds=entry.get("load_seconds", 0.0), max_batch=entry.get("max_batch", 1))
        return self.loaded()
