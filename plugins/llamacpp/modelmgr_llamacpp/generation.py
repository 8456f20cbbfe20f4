"""A reply streamed from llama.cpp, token by token, through the model's own chat template.

The template comes from the GGUF header (``tokenizer.chat_template``) and is rendered by
llama-cpp-python's Jinja2ChatFormatter, the one its own chat completions use. Tokens come from
``Llama.generate`` (what create_completion runs on), so the prompt and completion counts are
exact and the loop stops at the model's end-of-generation tokens, at ``max_new_tokens``, at the
end of the context, or on ``cancel()``.
"""
from __future__ import annotations

import codecs
import random
from typing import Any, Iterator, Sequence

from modelmgr import BackendError, Generation, GenerationSettings, Message, plain_prompt

# llama.cpp's own sampling defaults, used where modelmgr's settings leave a choice open.
TOP_K, TOP_P, MIN_P = 40, 0.95, 0.05
RANDOM_SEED_BOUND = 2**32 - 1


def _token_text(model: Any, token: int) -> str:
    return model._model.token_get_text(token) if token >= 0 else ""  # noqa: SLF001 - what Llama itself does for its template


def render_prompt(model: Any, messages: Sequence[Message]) -> tuple[list[int], bool]:
    """The conversation as tokens, and whether a chat template made it."""
    template = model.metadata.get("tokenizer.chat_template")
    if not template:
        return model.tokenize(plain_prompt(messages).encode("utf-8"), add_bos=True, special=False), False
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(
        template=template, eos_token=_token_text(model, model.token_eos()), bos_token=_token_text(model, model.token_bos()),
    )
    try:
        rendered = formatter(messages=[dict(message) for message in messages])
    except Exception as exc:  # jinja2's TemplateError, or the template's own raise_exception
        raise BackendError(
            f"the model's chat template refused the conversation: {exc}. Some templates take no system prompt "
            "(drop --system) or need turns to alternate user/assistant."
        ) from exc
    # The template writes its own BOS when it wants one (added_special), as llama-cpp-python's chat does.
    return model.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True), True


def _is_end(model: Any, token: int) -> bool:
    """End of generation: EOS, or a turn-ending token the vocabulary marks (<|im_end|>, <|eot_id|>)."""
    import llama_cpp

    try:
        return bool(llama_cpp.llama_vocab_is_eog(model._model.vocab, token))  # noqa: SLF001 - as create_completion checks
    except AttributeError:
        return token == model.token_eos()


class LlamaGeneration(Generation):
    def __init__(self, model: Any, messages: Sequence[Message], settings: GenerationSettings):
        self.model = model
        self.settings = settings
        self.prompt, self.templated = render_prompt(model, messages)
        self.prompt_tokens = len(self.prompt)
        self.completion_tokens = 0
        self._cancelled = False
        if self.prompt_tokens >= model.n_ctx():
            raise BackendError(f"the prompt has {self.prompt_tokens} tokens and the context only {model.n_ctx()}: "
                               "shorten it or pass a larger --context-length.")

    def cancel(self) -> None:
        self._cancelled = True

    def _sampling(self) -> dict[str, Any]:
        settings = self.settings
        seed = settings.seed if settings.seed is not None else random.SystemRandom().randint(0, RANDOM_SEED_BOUND)
        self.model.set_seed(seed)
        if settings.greedy:
            return {"temp": 0.0, "top_k": 1, "top_p": 1.0, "min_p": 0.0}
        return {"temp": settings.temperature, "top_k": TOP_K, "top_p": TOP_P if settings.top_p is None else settings.top_p, "min_p": MIN_P}

    def __iter__(self) -> Iterator[str]:
        model, limit = self.model, self.settings.max_new_tokens
        room = model.n_ctx() - self.prompt_tokens
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        previous: list[int] = list(self.prompt)
        tokens = model.generate(self.prompt, repeat_penalty=1.0, **self._sampling())
        try:
            for token in tokens:
                if self._cancelled or _is_end(model, token):
                    break
                self.completion_tokens += 1
                text = decoder.decode(model.detokenize([token], prev_tokens=previous, special=False))
                previous.append(token)
                if text:
                    yield text
                if self.completion_tokens >= min(limit, room):
                    break
        finally:
            tokens.close()
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail
