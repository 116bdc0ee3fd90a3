"""``mesh.cpu_keep_memory``: XLA:CPU's per-call temporaries stop page-faulting in again.

The fault counts run in fresh interpreters: malloc settings are per process, and threads
that allocated before the call keep their own heaps.
"""

import pytest
from test_cpu_devices import fresh_python

from r1jax import host_memory
from r1jax.config import base_config

glibc_only = pytest.mark.skipif(
    not host_memory._mallopt({}), reason="mallopt(3) needs Linux with glibc"
)

# A jitted step whose temporaries (two [2048, 8192] float32 arrays, 64 MB each, per device)
# are above glibc's largest mmap threshold (32 MB): by default each call maps them afresh.
# Prints the minor page faults of the third call.
FAULTS = """
import resource
from r1jax.build import configure_devices
from r1jax.config import base_config
c = base_config()
c.mesh.cpu_devices = 2
c.mesh.cpu_keep_memory = KEEP
configure_devices(c)
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
mesh = jax.make_mesh((2,), ("d",))
x = jax.device_put(jnp.ones((4096, 256)), NamedSharding(mesh, P("d")))
w = jax.device_put(jnp.full((256, 8192), 0.01), NamedSharding(mesh, P()))
f = jax.jit(lambda x, w: jnp.sum(jnp.tanh(x @ w) @ w.T))
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x, w).block_until_ready()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(keep: bool) -> int:
    r = fresh_python(FAULTS.replace("KEEP", str(keep)))
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[-1])


@glibc_only
def test_kept_memory_is_reused_without_page_faults():
    default, kept = _faults(False), _faults(True)
    # 2 devices x 2 x 64 MB of fresh 4 KB pages is ~65,000 faults a call; measured 65,000 on
    # one VM, 10,240 on another (the kernel maps several pages a fault); reused memory: 0
    assert default > 5_000, f"control: {default} faults a call without the setting"
    assert kept < 2_000, f"{kept} faults a call with mesh.cpu_keep_memory (default: {default})"


def test_configure_devices_undoes_it_off_the_cpu(monkeypatch):
    import jax

    from r1jax import build

    calls = []
    monkeypatch.setattr(host_memory, "keep_freed_memory", lambda: calls.append("keep") or True)
    monkeypatch.setattr(host_memory, "restore_defaults", lambda: calls.append("restore") or True)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    c = base_config()
    build.configure_devices(c)
    assert calls == ["keep", "restore"]
    calls.clear()
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    build.configure_devices(c)
    assert calls == ["keep"]
    calls.clear()
    c.mesh.cpu_keep_memory = False
    build.configure_devices(c)
    assert calls == []


def test_does_nothing_without_glibc(monkeypatch):
    import platform

    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert host_memory.keep_freed_memory() is False
    assert host_memory.restore_defaults() is False
