"""Every failure a user can meet, each message saying how to fix it.

Only ``cli.py`` turns these into a one-line message and an exit code; the core just raises.
"""
from __future__ import annotations


class ModelmgrError(Exception):
    """Base of every error modelmgr reports to a user. The message is the whole story."""

    exit_code = 1


class InvalidReference(ModelmgrError):
    """A model reference that is not an ID, an ID@revision, an alias or a local directory."""


class ConfigError(ModelmgrError):
    """A configuration file or value that cannot be used."""


class HubError(ModelmgrError):
    """The Hub (or every mirror) failed to answer usefully."""


class RepoNotFound(HubError):
    """The repository does not exist, or is private and no token was allowed for it."""


class RevisionNotFound(HubError):
    """The branch, tag or commit does not exist in the repository."""


class EntryNotFound(HubError):
    """A file does not exist at that revision."""


class GatedRepo(HubError):
    """Access to the repository must be requested on the Hub first."""


class UnsafeServerResponse(HubError):
    """The server sent something modelmgr refuses to act on (a hostile path, a malformed etag)."""


class IntegrityError(HubError):
    """Downloaded bytes do not match the hash the server promised."""


class OfflineError(ModelmgrError):
    """Offline mode is on and what was asked for is not in the cache."""


class NotCached(ModelmgrError):
    """The model (or revision) asked for is not in the cache."""


class DiskSpaceError(ModelmgrError):
    """Not enough free space in the cache for what must be downloaded."""


class BackendError(ModelmgrError):
    """No backend can load the model, or the chosen one failed."""


class UnsafeModel(ModelmgrError):
    """Loading would run remote code or unpickle weights without the user's consent."""


class UnsafeCacheEntry(ModelmgrError):
    """Something in the cache is not what modelmgr wrote there (a link, a FIFO, another user's file)."""


class TokenRejected(HubError):
    """The server refused the token itself: invalid, expired or revoked."""


class TokenNotSent(HubError):
    """The server wanted a token the user has, but the endpoint is not allowed to receive it."""


class UnknownBackend(BackendError):
    """A backend name that is not registered: a usage mistake, so exit code 2 as click gives."""

    exit_code = 2
