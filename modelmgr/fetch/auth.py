"""What a 401 or 403 from a Hub means, said so the user knows the one thing to do.

The Hub tells the cases apart with X-Error-Code and X-Error-Message (huggingface_hub's
``hf_raise_for_status`` reads the same headers): a gated repo without a login (401 GatedRepo),
a gated repo the user was not granted (403 GatedRepo), a token it rejects (401, no code,
"Invalid credentials in Authorization header"), and a private or missing repo (401/404
RepoNotFound, the same answer on purpose). A sixth case is ours: the user has a token but
modelmgr did not send it to this endpoint, so the server's answer says nothing about the token.
Every message carries the server's own words.
"""
from __future__ import annotations

from modelmgr import errors
from modelmgr.project.config import Endpoint

TOKEN_HINT = "set HF_TOKEN or run `hf auth login`"
MAX_REASON = 200


def server_reason(message: str | None) -> str:
    """The server's X-Error-Message, made safe for one terminal line."""
    text = "".join(c if c.isprintable() else " " for c in (message or "")).strip()
    return text[:MAX_REASON] + ("..." if len(text) > MAX_REASON else "")


def _said(reason: str) -> str:
    return f' (server: "{reason}")' if reason else ""


def repo_url(endpoint: Endpoint, repo_id: str, repo_type: str) -> str:
    prefix = "" if repo_type == "model" else f"/{repo_type}s"
    return f"{endpoint.url}{prefix}/{repo_id}"


def send_token_setting(endpoint: Endpoint) -> str:
    return f'[[hub.endpoints]] url = "{endpoint.url}" with send_token = true in the config'


def classify(
    status: int,
    code: str,
    message: str | None,
    *,
    repo_id: str,
    repo_type: str,
    endpoint: Endpoint,
    credential_sent: bool,
    token_withheld: bool,
) -> errors.HubError | None:
    """The error for an access answer, or None when the answer is not about access."""
    if status not in (401, 403) and code not in ("GatedRepo", "RepoNotFound"):
        return None
    reason = server_reason(message)
    kind = "model" if repo_type == "model" else repo_type
    where = f"on {endpoint.name}" if endpoint.name == endpoint.url else f"on {endpoint.name} ({endpoint.url})"
    if status in (401, 403) and token_withheld and not credential_sent:
        return errors.TokenNotSent(
            f"{endpoint.name} refused {repo_id} (HTTP {status}){_said(reason)}, and your token was not sent to it: "
            f"to send it, add {send_token_setting(endpoint)}.")
    if code == "GatedRepo" and status == 403:
        return errors.GatedRepo(
            f"{kind} {repo_id} is gated and your account has not been granted access{_said(reason)}: "
            f"ask for access at {repo_url(endpoint, repo_id, repo_type)}.")
    if code == "GatedRepo":
        return errors.GatedRepo(
            f"{kind} {repo_id} is gated and needs a login{_said(reason)}: accept its terms at "
            f"{repo_url(endpoint, repo_id, repo_type)}, then {TOKEN_HINT}.")
    if status == 401 and not code and credential_sent:
        return errors.TokenRejected(
            f"{endpoint.name} rejected your token (HTTP 401){_said(reason)}: it is invalid or expired; "
            f"create a new one at https://huggingface.co/settings/tokens and {TOKEN_HINT}.")
    if credential_sent:
        fix = "check the id, and that your token may read it if it is private"
    else:
        fix = f"check the id; if it is private, {TOKEN_HINT}"
    return errors.RepoNotFound(f"{kind} {repo_id!r} not found {where} (HTTP {status}){_said(reason)}: {fix}.")
