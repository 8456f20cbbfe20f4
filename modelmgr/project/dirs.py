"""The folders that hold the system and the user config file.

platformdirs knows them for every OS, but importing it costs some 7 ms (it brings tempfile, shutil
and random along), which every command paid to learn two paths. On Linux both follow the XDG base
directory rule, written out here as platformdirs applies it; other systems still ask platformdirs.
tests/test_config_show.py holds the two answers side by side for each shape of the variables.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping

APP = "modelmgr"


def config_dirs(environ: Mapping[str, str] = os.environ) -> tuple[Path, Path]:
    """(the system folder, the user folder) of modelmgr's config files."""
    if not sys.platform.startswith("linux"):
        import platformdirs

        return Path(platformdirs.site_config_dir(APP)), Path(platformdirs.user_config_dir(APP))
    # A relative path in an XDG variable is invalid, the specification says, and is ignored.
    system = [folder for folder in environ.get("XDG_CONFIG_DIRS", "").split(os.pathsep) if os.path.isabs(folder)]
    user = environ.get("XDG_CONFIG_HOME", "")
    return (
        Path(system[0] if system else "/etc/xdg") / APP,
        Path(user if os.path.isabs(user) else os.path.join(_home(environ), ".config")) / APP,
    )


def _home(environ: Mapping[str, str]) -> str:
    """$HOME when it is an absolute path, else the account's home folder (a relative HOME counts as unset)."""
    home = environ.get("HOME", "")
    if os.path.isabs(home):
        return home
    import pwd

    return pwd.getpwuid(os.getuid()).pw_dir
