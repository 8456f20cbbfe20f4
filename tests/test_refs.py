import pytest

from modelmgr.errors import InvalidReference
from modelmgr.project.refs import ModelRef, parse_ref, validate_repo_id

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    "text, repo_id, revision",
    [
        ("org/name", "org/name", None),
        ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct", None),
        ("org/name@main", "org/name", "main"),
        ("org/name@v1.0", "org/name", "v1.0"),
        ("org/name@refs/pr/1", "org/name", "refs/pr/1"),
        (f"org/name@{COMMIT}", "org/name", COMMIT),
        ("  org/name  ", "org/name", None),
    ],
)
def test_valid_references(text, repo_id, revision):
    ref = parse_ref(text)
    assert (ref.repo_id, ref.revision, ref.is_local) == (repo_id, revision, False)


@pytest.mark.parametrize(
    "text, why",
    [
        ("../x", "'--' and '..'"),
        ("../../etc", "exactly one '/'"),
        ("name", "exactly one '/'"),
        ("a/b/c", "exactly one '/'"),
        ("org/na--me", "'--' and '..'"),
        ("org/na..me", "'--' and '..'"),
        ("org/" + "x" * 97, "at most 96"),
        ("org/name!", "letters, digits"),
        ("-org/name", "letters, digits"),
        ("org/name.", "may not end"),
        ("org/", "non-empty"),
        ("", "empty model reference"),
        ("org/name@", "nothing after '@'"),
        ("org/name@../../x", "invalid revision"),
        ("org/name@a..b", "invalid revision"),
    ],
)
def test_invalid_references_say_why(text, why):
    with pytest.raises(InvalidReference) as caught:
        parse_ref(text)
    assert why in str(caught.value)


def test_invalid_id_message_starts_as_documented():
    with pytest.raises(InvalidReference) as caught:
        validate_repo_id("../x")
    assert str(caught.value).startswith("invalid model id '../x': ")


def test_local_directories(tmp_path, monkeypatch):
    model = tmp_path / "model"
    model.mkdir()
    monkeypatch.chdir(tmp_path)
    assert parse_ref("./model") == ModelRef(local_path=model.resolve())
    assert parse_ref(str(model)).local_path == model.resolve()
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_ref("~/model").local_path == model.resolve()
    with pytest.raises(InvalidReference, match="does not exist"):
        parse_ref("./missing")


def test_aliases_resolve_and_keep_their_pinned_revision():
    aliases = {"tiny": ("org/tiny", COMMIT)}
    assert parse_ref("tiny", aliases=aliases) == ModelRef(repo_id="org/tiny", revision=COMMIT)
    assert parse_ref("tiny@v2", aliases=aliases) == ModelRef(repo_id="org/tiny", revision="v2")
    with pytest.raises(InvalidReference, match="aliases: tiny"):
        parse_ref("other", aliases=aliases)
