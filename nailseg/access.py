"""Who may do what in the app: segmenting is for everyone; what changes the server is the owner's.

Owner actions (loading other weights, training, stopping a run, exporting or pushing its weights,
keeping a dataset on the server) change the server for every visitor. On a private server (bound
to a loopback address, not a Space) whoever opens the page is its owner. On a public one (a Space,
or ``GRADIO_SERVER_NAME`` not loopback) they need one of:

* Hugging Face sign-in on a Space with ``hf_oauth: true`` in its README metadata: the signed-in
  user must be the Space's owner (``$SPACE_AUTHOR_NAME``) or listed in ``$NAILSEG_OWNERS``;
* Gradio's own login, ``$NAILSEG_AUTH="user:password[,user2:password2]"`` (then the whole app
  asks for a login): the user must be listed in ``$NAILSEG_OWNERS``, or any user when it is unset.

With neither configured, owner actions are off on a public server.

Fair shares (kept photos, uploads) are per client address: :func:`client_address`.
"""

from __future__ import annotations

import ipaddress
import os

import gradio as gr

_LOOPBACK_NAMES = {"localhost", ""}


OWNER_FILE_PREFIX = "owner-only-"  # files named so are served to the owner only (nailseg.middleware.OwnerFiles)


class NotOwner(gr.Error):
    """An owner action asked for by someone who is not the owner (the message says how to be one)."""


def is_public() -> bool:
    """True on a Space or when the server listens on a non-loopback address."""
    if os.environ.get("SPACE_ID"):
        return True
    host = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1").strip().lower()
    if host in _LOOPBACK_NAMES:
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost: assume others can reach it
        return True


def auth_pairs() -> list[tuple[str, str]] | None:
    """Gradio login pairs from ``$NAILSEG_AUTH`` (``user:password``, comma-separated), or None."""
    text = os.environ.get("NAILSEG_AUTH", "").strip()
    pairs = [tuple(item.split(":", 1)) for item in text.split(",") if ":" in item]
    return [(u.strip(), p) for u, p in pairs if u.strip() and p] or None


def oauth_enabled() -> bool:
    """Hugging Face sign-in is available: on a Space with ``hf_oauth: true`` (it sets these variables)."""
    return bool(os.environ.get("SPACE_ID") and os.environ.get("OAUTH_CLIENT_ID"))


def owners() -> set[str]:
    """Usernames allowed to act as the owner: ``$NAILSEG_OWNERS``, plus the Space's owner."""
    names = {n.strip() for n in os.environ.get("NAILSEG_OWNERS", "").split(",") if n.strip()}
    if author := os.environ.get("SPACE_AUTHOR_NAME"):
        names.add(author)
    return names


def is_owner(request: gr.Request | None, profile: gr.OAuthProfile | None = None) -> bool:
    """Whether the person behind ``request`` may do owner actions (see the module's docstring)."""
    if not is_public():
        return True
    if profile is not None and oauth_enabled() and profile.username in owners():
        return True
    user = getattr(request, "username", None)
    if user and auth_pairs():
        return user in owners() if os.environ.get("NAILSEG_OWNERS") else True
    return False


def require_owner(request: gr.Request | None, profile: gr.OAuthProfile | None, action: str) -> None:
    """Raise :class:`NotOwner` (a clear message in the page) unless the owner asks for ``action``."""
    if not is_owner(request, profile):
        raise NotOwner(f"{action} is for the owner of this server. {how_to_be_owner()}")


def how_to_be_owner() -> str:
    """One sentence on how the owner signs in here, or that owner actions are off."""
    if oauth_enabled():
        return "Sign in with Hugging Face as the Space's owner."
    if auth_pairs():
        return "Log in as one of the owners (NAILSEG_OWNERS)."
    return (
        "Owner actions are off on this public server: set NAILSEG_AUTH, or enable Hugging Face "
        "sign-in (hf_oauth: true), and NAILSEG_OWNERS."
    )


def owner_file_name(name: str) -> str:
    """The name to give a file handed to Gradio that only the owner may download (exported weights)."""
    return OWNER_FILE_PREFIX + name


def client_address(request) -> str:
    """Who a request comes from, for fair shares: an IPv4 address, or an IPv6 one's /64 network.

    ``request`` is a ``gr.Request`` or a Starlette request. When the direct peer is a private or
    loopback address (the proxy in front of a Space, a local reverse proxy), ``X-Forwarded-For``
    is read from the right, past private hops, to the first public address: the one the proxies
    saw. Entries left of it are whatever the client wrote, and are never read; a server facing
    the internet directly ignores the header.
    """
    peer = getattr(getattr(request, "client", None), "host", None) or ""
    forwarded = [hop.strip() for hop in (request.headers.get("x-forwarded-for") or "").split(",") if hop.strip()]
    address = _ip(peer)
    for hop in reversed(forwarded):
        if address is None or not (address.is_private or address.is_loopback) or _ip(hop) is None:
            break
        address = _ip(hop)
    if address is None:
        return peer or "unknown"
    if address.version == 6:  # one client holds a whole /64
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
