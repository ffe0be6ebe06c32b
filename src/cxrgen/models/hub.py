"""Before asking timm for pretrained weights from the hub: are they on disk, or is the hub reachable at all?

Offline, timm's download retries for about a minute with repeated warnings before it fails. A study that asks for
pretrained weights on a machine without network should fail in seconds, once, naming what to do instead.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from cxrgen.errors import CxrgenError

#: Seconds to wait for the hub's TCP handshake before calling the machine offline.
PROBE_TIMEOUT_S = 3.0
#: Files timm looks for in a hub repository, in its order.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def _cached(repo: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo, name), str) for name in WEIGHT_FILES)


def _offline_reason() -> str | None:
    """Why the hub cannot be reached from here (``HF_HUB_OFFLINE`` or no TCP connection), or None."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return "HF_HUB_OFFLINE is set"
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"{url.hostname} cannot be reached ({exc.strerror or type(exc).__name__})"


def require_hub_weights(arch: str, repo: str | None) -> None:
    """Raise at once when ``arch``'s hub weights are neither cached nor downloadable.

    Args:
        arch: The architecture's name in the study file (named in the message's keys).
        repo: The hub repository of its weights (timm's ``hf_hub_id``); None when timm fetches from a URL, which is
            then left to timm.

    Raises:
        CxrgenError: offline and not in the local cache; the message names the three ways on.
    """
    if repo is None or _cached(repo):
        return
    reason = _offline_reason()
    if reason is None:
        return
    raise CxrgenError(
        f"pretrained weights for {arch!r} are not in the local cache and {reason}. Either download "
        f"{repo} (model.safetensors) on a machine with network and name it under train.weights.{arch} with its "
        f"train.weights_sha256.{arch}; or fill the cache where there is network and run with HF_HUB_OFFLINE=1; "
        "or set train.pretrained: false (random initialization)"
    )
