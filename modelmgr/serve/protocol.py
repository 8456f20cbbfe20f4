"""The OpenAI wire format: requests checked field by field into plain dataclasses, and the
response, chunk and error objects built back. No web framework here, so it is tested alone."""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_TOKENS = 1024  # when a request names none; every request is also capped by the server
MAX_STOPS = 4  # as OpenAI
ROLES = ("system", "user", "assistant", "developer", "tool")


class ApiError(Exception):
    """An answer in OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


def client_closed() -> ApiError:
    """The client left before its reply (nginx's 499): nobody reads this answer."""
    return ApiError(499, "the client closed the connection before its reply.", code="client_closed_request")


def context_exceeded(limit: int, prompt_tokens: int, *, chat: bool) -> ApiError:
    what = "messages" if chat else "prompt"
    return ApiError(400, f"This model's maximum context length is {limit} tokens. However, your {what} resulted in {prompt_tokens} tokens, "
                         f"which leaves no room for a reply. Please reduce the length of the {what}.",
                    code="context_length_exceeded", param=what)


@dataclass(frozen=True)
class GenerateRequest:
    """A chat or text completion request, checked."""

    model: str
    messages: list[dict[str, str]] | None  # chat
    prompt: str | None  # text completion
    max_tokens: int
    temperature: float
    top_p: float | None
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    keep_alive: Any = None  # ollama's extension: how long the model stays loaded after this request (None: the server's default)
    echo: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad(f"the request body is not valid JSON: {exc}. Send a JSON object with Content-Type: application/json.") from None
    if not isinstance(data, dict):
        raise bad("the request body must be a JSON object.")
    return data


def _number(data: dict, key: str, *, low: float, high: float, default: float | None, integer: bool = False) -> Any:
    value = data.get(key)
    if value is None:
        return default
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise bad(f"'{key}' must be {kind} from {low:g} to {high:g}, not {value!r}.", key)
    return value


def _text(content: Any, where: str) -> str:
    """A message's content: a string, or a list of text parts (images and audio are refused)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad(f"{where} has a part this server cannot read: only text parts ({{\"type\": \"text\", \"text\": ...}}).", where)
            pieces.append(part["text"])
        return "".join(pieces)
    if content is None:
        return ""
    raise bad(f"{where} must be a string or a list of text parts.", where)


def _messages(data: dict) -> list[dict[str, str]]:
    messages = data.get("messages")
    if messages is None:
        raise bad("'messages' is required: a list of {\"role\": ..., \"content\": ...} objects.", "messages")
    if not isinstance(messages, list) or not messages:
        raise bad("'messages' must be a non-empty list.", "messages")
    out = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise bad(f"{where} needs a role: one of {', '.join(ROLES)}.", where)
        role = "system" if message["role"] == "developer" else message["role"]
        out.append({"role": role, "content": _text(message.get("content"), f"{where}.content")})
    return out


def parse_generate(data: dict[str, Any], *, chat: bool, max_tokens_cap: int) -> GenerateRequest:
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise bad("'model' is required: the ID of a model (GET /v1/models lists them).", "model")
    messages = _messages(data) if chat else None
    prompt = None
    if not chat:
        prompt = data.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise bad("'prompt' is required: one string (lists of prompts or token IDs are not supported).", "prompt")
    limit_key = "max_completion_tokens" if data.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _number(data, limit_key, low=1, high=max_tokens_cap, default=min(DEFAULT_MAX_TOKENS, max_tokens_cap), integer=True)
    if _number(data, "n", low=1, high=1, default=1, integer=True) != 1:
        raise bad("'n' must be 1.", "n")
    stop = data.get("stop")
    stops: tuple[str, ...] = ()
    if isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= MAX_STOPS:
        stops = tuple(stop)
    elif stop is not None:
        raise bad(f"'stop' must be a string or a list of at most {MAX_STOPS} strings.", "stop")
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise bad("'stream' must be true or false.", "stream")
    options = data.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad("'stream_options' must be an object.", "stream_options")
    return GenerateRequest(
        model=model.strip(),
        messages=messages,
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=_number(data, "temperature", low=0, high=2, default=1.0),
        top_p=_number(data, "top_p", low=0, high=1, default=None),
        seed=_number(data, "seed", low=-(2**63), high=2**63 - 1, default=None, integer=True),
        stop=tuple(s for s in stops if s),
        stream=stream,
        include_usage=bool(options.get("include_usage")),
        keep_alive=data.get("keep_alive"),
        echo=bool(data.get("echo")) and not chat,
    )


def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}


def completion_object(*, chat: bool, id: str, model: str, text: str, finish: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": id, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()), "model": model,
        "choices": [choice], "usage": usage(prompt_tokens, completion_tokens),
    }


def chunk_object(*, chat: bool, id: str, model: str, created: int, text: str | None = None, role: bool = False,
                 finish: str | None = None, usage_counts: dict[str, int] | None = None) -> dict[str, Any]:
    chunk: dict[str, Any] = {"id": id, "object": "chat.completion.chunk" if chat else "text_completion", "created": created, "model": model}
    if usage_counts is not None:
        chunk["choices"] = []
        chunk["usage"] = usage_counts
        return chunk
    if chat:
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
    else:
        chunk["choices"] = [{"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}]
    return chunk


def model_object(model_id: str, *, created: int, owned_by: str = "modelmgr") -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}
