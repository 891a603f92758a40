"""Remote checkpoints: a URL or model-zoo name the user gave becomes a checked file in the cache.

The cache is $VIDFORMER_CACHE/checkpoints (default ~/.cache/vidformer/checkpoints): zoo files under their
zoo file name, other URLs under by-url/<hash of the URL>/<file name>. A file there is used as it is, with
no network, so a cluster job without internet runs on what an earlier download (or a copy by hand) left.
Nothing is fetched unless the user named a URL or a zoo entry.

A download goes through torch.hub.download_url_to_file (progress bar, its own temp file) into a staging
name that is never looked up, is checked there, and only then renamed to its cache name: the sha256 the
zoo gives, else the hash prefix in the file name (torch.hub's `name-<hex>.ext`), and always that the file
is whole (the index at the end of a zip or the tensor table of a safetensors file is there, else the
pickle loads), because a server that closes early is not an error to urllib. Any failure leaves nothing
at the cache name and says, in one line, the URL and where a file fetched by hand goes.
"""

import hashlib
import http.client
import json
import os
import pickle
import struct
import zipfile

import torch
import torch.hub

from vidformer.checkpoint.zoo import ZOO_PREFIX, PretrainedEntry, entry_for_url, get_entry, zoo_name
from vidformer.errors import DownloadError

_SCHEMES = ("http://", "https://")


def cache_dir() -> str:
    """Where downloaded checkpoints live: $VIDFORMER_CACHE/checkpoints, default ~/.cache/vidformer/checkpoints."""
    root = os.environ.get("VIDFORMER_CACHE") or os.path.join("~", ".cache", "vidformer")
    return os.path.join(os.path.expanduser(root), "checkpoints")


def is_remote(source) -> bool:
    """True for an http(s) URL, `zoo:NAME`, or a bare zoo name that is not a local file."""
    if not isinstance(source, str):
        return False
    return source.startswith(_SCHEMES) or (not os.path.exists(source) and zoo_name(source) is not None)


def resolve_source(source: str) -> str:
    """A local path for `source`: zoo names and URLs are found in the cache or fetched into it;
    anything else (a path, an iopath URI) comes back unchanged."""
    if not source.startswith(ZOO_PREFIX) and os.path.exists(source):
        return source
    name = zoo_name(source)
    if name is not None:
        return fetch_entry(get_entry(name))
    if source.startswith(_SCHEMES):
        entry = entry_for_url(source)
        if entry is not None:
            return fetch_entry(entry)
        return fetch_url(source, url_cache_path(source), sha256=hash_in_name(source))
    return source


def entry_of(source) -> PretrainedEntry | None:
    """The zoo entry a source names (`zoo:NAME`, a bare zoo name that is no local file, or a zoo URL)."""
    if not is_remote(source):
        return None
    name = zoo_name(source)
    return get_entry(name) if name is not None else entry_for_url(source)


def cache_path(entry: PretrainedEntry) -> str:
    return os.path.join(cache_dir(), entry.cache_name)


def url_cache_path(url: str) -> str:
    """by-url/<12 hex of sha256(url)>/<the URL's file name>: distinct URLs never share a file."""
    base = url.split("?")[0].rstrip("/").split("/")[-1] or "checkpoint.pth"
    return os.path.join(cache_dir(), "by-url", hashlib.sha256(url.encode()).hexdigest()[:12], base)


def hash_in_name(url: str) -> str:
    """The sha256 prefix in a torch.hub-style file name (`mvit_v2_s-ae3be167.pth` -> `ae3be167`), or ""."""
    match = torch.hub.HASH_REGEX.search(url.split("?")[0].split("/")[-1])
    return match.group(1) if match and len(match.group(1)) >= 8 else ""


def fetch_entry(entry: PretrainedEntry) -> str:
    """The local file of a zoo entry: the cached one, else downloaded (or how to place it by hand)."""
    dst = cache_path(entry)
    if os.path.isfile(dst):
        return dst
    if not entry.url:
        raise DownloadError(
            f"{entry.name} is published at {entry.page}, a host that needs a browser: download "
            f"{entry.cache_name} there and place it at {dst}")
    return fetch_url(entry.url, dst, sha256=entry.sha256 or hash_in_name(entry.url), what=entry.name)


def fetch_url(url: str, dst: str, *, sha256: str = "", what: str = "") -> str:
    """`dst` if it exists, else download `url` there (checked; atomic). Returns dst."""
    if os.path.isfile(dst):
        return dst
    what = what or url
    by_hand = f"download {url} by hand and place it at {dst}"
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    staging = f"{dst}.{os.getpid()}.download"  # per process, so ranks fetching at once do not collide
    try:
        try:
            torch.hub.download_url_to_file(url, staging, hash_prefix=sha256 or None, progress=True)
        except RuntimeError as e:  # torch.hub's hash check
            raise DownloadError(f"{what}: the download does not match its sha256 ({e}); {by_hand}") from None
        except (OSError, http.client.HTTPException) as e:  # URLError / HTTPError are OSErrors
            raise DownloadError(f"could not download {what} ({_reason(e)}); {by_hand}") from None
        problem = incomplete(staging, safetensors=dst.endswith(".safetensors"))
        if problem:
            raise DownloadError(f"{what}: the download is {problem}; {by_hand}")
        os.replace(staging, dst)
    finally:
        if os.path.exists(staging):
            os.remove(staging)
    return dst


def incomplete(path: str, *, safetensors: bool = False) -> str:
    """What is wrong with a downloaded checkpoint file ("" if it is whole)."""
    if zipfile.is_zipfile(path):  # torch.save's format: the zip's index is its last bytes, so a cut file has none
        return ""
    if safetensors:
        return _safetensors_incomplete(path)
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # whole, but it needs code to unpickle: the loader refuses it with the one-line fix
        return "" if "GLOBAL" in str(e) else "not a PyTorch checkpoint (an error page?)"
    except Exception as e:  # noqa: BLE001  any failure to read it back means the file is not usable
        return f"truncated or not a PyTorch checkpoint ({type(e).__name__})"
    return ""


def _safetensors_incomplete(path: str) -> str:
    """A safetensors file is an 8-byte header length, a JSON table of tensor offsets, then the data."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        try:
            header_len = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(header_len))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (struct.error, ValueError, KeyError, TypeError, UnicodeDecodeError):
            return "not a safetensors file"
    expected = 8 + header_len + end
    return "" if size == expected else f"truncated ({size} of {expected} bytes)"


def _reason(e: Exception) -> str:
    reason = getattr(e, "reason", None) or e
    return f"{type(e).__name__}: {reason}"
