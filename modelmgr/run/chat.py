"""One-shot replies, streaming and the interactive chat loop, over any backend.

No torch and no terminal here: a backend generates, and the caller passes in how to read a
line and where text goes (``cli`` wires a terminal to it, tests a list of strings).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from modelmgr.run.api import Backend, GenerationSettings, LoadedModel, Message

BYE = "/bye"
CLEAR = "/clear"
HELP = "/?"
CHAT_HELP = f"Type a message and press Enter. {CLEAR} forgets the conversation, {BYE} or Ctrl-D exits, Ctrl-C stops a reply."


def plain_prompt(messages: Sequence["Message"]) -> str:
    """The conversation as plain text, for a model without a chat template: the turns' contents,
    one paragraph each, so a one-shot prompt reaches the model exactly as typed."""
    return "\n\n".join(message["content"] for message in messages)


@dataclass(frozen=True)
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float  # from the request to the last token
    time_to_first_token: float | None  # None when nothing was generated
    stopped: bool = False  # cut short by Ctrl-C

    @property
    def tokens_per_second(self) -> float | None:
        """Decoding speed after the first token (the first is the prompt's processing time)."""
        if self.time_to_first_token is None or self.completion_tokens < 2:
            return None
        decoding = self.seconds - self.time_to_first_token
        return (self.completion_tokens - 1) / decoding if decoding > 0 else None


def complete(
    backend: "Backend",
    loaded: "LoadedModel",
    messages: Sequence["Message"],
    settings: "GenerationSettings",
    *,
    on_text: Callable[[str], None] | None = None,
) -> Reply:
    """Generate one reply, passing each piece of text to ``on_text`` as it arrives.

    On KeyboardInterrupt generation is stopped and the interrupt re-raised, with what was said
    so far attached as ``exc.partial_reply`` (the chat loop keeps it).
    """
    started = time.perf_counter()
    first: float | None = None
    pieces: list[str] = []
    generation = backend.generate(loaded, list(messages), settings)
    try:
        for piece in generation:
            if not piece:
                continue
            if first is None:
                first = time.perf_counter() - started
            pieces.append(piece)
            if on_text is not None:
                on_text(piece)
    except KeyboardInterrupt as interrupt:
        generation.cancel()
        interrupt.partial_reply = Reply(  # type: ignore[attr-defined]
            "".join(pieces), generation.prompt_tokens, generation.completion_tokens,
            time.perf_counter() - started, first, stopped=True,
        )
        raise
    return Reply("".join(pieces), generation.prompt_tokens, generation.completion_tokens, time.perf_counter() - started, first)


@dataclass
class ChatSession:
    """A conversation with history: each reply sees every earlier turn (until ``clear``)."""

    backend: "Backend"
    loaded: "LoadedModel"
    settings: "GenerationSettings"
    system: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)

    def messages(self, user_text: str) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, *self.history, {"role": "user", "content": user_text}]

    def send(self, user_text: str, *, on_text: Callable[[str], None] | None = None) -> Reply:
        try:
            reply = complete(self.backend, self.loaded, self.messages(user_text), self.settings, on_text=on_text)
        except KeyboardInterrupt as interrupt:
            partial = getattr(interrupt, "partial_reply", None)
            if partial is not None and partial.text:
                self._remember(user_text, partial.text)  # the user saw it; the next turn may refer to it
            raise
        self._remember(user_text, reply.text)
        return reply

    def _remember(self, user_text: str, reply_text: str) -> None:
        self.history += [{"role": "user", "content": user_text}, {"role": "assistant", "content": reply_text}]

    def clear(self) -> None:
        self.history.clear()


def chat_loop(
    session: ChatSession,
    *,
    read_line: Callable[[], str],
    write: Callable[[str], None],
    notify: Callable[[str], None],
) -> None:
    """Read a line, stream the reply, repeat, until /bye or end of input.

    ``read_line`` raises EOFError at the end of input (Ctrl-D) and may raise KeyboardInterrupt
    (Ctrl-C at the prompt, which only reminds how to leave). ``write`` gets the reply text,
    ``notify`` the loop's own messages.
    """
    notify(CHAT_HELP)
    while True:
        try:
            line = read_line().strip()
        except EOFError:
            write("\n")
            return
        except KeyboardInterrupt:
            write("\n")
            notify(f"Use {BYE} or Ctrl-D to exit.")
            continue
        if not line:
            continue
        if line == BYE:
            return
        if line == CLEAR:
            session.clear()
            notify("Conversation cleared.")
            continue
        if line in (HELP, "/help"):
            notify(CHAT_HELP)
            continue
        try:
            reply = session.send(line, on_text=write)
        except KeyboardInterrupt:
            write("\n")
            notify("Reply stopped.")
            continue
        if not reply.text.endswith("\n"):
            write("\n")
