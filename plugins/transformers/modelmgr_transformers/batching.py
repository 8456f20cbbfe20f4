"""Continuous batching: the generations a server runs on one model advance together, one forward
pass per token for all of them, and a new one joins between two tokens instead of waiting.

On a CPU a decoding step costs about as much for eight sequences as for one (the weights are read
once per step either way), so this is where a served model's throughput comes from. Plain
``generate`` cannot do it: its batch is fixed when it starts. This loop keeps one DynamicCache
for the whole batch, left-padded to a common length: a newcomer is prefilled alone, then its
cache is padded and stacked onto the batch's; a finished sequence's row is dropped.

It batches only models whose cache is plain full attention (Llama, Qwen2, Phi, ...): sliding
window or hybrid caches cannot be stacked this way, and those models keep the one-at-a-time path.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Iterator, Sequence

from modelmgr import BackendError, Generation, GenerationSettings, Message

from .streaming import _QueueStreamer, _eos_ids, encode_messages

_DONE = object()


def can_batch(model: Any) -> bool:
    """Whether the model's cache is made only of plain dynamic layers (full attention)."""
    try:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        layers = DynamicCache(config=model.config).layers
    except Exception:  # noqa: BLE001 - an unusual config just means no batching
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


class _Sequence:
    """One request inside the engine: its prompt, its sampling, and where its text goes."""

    def __init__(self, engine: "BatchEngine", prompt: list[int], settings: GenerationSettings):
        import torch

        self.prompt = prompt
        self.settings = settings
        self.out: "queue.Queue[object]" = queue.Queue()
        self.streamer = _QueueStreamer(engine.tokenizer, self.out)
        self.streamer.prompt_seen = True
        self.cancelled = threading.Event()
        self.produced = 0
        self.error: BaseException | None = None
        self.generator = None
        if not settings.greedy:
            self.generator = torch.Generator()
            if settings.seed is not None:
                self.generator.manual_seed(settings.seed)
            else:
                self.generator.seed()


class BatchedGeneration(Generation):
    def __init__(self, engine: "BatchEngine", prompt: list[int], settings: GenerationSettings):
        self._engine = engine
        self._seq = _Sequence(engine, prompt, settings)
        self.prompt_tokens = len(prompt)
        self.completion_tokens = 0
        self._started = False

    def __iter__(self) -> Iterator[str]:
        if self._started:
            raise RuntimeError("a Generation can be iterated only once")
        self._started = True
        self._engine.submit(self._seq)
        try:
            while True:
                item = self._seq.out.get()
                if item is _DONE:
                    break
                yield item  # type: ignore[misc]
        finally:
            self.cancel()  # a consumer that stops early frees its row at the next step
        self.completion_tokens = self._seq.produced
        if self._seq.error is not None:
            raise BackendError(f"generation failed: {type(self._seq.error).__name__}: {self._seq.error}") from self._seq.error

    def cancel(self) -> None:
        self._seq.cancelled.set()


