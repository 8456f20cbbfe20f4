"""Generation on a worker thread, with text handed to the caller as each token arrives.

``model.generate`` blocks until the reply is complete, so it runs on a thread and pushes text
through a queue. The streamer decodes eagerly (transformers' TextIteratorStreamer waits for a
space before it shows a word) and holds back only a split multi-byte character. A stopping
criterion watches an Event, so Ctrl-C ends generation at the next token instead of orphaning a
thread that keeps the CPU busy.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Iterator, Sequence

from modelmgr import BackendError, Generation, GenerationSettings, Message, plain_prompt


_DONE = object()
_REPLACEMENT = "\ufffd"  # what a decoder shows for an incomplete UTF-8 sequence


class _QueueStreamer:
    """The streamer protocol of ``generate`` (put/end), decoding into a queue."""

    def __init__(self, tokenizer: Any, out: "queue.Queue[object]"):
        self.tokenizer = tokenizer
        self.out = out
        self.prompt_seen = False
        self.tokens: list[int] = []
        self.emitted = 0

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate's first call hands over the prompt itself
            self.prompt_seen = True
            return
        self.tokens.extend(int(token) for token in value.reshape(-1).tolist())
        self._flush(final=False)

    def end(self) -> None:
        self._flush(final=True)

    def _flush(self, *, final: bool) -> None:
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if text.endswith(_REPLACEMENT) and not final:
            return
        if len(text) > self.emitted:
            self.out.put(text[self.emitted:])
        # Decoding a whole line each time keeps spacing right (tokenizers fold spaces into the
        # next token); starting afresh after a newline keeps the cost per token small.
        if text.endswith("\n") or final:
            self.tokens.clear()
            self.emitted = 0
        else:
            self.emitted = len(text)


def encode_messages(tokenizer: Any, messages: Sequence[Message]) -> dict[str, Any]:
    """Token tensors for the conversation: through the chat template when the tokenizer has one."""
    if getattr(tokenizer, "chat_template", None):
        try:
            encoded = tokenizer.apply_chat_template(
                [dict(message) for message in messages], add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
        except Exception as exc:  # jinja2's TemplateError: templates raise on what they do not support
            raise BackendError(
                f"the model's chat template refused the conversation: {exc}. Some templates take no system "
                "prompt (drop --system) or need turns to alternate user/assistant."
            ) from exc
    else:
        encoded = tokenizer(plain_prompt(messages), return_tensors="pt")
    return dict(encoded)


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """The model's end-of-sequence ids and the tokenizer's (a chat template may end turns with
    a token the base model's generation_config does not list)."""
    ids: list[int] = []
    for value in (getattr(model.generation_config, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        for token in value if isinstance(value, (list, tuple)) else [value]:
            if token is not None and token not in ids:
                ids.append(int(token))
    return ids


def generation_kwargs(model: Any, tokenizer: Any, settings: GenerationSettings) -> dict[str, Any]:
    import copy

    config = copy.deepcopy(model.generation_config)
    config.max_new_tokens = settings.max_new_tokens
    config.max_length = None  # max_new_tokens rules; a stale max_length=20 in a config would cut replies
    if settings.greedy:
        # Clear sampling defaults the model's config may carry, which greedy decoding ignores and
        # transformers warns about.
        config.do_sample = False
        config.temperature = config.top_p = config.top_k = None
    else:
        config.do_sample = True
        config.temperature = settings.temperature
        if settings.top_p is not None:
            config.top_p = settings.top_p
    eos = _eos_ids(model, tokenizer)
    if eos:
        config.eos_token_id = eos
    if config.pad_token_id is None:
        config.pad_token_id = getattr(tokenizer, "pad_token_id", None) or (eos[0] if eos else None)
    return {"generation_config": config}


class TransformersGeneration(Generation):
    def __init__(self, model: Any, tokenizer: Any, messages: Sequence[Message], settings: GenerationSettings, *, text: str | None = None):
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        stop = threading.Event()

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):  # noqa: ANN001 - transformers' signature
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

        encoded = dict(tokenizer(text, return_tensors="pt")) if text is not None else encode_messages(tokenizer, messages)
        inputs = {key: value.to(model.device) for key, value in encoded.items()}
        self.prompt_tokens = int(inputs["input_ids"].shape[-1])
        self.completion_tokens = 0
        self._stop = stop
        self._queue: queue.Queue[object] = queue.Queue()
        self._error: BaseException | None = None
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        kwargs = {
            **inputs,
            **generation_kwargs(model, tokenizer, settings),
            "streamer": _QueueStreamer(tokenizer, self._queue),
            "stopping_criteria": StoppingCriteriaList([_Cancelled()]),
        }
        self._thread = threading.Thread(target=self._run, args=(model, kwargs), name="modelmgr-generate", daemon=True)
        self._started = False

    def _run(self, model: Any, kwargs: dict[str, Any]) -> None:
        try:
            output = model.generate(**kwargs)
            self.completion_tokens = int(output.shape[-1]) - self.prompt_tokens
        except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread
            self._error = exc
        finally:
            self._queue.put(_DONE)

    def __iter__(self) -> Iterator[str]:
        if self._started:
            raise RuntimeError("a Generation can be iterated only once")
        self._started = True
        self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if item is _DONE:
                    break
                yield item  # type: ignore[misc]
        finally:
            # Reached on normal completion, on Ctrl-C and when the consumer stops early.
            self.cancel()
        if self._error is not None:
            raise BackendError(f"generation failed: {type(self._error).__name__}: {self._error}") from self._error

    def cancel(self) -> None:
        self._stop.set()
        if self._started and self._thread.is_alive():
            self._thread.join()
