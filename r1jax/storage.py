"""Local or remote paths: ``gs://`` (and ``s3://``, ...) run directories, models, data.

On a TPU pod the run directory is usually a bucket (``--config.run_dir=gs://b/runs/x``): all
hosts write their Orbax checkpoint shards there, and the run survives the VMs. Orbax reads
and writes such paths itself; r1jax's own files (metrics, eval results, traces, exports,
plots) and the files it reads (HF models, tokenizers, data files) go through ``etils.epath``,
which reaches ``gs://`` with ``gcsfs`` installed (``pip install r1jax[gcs]``). A path without a
``scheme://`` is a local path, handled exactly as by ``os`` / ``open``.

Object stores cannot append: :func:`append_text` rewrites a remote object, and
:class:`r1jax.metrics.MetricsWriter` uploads all its rows every 30 s instead. Libraries that
need local files (safetensors memory maps, the Rust tokenizer, sentencepiece) get a copy of
the remote files they need in a local cache (:func:`local_copy`).
"""

from __future__ import annotations

import fnmatch
import glob as glob_lib
import hashlib
import importlib.util
import logging
import os
import shutil
from collections.abc import Sequence

from etils import epath

log = logging.getLogger(__name__)
CACHE_ENV = "R1JAX_CACHE"
"""Where :func:`local_copy` keeps remote files (default ``~/.cache/r1jax``)."""


