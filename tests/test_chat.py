"""chat.py's loop, history and timing logic against a scripted backend (no model, no torch)."""
from __future__ import annotations

from typing import Iterator

import pytest

from modelmgr.run.api import Backend, Generation, GenerationSettings, LoadedModel
from modelmgr.run.chat import BYE, CHAT_HELP, CLEAR, ChatSession, chat_loop, complete, plain_prompt


class ScriptedGeneration(Generation):
    def __init__(self, pieces: list[str], interrupt_after: int | None):
        self.pieces, self.interrupt_after = pieces, interrupt_after
        self.prompt_tokens, self.completion_tokens, self.cancelled = 3, 0, False

    def __iter__(self) -> Iterator[str]:
        for index, piece in enumerate(self.pieces):
            if index == self.interrupt_after:
                raise KeyboardInterrupt
            self.completion_tokens += 1
            yield piece

    def cancel(self) -> None:
        self.cancelled = True


class ScriptedBackend(Backend):
    """Replies "reply N to: <last message>" and records every conversation it was sent."""

    name = "scripted"

    def __init__(self) -> None:
        self.seen: list[list[dict]] = []
        self.interrupt_after: int | None = None
        self.generations: list[ScriptedGeneration] = []

    def generate(self, loaded, messages, settings):
        self.seen.append([dict(m) for m in messages])
        words = f"reply {len(self.seen)} to: {messages[-1]['content']}".split(" ")
        generation = ScriptedGeneration([w if i == 0 else " " + w for i, w in enumerate(words)], self.interrupt_after)
        self.generations.append(generation)
        return generation


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


def session_for(backend: ScriptedBackend, system: str | None = None) -> ChatSession:
    loaded = LoadedModel(None, None, "scripted", "cpu", "float32")
    return ChatSession(backend, loaded, GenerationSettings(), system=system)


def drive(session: ChatSession, lines: list[str | type[BaseException]]) -> tuple[str, list[str]]:
    """Run the loop over scripted input; an exception class in the script is raised by read_line."""
    script = iter(lines)
    written: list[str] = []
    notes: list[str] = []

    def read_line() -> str:
        item = next(script, EOFError)
        if isinstance(item, type):
            raise item
        return item

    chat_loop(session, read_line=read_line, write=written.append, notify=notes.append)
    return "".join(written), notes


def test_history_is_kept_and_cleared(backend: ScriptedBackend) -> None:
    session = session_for(backend, system="be brief")
    output, notes = drive(session, ["hello", "again", CLEAR, "fresh", BYE, "never read"])
    assert output == "reply 1 to: hello\nreply 2 to: again\nreply 3 to: fresh\n"
    assert backend.seen[1] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "reply 1 to: hello"},
        {"role": "user", "content": "again"},
    ]
    assert backend.seen[2] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "fresh"}]
    assert notes == [CHAT_HELP, "Conversation cleared."]


def test_end_of_input_exits_and_blank_lines_are_skipped(backend: ScriptedBackend) -> None:
    output, _ = drive(session_for(backend), ["", "   ", "hi"])
    assert output == "reply 1 to: hi\n\n" and len(backend.seen) == 1


def test_ctrl_c_at_the_prompt_only_reminds(backend: ScriptedBackend) -> None:
    output, notes = drive(session_for(backend), [KeyboardInterrupt, "hi", BYE])
    assert "reply 1 to: hi" in output and f"Use {BYE} or Ctrl-D to exit." in notes


def test_ctrl_c_during_a_reply_stops_it_and_keeps_what_was_said(backend: ScriptedBackend) -> None:
    session = session_for(backend)
    backend.interrupt_after = 2
    output, notes = drive(session, ["first", BYE])
    assert output == "reply 1\n" and "Reply stopped." in notes
    assert backend.generations[0].cancelled
    assert session.history == [{"role": "user", "content": "first"}, {"role": "assistant", "content": "reply 1"}]


def test_help_command(backend: ScriptedBackend) -> None:
    _, notes = drive(session_for(backend), ["/?", BYE])
    assert notes == [CHAT_HELP, CHAT_HELP] and not backend.seen


def test_complete_measures_tokens_and_timing(backend: ScriptedBackend) -> None:
    pieces: list[str] = []
    reply = complete(backend, None, [{"role": "user", "content": "x"}], GenerationSettings(), on_text=pieces.append)
    assert reply.text == "reply 1 to: x" == "".join(pieces)
    assert (reply.prompt_tokens, reply.completion_tokens, reply.stopped) == (3, 4, False)
    assert reply.time_to_first_token is not None and reply.time_to_first_token <= reply.seconds
    assert reply.tokens_per_second is None or reply.tokens_per_second > 0


def test_interrupted_complete_reraises_with_the_partial_reply(backend: ScriptedBackend) -> None:
    backend.interrupt_after = 1
    with pytest.raises(KeyboardInterrupt) as interrupt:
        complete(backend, None, [{"role": "user", "content": "x"}], GenerationSettings())
    partial = interrupt.value.partial_reply
    assert (partial.text, partial.stopped, partial.completion_tokens) == ("reply", True, 1)


def test_plain_prompt_without_a_template() -> None:
    assert plain_prompt([{"role": "user", "content": "Once upon a time"}]) == "Once upon a time"
    assert plain_prompt([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]) == "S\n\nU"
