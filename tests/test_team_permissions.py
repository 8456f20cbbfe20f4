"""A cache shared by a team: a setgid folder owned by the team's group stays readable by the
group whatever each member's umask is."""
from __future__ import annotations

import grp
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from modelmgr.fsutil import make_dirs, write_atomic
from modelmgr.testing import TINY_MODEL_ID


def team_group() -> int:
    """A group other than our own primary one, so inheritance is visible."""
    for name in ("users", "staff", "nogroup", "daemon"):
        try:
            gid = grp.getgrnam(name).gr_gid
        except KeyError:
            continue
        if gid != os.getgid():
            return gid
    pytest.skip("no second group on this machine to share a cache with")


def shared_cache(tmp_path: Path) -> tuple[Path, int]:
    cache = tmp_path / "team-cache"
    cache.mkdir()
    gid = team_group()
    try:
        os.chown(cache, -1, gid)
    except PermissionError:
        pytest.skip("changing a folder's group needs root or membership of a second group")
    os.chmod(cache, 0o2770)
    return cache, gid


def pull_with_umask(umask: int, repo: str, endpoint: str, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_ENDPOINT": endpoint}
    return subprocess.Popen(
        [sys.executable, "-m", "modelmgr", "pull", repo], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.umask(umask),
    )


def test_two_members_with_different_umasks_leave_everything_group_readable(local_hub, tmp_path, tiny_model_dir):
    cache, gid = shared_cache(tmp_path)
    second = tmp_path / "second"
    shutil.copytree(tiny_model_dir, second)
    (second / "README.md").write_text("another model\n")
    local_hub.add_repo("team/second", second)
    pulls = [pull_with_umask(0o077, TINY_MODEL_ID, local_hub.url, cache),
             pull_with_umask(0o022, "team/second", local_hub.url, cache)]
    for process in pulls:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err

    checked = 0
    private_repo = cache / ("models--" + TINY_MODEL_ID.replace("/", "--"))
    for root, dirs, files in os.walk(cache):
        for name in dirs + files:
            path = Path(root, name)
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                continue
            checked += 1
            assert info.st_gid == gid, f"{path} lost the team's group"
            assert info.st_mode & stat.S_IRGRP, f"{path} is not group-readable ({oct(info.st_mode)})"
            if stat.S_ISDIR(info.st_mode):
                assert info.st_mode & stat.S_IXGRP and info.st_mode & stat.S_ISGID, f"{path}: {oct(info.st_mode)}"
            if private_repo in path.parents:
                # The umask still decides for everyone else: the 077 member's files stay closed.
                assert not info.st_mode & stat.S_IRWXO, f"{path} became world-accessible"
    assert checked > 20  # blobs, snapshots, refs, manifests, locks of both repos


def test_outside_a_setgid_folder_the_umask_alone_decides(tmp_path):
    old = os.umask(0o077)
    try:
        make_dirs(tmp_path / "a" / "b")
        write_atomic(tmp_path / "a" / "b" / "f", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a" / "b" / "f").stat().st_mode) == 0o600