def is_remote(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a URL such as ``gs://bucket/x`` (not a local path)."""
    return "://" in str(path)


def check_remote_paths(fields: dict[str, str], tensorboard_dir: str | None = None) -> None:
    """Fails early, naming the config field, when a remote path of ``fields`` (field name ->
    path) cannot be reached: no file-system package for its scheme (``gcsfs`` for ``gs://``),
    or no TensorBoard writer package for a remote ``tensorboard_dir``. Local paths are not
    checked here.

    Raises:
      ValueError: naming the field, the path and what to install.
    """
    for field, p in fields.items():
        if not p or not is_remote(p):
            continue
        try:
            path(p).exists()
        except KeyError:
            raise ValueError(f"{field}={p!r}: unknown scheme (local paths, gs://, s3://)") from None
        except (ImportError, NotImplementedError) as e:
            raise ValueError(
                f"{field}={p!r}: cannot reach it ({type(e).__name__}: {e}); for gs:// paths "
                "pip install 'r1jax[gcs]' (gcsfs)"
            ) from None
    if tensorboard_dir and is_remote(tensorboard_dir):
        scheme = tensorboard_dir.split("://", 1)[0]
        needs = {"gs": ("google.cloud.storage", "google-cloud-storage"), "s3": ("boto3", "boto3")}
        module, package = needs.get(scheme, (None, None))
        if module is None or not _importable(module):
            raise ValueError(
                f"run_dir={tensorboard_dir.rsplit('/', 1)[0]!r}: TensorBoard files there need "
                f"{package or 'a gs:// or s3:// bucket'} (pip install 'r1jax[gcs]' for gs://), "
                "or --config.train.tensorboard=False"
            )


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def path(p: str | os.PathLike) -> epath.Path:
    """``p`` as an ``epath.Path`` (local or remote)."""
    return epath.Path(p)


def absolute(p: str) -> str:
    """``os.path.abspath`` of a local path; a remote one as it is."""
    return p if is_remote(p) else os.path.abspath(p)


def dir_key(p: str) -> str:
    """``p`` absolute and without a trailing ``/``: equal for two names of one directory."""
    return absolute(p).rstrip("/")


def exists(p: str) -> bool:
    return path(p).exists()


def isdir(p: str) -> bool:
    return path(p).is_dir()


def isfile(p: str) -> bool:
    q = path(p)
    return q.exists() and not q.is_dir()


def listdir(p: str) -> list[str]:
    """The names in directory ``p`` ([] when it does not exist)."""
    q = path(p)
    return sorted(c.name for c in q.iterdir()) if q.is_dir() else []


def makedirs(p: str) -> None:
    path(p).mkdir(parents=True, exist_ok=True)


def glob(pattern: str) -> list[str]:
    """The paths matching ``pattern`` (``*``, ``?``, ``[...]`` in any component), sorted."""
    if not is_remote(pattern):
        return sorted(glob_lib.glob(pattern))
    scheme, rest = pattern.split("://", 1)
    parts = rest.split("/")
    first = next((i for i, part in enumerate(parts) if glob_lib.has_magic(part)), None)
    if first is None:  # one path
        return [pattern] if exists(pattern) else []
    base = path(f"{scheme}://{'/'.join(parts[:first])}")
    return sorted(str(m) for m in base.glob("/".join(parts[first:])))


def has_magic(pattern: str) -> bool:
    """Whether ``pattern`` is a glob pattern rather than one path."""
    return glob_lib.has_magic(pattern)


def read_text(p: str) -> str:
    return path(p).read_text(encoding="utf-8")


def write_text(p: str, text: str) -> None:
    """Writes ``text`` to ``p`` whole: a local file via ``p.tmp`` and a rename, so a reader
    never sees half of it; an object store's upload is atomic by itself."""
    if is_remote(p):
        path(p).write_text(text, encoding="utf-8")
        return
    with open(p + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(p + ".tmp", p)


def append_text(p: str, text: str) -> None:
    """Appends ``text`` to ``p`` (created if missing). Remote: reads and rewrites the object
    (object stores cannot append), so keep remote files that grow this way small."""
    if not is_remote(p):
        with open(p, "a", encoding="utf-8") as f:
            f.write(text)
        return
    old = read_text(p) if exists(p) else ""
    path(p).write_text(old + text, encoding="utf-8")


def remove(p: str) -> None:
    path(p).unlink()


def rename(src: str, dst: str) -> None:
    """Moves file ``src`` to ``dst`` (replacing it): ``os.replace`` locally; an object store
    has no rename, so there it is a copy and a delete."""
    if not is_remote(src) and not is_remote(dst):
        os.replace(src, dst)
        return
    copy_file(src, dst)
    remove(src)


def copy_file(src: str, dst: str) -> None:
    """Copies one file between any two local or remote places (overwriting ``dst``), streamed
    (a backend's own copy does not cross from local to remote)."""
    with path(src).open("rb") as r, path(dst).open("wb") as w:
        shutil.copyfileobj(r, w, 16 * 1024 * 1024)


def upload_dir(local: str, dst: str) -> list[str]:
    """Copies the files of the local directory ``local`` (not its subdirectories) into ``dst``
    (created); returns their names."""
    makedirs(dst)
    names = sorted(n for n in os.listdir(local) if os.path.isfile(os.path.join(local, n)))
    for name in names:
        copy_file(os.path.join(local, name), os.path.join(dst, name))
    return names


def local_copy(src: str, patterns: Sequence[str] = ("*",)) -> str:
    """A local path holding remote ``src``'s files: ``src`` itself when it is local; else a
    folder of the cache (:data:`CACHE_ENV`) with the files of directory ``src`` whose names
    match one of ``patterns`` (its subdirectories are not copied), or the file ``src``.
    Files already in the cache with the remote size and modification time are not copied
    again; a file is renamed into place once complete, so an interrupted copy is redone, never
    used half-written."""
    if not is_remote(src):
        return src
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "r1jax")
    remote = path(src)
    digest = hashlib.sha1(str(src).rstrip("/").encode()).hexdigest()[:12]
    folder = os.path.join(root, "remote", f"{remote.name}-{digest}")
    os.makedirs(folder, exist_ok=True)
    if not remote.is_dir():
        if not remote.exists():
            raise FileNotFoundError(f"{src} does not exist")
        _fetch(remote, os.path.join(folder, remote.name))
        return os.path.join(folder, remote.name)
    files = [c for c in remote.iterdir() if any(fnmatch.fnmatch(c.name, p) for p in patterns)]
    files = [c for c in files if not c.is_dir()]
    for i, c in enumerate(sorted(files, key=lambda c: c.name)):
        _fetch(c, os.path.join(folder, c.name), f"{i + 1}/{len(files)}")
    return folder


def _fetch(remote: epath.Path, local: str, count: str = "1/1") -> None:
    """Copies ``remote`` to ``local`` unless a copy with its size and time is there; each
    process copies under its own temporary name, so processes sharing a host (one per GPU)
    never write into one file."""
    stat = remote.stat()
    if os.path.exists(local):
        have = os.stat(local)
        if have.st_size == stat.length and int(have.st_mtime) == int(stat.mtime):
            return
    log.warning("copying %s (%.1f MB, file %s) to %s", remote, stat.length / 1e6, count, local)
    partial = f"{local}.partial-{os.getpid()}"
    copy_file(str(remote), partial)
    os.utime(partial, (stat.mtime, stat.mtime))
    os.replace(partial, local)
