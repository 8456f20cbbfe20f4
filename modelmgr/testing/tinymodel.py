"""A seeded tiny causal LM (~650 KB), byte-identical on every build, for tests that load and generate.

torch, transformers and tokenizers are imported inside `build_tiny_model` only, so importing
modelmgr.testing stays fast and works where they are not installed.
"""

from __future__ import annotations

import atexit
import json
import random
import shutil
import tempfile
import threading
from pathlib import Path

BOS, EOS, PAD = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
VOCAB_SIZE = 1024

# ChatML, the format of Qwen and many others, so chat code meets the template it will meet in the wild.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Code a test can detect if it ever runs: only served when auto_map=True, and never meant to load.
REMOTE_CODE = b'raise RuntimeError("modelmgr test model: remote code was executed")\n'

_WORDS = (
    "the a an of to and in is it that for on with as was he she they we you this be at by from or have "
    "had not are but what all were when there can said which do their if will up one about out many then "
    "them these so some her would make like him into time has look two more write go see number no way "
    "could people my than first water been call who oil its now find long down day did get come made may "
    "part model token cache hub file weight layer light river stone green small quiet north"
).split()
_ONSETS = "b c d f g h j k l m n p r s t v w z br cl dr fl gr pl st tr sh ch th".split()
_VOWELS = "a e i o u ai ea oo ou".split()
_CODAS = ["", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ck", "ng"]


def _corpus(seed: int, lines: int = 200) -> list[str]:
    """English-like text: real words plus made-up ones, so BPE finds enough merges for 1024 tokens."""
    rng = random.Random(seed)

    def made_up_word() -> str:
        syllables = rng.randint(1, 3)
        return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables))

    lexicon = list(_WORDS) + [made_up_word() for _ in range(400)]
    text = []
    for _ in range(lines):
        sentence = " ".join(rng.choice(lexicon) for _ in range(rng.randint(4, 14)))
        ending = rng.choice(".?!,;") + rng.choice(["", " 42", " 7", " (note)"])
        text.append(sentence[0].upper() + sentence[1:] + ending)
    return text


def build_tiny_model(
    dest: Path | str,
    *,
    seed: int = 0,
    with_chat_template: bool = True,
    extra_files: dict[str, bytes] | None = None,
    auto_map: bool = False,
    native_type: bool = False,
) -> Path:
    """Write a tiny Llama causal LM with its tokenizer to `dest` and return `dest`.

    ``auto_map``: the repo ships its own modelling code (which raises if ever imported). With
    ``native_type`` the model_type stays "llama", which transformers implements itself: the shape
    of microsoft/Phi-3-mini-4k-instruct (model_type "phi3" plus an auto_map).
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_corpus(seed), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=512,
        chat_template=CHAT_TEMPLATE if with_chat_template else None,
    )
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        # With the default 0.02 the logits are so flat that greedy decoding emits only newlines.
        initializer_range=0.2,
        **ids,
    )
    with torch.random.fork_rng(devices=[]):  # seed the weights without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(**ids)
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a bar for a 600 KB write is noise in every test log
    try:
        model.save_pretrained(dest, safe_serialization=True)
        tokenizer.save_pretrained(dest)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()

    if auto_map:
        _add_auto_map(dest, rename_type=not native_type)
    for name, data in (extra_files or {}).items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return dest


def _add_auto_map(dest: Path, *, rename_type: bool = True) -> None:
    """Point config.json's auto_map at the repo's own code; the mapped module raises if it is
    ever imported.

    transformers silently uses its own class when it knows the model_type, so to make the model
    loadable only by running its code (as custom architectures are) the type is renamed too.
    """
    config_path = dest / "config.json"
    config = json.loads(config_path.read_text())
    if rename_type:
        config["model_type"] = "tiny-remote"
    config["auto_map"] = {
        "AutoConfig": "modeling_tiny.TinyConfig",
        "AutoModelForCausalLM": "modeling_tiny.TinyForCausalLM",
    }
    # The same layout transformers writes, so only the changed keys differ.
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (dest / "modeling_tiny.py").write_bytes(REMOTE_CODE)


_built: dict[int, Path] = {}
_built_lock = threading.Lock()


def tiny_model_files(seed: int = 0) -> Path:
    """The tiny model built once per process (into a temporary folder removed at exit); do not modify it."""
    with _built_lock:
        if seed not in _built:
            root = Path(tempfile.mkdtemp(prefix="modelmgr-tiny-model-"))
            atexit.register(shutil.rmtree, root, ignore_errors=True)
            _built[seed] = build_tiny_model(root / f"seed-{seed}", seed=seed)
        return _built[seed]
