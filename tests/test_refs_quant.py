"""Quantization tags in references: org/name:Q4_K_M, any case, with or without a revision."""
from __future__ import annotations

import pytest

from modelmgr.errors import InvalidReference
from modelmgr.project.refs import parse_ref

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize("text, repo_id, quant, revision", [
    ("org/name:Q4_K_M", "org/name", "Q4_K_M", None),
    ("org/name:q4_k_m", "org/name", "Q4_K_M", None),
    ("org/name:Q8_0@v1.0", "org/name", "Q8_0", "v1.0"),
    (f"org/name:iq4_xs@{COMMIT}", "org/name", "IQ4_XS", COMMIT),
    ("org/name", "org/name", None, None),
    ("org/name:UD-Q4_K_XL", "org/name", "UD-Q4_K_XL", None),  # Unsloth's dynamic quantizations
    ("org/name:ud-iq1_s@v1.0", "org/name", "UD-IQ1_S", "v1.0"),
    ("org/name:Q4_K_XL", "org/name", "Q4_K_XL", None),
])
def test_tags(text: str, repo_id: str, quant: str | None, revision: str | None) -> None:
    ref = parse_ref(text)
    assert (ref.repo_id, ref.quant, ref.revision) == (repo_id, quant, revision)
    assert str(ref) == text.replace(text.split(":")[-1].split("@")[0], quant) if quant else str(ref) == text


def test_an_alias_with_a_tag() -> None:
    ref = parse_ref("qwen:Q4_0", aliases={"qwen": ("Qwen/Qwen2.5-0.5B-Instruct-GGUF", None)})
    assert (ref.repo_id, ref.quant) == ("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "Q4_0")


@pytest.mark.parametrize("text", [
    "org/name:", "org/name:Q4 K", "org/name:" + "Q" * 40, "org/name:_Q4", "org/name:-Q4", "org/name:Q4-", "org/name:UD--Q4",
    "org/name:UD-" + "Q" * 30,
])
def test_bad_tags(text: str) -> None:
    with pytest.raises(InvalidReference, match="quantization tag"):
        parse_ref(text)