class BatchEngine:
    """One thread that owns the model and steps every running sequence together."""

    def __init__(self, model: Any, tokenizer: Any, max_batch: int):
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.eos = set(_eos_ids(model, tokenizer))
        config = model.generation_config
        self.top_k = getattr(config, "top_k", None)
        # Tokenizers are not safe to share between threads (a Rust borrow error): encoding on a
        # request's thread and decoding on the engine's take turns.
        self.tokenizer_lock = threading.Lock()
        self._pending: "queue.Queue[_Sequence | None]" = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="modelmgr-batch", daemon=True)
        self._thread.start()

    # --- the request side -------------------------------------------------------------------

    def generation(self, messages: Sequence[Message] | None, settings: GenerationSettings, *, text: str | None = None) -> BatchedGeneration:
        with self.tokenizer_lock:
            if text is not None:
                prompt = self.tokenizer(text, return_tensors="pt")["input_ids"][0].tolist()
            else:
                prompt = encode_messages(self.tokenizer, messages or [])["input_ids"][0].tolist()
        if not prompt:
            raise BackendError("the prompt is empty after tokenization: send some text.")
        return BatchedGeneration(self, prompt, settings)

    def submit(self, seq: _Sequence) -> None:
        if self._closed:
            raise BackendError("the model was unloaded while the request waited: send it again.")
        self._pending.put(seq)

    def close(self) -> None:
        """Stop the loop; running sequences end as cancelled. Returns once the thread is gone."""
        self._closed = True
        self._pending.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=30)

    # --- the engine thread ------------------------------------------------------------------

    def _loop(self) -> None:
        import torch

        with torch.inference_mode():
            batch = _Batch()
            while not self._closed:
                self._admit(batch, block=not batch.rows)
                if batch.rows:
                    try:
                        self._step(batch)
                    except BaseException as exc:  # noqa: BLE001 - every waiting client hears of it
                        for seq in batch.rows:
                            self._finish(seq, error=exc)
                        batch = _Batch()
            for seq in batch.rows:
                self._finish(seq)
            while True:  # whoever was still waiting is told the model went away
                try:
                    seq = self._pending.get_nowait()
                except queue.Empty:
                    break
                if seq is not None:
                    self._finish(seq, error=BackendError("the model was unloaded: send the request again."))

    def _admit(self, batch: "_Batch", *, block: bool) -> None:
        while len(batch.rows) < self.max_batch:
            try:
                seq = self._pending.get(timeout=1.0) if block else self._pending.get_nowait()
            except queue.Empty:
                return
            block = False
            if seq is None:
                return
            if seq.cancelled.is_set():
                self._finish(seq)
                continue
            try:
                self._prefill(batch, seq)
            except BaseException as exc:  # noqa: BLE001
                self._finish(seq, error=exc)

    def _prefill(self, batch: "_Batch", seq: _Sequence) -> None:
        import torch
        from transformers import DynamicCache

        ids = torch.tensor([seq.prompt], device=self.model.device)
        cache = DynamicCache()
        out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), cache=cache, use_cache=True)
        token = self._sample(out.logits[0, -1], seq)
        if self._emit(seq, token):
            batch.add(seq, cache, len(seq.prompt), token)

    def _step(self, batch: "_Batch") -> None:
        import torch

        live = [i for i, seq in enumerate(batch.rows) if not seq.cancelled.is_set()]
        if len(live) < len(batch.rows):
            for i, seq in enumerate(batch.rows):
                if i not in live:
                    self._finish(seq)
            batch.keep(live)
            if not batch.rows:
                return
        batch.mask = torch.cat([batch.mask, torch.ones((len(batch.rows), 1), dtype=batch.mask.dtype)], dim=1)
        out = self.model(
            input_ids=torch.tensor([[t] for t in batch.last], device=self.model.device),
            attention_mask=batch.mask.to(self.model.device),
            position_ids=torch.tensor([[p] for p in batch.positions], device=self.model.device),
            cache=batch.cache,
            use_cache=True,
        )
        logits = out.logits[:, -1]
        keep = []
        for i, seq in enumerate(batch.rows):
            token = self._sample(logits[i], seq)
            batch.positions[i] += 1
            batch.last[i] = token
            if self._emit(seq, token):
                keep.append(i)
        if len(keep) < len(batch.rows):
            batch.keep(keep)

    def _sample(self, logits: Any, seq: _Sequence) -> int:
        import torch

        settings = seq.settings
        if settings.greedy:
            return int(torch.argmax(logits))
        # On the CPU, where each request's seeded Generator lives (a vocabulary's worth of numbers).
        scores = logits.float().cpu() / settings.temperature
        if self.top_k:
            kth = torch.topk(scores, min(int(self.top_k), scores.shape[-1])).values[-1]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        if settings.top_p is not None and settings.top_p < 1:
            ordered, order = torch.sort(probs, descending=True)
            cut = torch.cumsum(ordered, dim=-1) - ordered > settings.top_p  # always keeps the top token
            ordered[cut] = 0
            probs = torch.zeros_like(probs).scatter(0, order, ordered)
        return int(torch.multinomial(probs, 1, generator=seq.generator))

    def _emit(self, seq: _Sequence, token: int) -> bool:
        """Hand the token's text to the client; False when the sequence is done."""
        seq.produced += 1
        done = token in self.eos or seq.produced >= seq.settings.max_new_tokens or seq.cancelled.is_set()
        if token not in self.eos:
            import torch

            with self.tokenizer_lock:
                seq.streamer.put(torch.tensor([token]))
        if done:
            self._finish(seq)
        return not done

    def _finish(self, seq: _Sequence, *, error: BaseException | None = None) -> None:
        if seq.error is None and error is not None:
            seq.error = error
        with self.tokenizer_lock:
            try:
                seq.streamer.end()
            except Exception:  # noqa: BLE001 - the last piece of text is not worth a crash
                pass
        seq.out.put(_DONE)


class _Batch:
    """The running sequences and their shared, left-padded cache."""

    def __init__(self) -> None:
        self.rows: list[_Sequence] = []
        self.cache: Any = None
        self.mask: Any = None  # [rows, cache length]: 0 over each row's left padding
        self.positions: list[int] = []  # each row's next position (its real length so far)
        self.last: list[int] = []  # each row's newest token, not yet in the cache

    def add(self, seq: _Sequence, cache: Any, length: int, token: int) -> None:
        import torch
        from transformers import DynamicCache

        mask = torch.ones((1, length), dtype=torch.long)
        if not self.rows:
            self.cache, self.mask = cache, mask
        else:
            have = self.mask.shape[1]
            width = max(have, length)
            layers = []
            for old, new in zip(self.cache.layers, cache.layers):
                layers.append((
                    torch.cat([_pad_left(old.keys, width), _pad_left(new.keys, width)], dim=0),
                    torch.cat([_pad_left(old.values, width), _pad_left(new.values, width)], dim=0),
                ))
            self.cache = DynamicCache(ddp_cache_data=layers)
            self.mask = torch.cat([_pad_left(self.mask, width, dim=1), _pad_left(mask, width, dim=1)], dim=0)
        self.rows.append(seq)
        self.positions.append(length)
        self.last.append(token)

    def keep(self, indices: list[int]) -> None:
        import torch

        self.rows = [self.rows[i] for i in indices]
        self.positions = [self.positions[i] for i in indices]
        self.last = [self.last[i] for i in indices]
        if not indices:
            self.cache = self.mask = None
            return
        index = torch.tensor(indices)
        self.mask = self.mask[index]
        # Columns that are padding in every remaining row are dead weight in each step.
        dead = int((self.mask.cumsum(dim=1) == 0).all(dim=0).sum())
        self.mask = self.mask[:, dead:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index.to(layer.keys.device), :, dead:]
            layer.values = layer.values[index.to(layer.values.device), :, dead:]


def _pad_left(tensor: Any, width: int, *, dim: int = 2) -> Any:
    import torch

    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([torch.zeros(shape, dtype=tensor.dtype, device=tensor.device), tensor], dim=dim)
