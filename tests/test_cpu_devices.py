"""``mesh.cpu_devices``: splitting the CPU backend into several XLA devices before JAX starts.

Each case runs in a fresh interpreter (the device count is fixed once JAX initialises), with
the test suite's own ``--xla_force_host_platform_device_count`` removed from the environment.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from r1jax.distributed import cpu_device_count

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args: list[str], xla_flags: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "XLA_FLAGS": xla_flags, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )


def fresh_python(code: str, xla_flags: str = "") -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter on the CPU backend (``XLA_FLAGS`` replaced)."""
    return _run(["-c", textwrap.dedent(code)], xla_flags)


@pytest.mark.parametrize("cores,expected", [(1, 1), (2, 2), (3, 2), (6, 4), (8, 8), (64, 8)])
def test_one_device_per_core_is_a_power_of_two_up_to_8(monkeypatch, cores, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert cpu_device_count(-1) == expected
    assert cpu_device_count(3) == 3


def test_bad_count_is_named():
    with pytest.raises(ValueError, match=r"mesh.cpu_devices=-3"):
        cpu_device_count(-3)


def test_sets_the_device_count_before_jax_starts():
    r = fresh_python(
        """
        import jax
        from r1jax.distributed import configure_cpu_devices
        assert configure_cpu_devices(0) is None
        print(configure_cpu_devices(3), jax.device_count())
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["3", "3"]


def test_several_devices_keep_collectives_in_order(tmp_path):
    """The scheduler flag lands in ``XLA_FLAGS`` before the backend starts, and XLA reads
    flags added at that point (an ``--xla_dump_to`` added alongside takes effect)."""
    r = fresh_python(
        f"""
        import os
        import jax, jax.numpy as jnp
        from r1jax.distributed import configure_cpu_devices
        print(configure_cpu_devices(2))
        print(os.environ["XLA_FLAGS"])
        os.environ["XLA_FLAGS"] += " --xla_dump_to={tmp_path / "dump"}"
        jax.jit(lambda x: x + 1)(jnp.ones(2)).block_until_ready()
        """
    )
    assert r.returncode == 0, r.stderr
    count, flags = r.stdout.splitlines()
    assert count == "2"
    assert flags == "--xla_cpu_enable_concurrency_optimized_scheduler=false"
    assert any((tmp_path / "dump").iterdir())


@pytest.mark.parametrize(
    "requested,xla_flags,expected",
    [
        (0, "", ""),  # one device: nothing to order
        (
            0,
            "--xla_force_host_platform_device_count=4",
            "--xla_force_host_platform_device_count=4 "
            "--xla_cpu_enable_concurrency_optimized_scheduler=false",
        ),
        (  # the caller's own setting stays
            2,
            "--xla_cpu_enable_concurrency_optimized_scheduler=true",
            "--xla_cpu_enable_concurrency_optimized_scheduler=true",
        ),
    ],
)
def test_scheduler_flag_only_where_needed(requested, xla_flags, expected):
    r = fresh_python(
        f"""
        import os
        from r1jax.distributed import configure_cpu_devices
        configure_cpu_devices({requested})
        print(repr(os.environ["XLA_FLAGS"]))
        """,
        xla_flags=xla_flags,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == repr(expected)


def test_explicit_xla_flag_wins():
    r = fresh_python(
        """
        import jax
        from r1jax.distributed import configure_cpu_devices
        print(configure_cpu_devices(3), jax.device_count())
        """,
        xla_flags="--xla_force_host_platform_device_count=5",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["None", "5"]


def test_too_late_warns_and_changes_nothing():
    r = fresh_python(
        """
        import warnings
        import jax, jax.numpy as jnp
        from r1jax.distributed import configure_cpu_devices
        jnp.ones(2).block_until_ready()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            out = configure_cpu_devices(4)
        print(out, jax.device_count(), str(w[0].message))
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("None 1 mesh.cpu_devices=4 ignored: JAX was already initialised")


def test_cli_applies_the_config_before_jax_starts():
    args = ["info", "--config=configs/tiny_smoke.py", "--config.mesh.cpu_devices=2"]
    r = _run(["-m", "r1jax.cli", *args])  # (absl's config overrides need -m, not -c)
    assert r.returncode == 0, r.stderr
    assert "devices=2 " in r.stdout and "mesh {'data': 2, 'fsdp': 1, 'tensor': 1}" in r.stdout
