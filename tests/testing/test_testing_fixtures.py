"""The pytest fixtures plugin authors get from modelmgr.testing.fixtures."""

from __future__ import annotations

from modelmgr.testing import TINY_MODEL_ID, LocalHub


def test_local_hub_serves_the_tiny_model_at_main(local_hub, tiny_model_dir, fetch):
    info = fetch(f"{local_hub.url}/api/models/{TINY_MODEL_ID}/revision/main").json()
    assert sorted(s["rfilename"] for s in info["siblings"]) == sorted(p.name for p in tiny_model_dir.iterdir())
    config = fetch(f"{local_hub.url}/{TINY_MODEL_ID}/resolve/main/config.json").body
    assert config == (tiny_model_dir / "config.json").read_bytes()


def test_hub_factory_makes_separate_started_hubs(hub_factory, fetch):
    first, second = hub_factory(), hub_factory()
    assert isinstance(first, LocalHub) and first.url != second.url
    assert fetch(f"{first.url}/api/models/x/y").status == 404


def test_user_dirs_are_isolated(tmp_path_factory):
    import os

    assert os.environ["HF_HUB_DISABLE_TELEMETRY"] == "1" and "HF_TOKEN" not in os.environ
    assert str(tmp_path_factory.getbasetemp()) in os.environ["HF_HOME"]
