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


def system_config_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The folder of the config file every user of the machine shares."""
    if not sys.platform.startswith("linux"):
        import platformdirs

        return Path(platformdirs.site_config_dir(APP))
    # A relative path in an XDG variable is invalid, the specification says, and is ignored.
    folders = [folder for folder in environ.get("XDG_CONFIG_DIRS", "").split(os.pathsep) if os.path.isabs(folder)]
    return Path(folders[0] if folders else "/etc/xdg") / APP


def user_config_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The folder of the user's own config file."""
    if not sys.platform.startswith("linux"):
        import platformdirs

        return Path(platformdirs.user_config_dir(APP))
    folder = environ.get("XDG_CONFIG_HOME", "")
    return Path(folder if os.path.isabs(folder) else os.path.join(_home(environ), ".config")) / APP


def _home(environ: Mapping[str, str]) -> str:
    """$HOME when it is an absolute path, else the account's home folder (a relative HOME counts as unset)."""
    home = environ.get("HOME", "")
    if os.path.isabs(home):
        return home
    import pwd

    try:
        home = pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:  # a user id with no account (a container's): nothing to fall back on
        home = ""
    if not os.path.isabs(home):
        from modelmgr.errors import ConfigError

        raise ConfigError("cannot tell your home folder, where the user config lives: set HOME (or "
                          "XDG_CONFIG_HOME, or MODELMGR_CONFIG to the file) to an absolute path.")
    return home
