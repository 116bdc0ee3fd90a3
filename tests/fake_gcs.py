"""A ``gs://`` file system for tests: ``etils.epath``'s backend for ``gs://`` replaced by one
that keeps ``gs://<bucket>/<key>`` as the local file ``<root>/<bucket>/<key>``, so code that
reaches remote paths through ``epath`` (r1jax.storage) runs here, and code that does not
(``open``, ``os.path``) misses the files or writes a local ``gs:`` folder instead."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from unittest import mock

from etils.epath import backend as backend_lib
from etils.epath import gpath


class _LocalBucketBackend(backend_lib._OsPathBackend):  # noqa: SLF001 - the os backend's ops
    def __init__(self, root: str):
        self.root = root

    def _local(self, p) -> str:
        s = os.fspath(p)
        return os.path.join(self.root, s[len("gs://") :]) if s.startswith("gs://") else s

    def _remote(self, p) -> str:
        return "gs://" + os.path.relpath(os.fspath(p), self.root)

    def open(self, path, mode):
        return super().open(self._local(path), mode)

    def exists(self, path):
        return super().exists(self._local(path))

    def isdir(self, path):
        return super().isdir(self._local(path))

    def listdir(self, path):
        return super().listdir(self._local(path))

    def glob(self, path):
        return [self._remote(m) for m in super().glob(self._local(path))]

    def walk(self, top, **kwargs):
        for d, dirs, files in super().walk(self._local(top), **kwargs):
            yield self._remote(d), dirs, files

    def makedirs(self, path, **kwargs):
        return super().makedirs(self._local(path), **kwargs)

    def mkdir(self, path, **kwargs):
        return super().mkdir(self._local(path), **kwargs)

    def rmtree(self, path):
        return super().rmtree(self._local(path))

    def remove(self, path):
        return super().remove(self._local(path))

    def rename(self, path, dst):
        return super().rename(self._local(path), self._local(dst))

    def replace(self, path, dst):
        return super().replace(self._local(path), self._local(dst))

    def copy(self, path, dst, overwrite):
        return super().copy(self._local(path), self._local(dst), overwrite=overwrite)

    def stat(self, path):
        return super().stat(self._local(path))


@contextlib.contextmanager
def fake_gcs(root: str) -> Iterator[str]:
    """Within it, ``gs://b/x`` is ``<root>/b/x`` for ``epath``; yields ``root``."""
    os.makedirs(root, exist_ok=True)
    backends = dict(gpath._PREFIX_TO_BACKEND, gs=_LocalBucketBackend(root))  # noqa: SLF001
    with mock.patch.object(gpath, "_PREFIX_TO_BACKEND", backends):
        yield root
