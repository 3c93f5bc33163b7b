"""Reach a Ray cluster for one experiment: a running cluster at an address, the one this
process is already connected to, or a local cluster started for the run and stopped after.
Also: how many workers, and the Ray options each worker asks for."""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray

from ttsearch.errors import RecipeError
from ttsearch.study.recipe import RaySpec

__all__ = ["actor_options", "ray_cluster", "worker_count"]

logger = logging.getLogger(__name__)

NAMESPACE = "ttsearch"


@contextmanager
def ray_cluster(spec: RaySpec, *, workers: int | None, verbose: bool) -> Iterator[str]:
    """Connected to Ray while inside; yields a description of the cluster for messages.

    `spec.address` None: a local cluster on 127.0.0.1, sized to hold `workers` workers
    (at least this machine's CPUs), shut down on leaving. If this process is already
    connected (`ray.init` by the caller), that connection is used and left open.
    Worker output (vLLM's engine logs) reaches this terminal only if `verbose`; it is in
    Ray's session logs either way.
    """
    if ray.is_initialized():
        yield "the Ray cluster this process is connected to"
        return
    options: dict[str, Any] = dict(namespace=NAMESPACE, log_to_driver=verbose, include_dashboard=False)
    if spec.address is None:
        cpus_per_worker = spec.resources.get("num_cpus", 1)
        wanted = math.ceil((workers or 1) * cpus_per_worker)
        ray.init(
            address="local",
            num_cpus=max(os.cpu_count() or 1, wanted),
            _node_ip_address="127.0.0.1",
            # A worker killed outright (SIGKILL, OOM) leaves its vLLM engine processes behind
            # unless the raylet reaps them (on a cluster: this variable on `ray start`).
            _system_config={"kill_child_processes_on_worker_exit_with_raylet_subreaper": True},
            **options,
        )
        where = "a local Ray cluster (127.0.0.1)"
    else:
        try:
            ray.init(address=spec.address, **options)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise RecipeError(f"ray.address {spec.address!r}: cannot connect to a Ray cluster there: {error}") from None
        where = f"the Ray cluster at {spec.address}"
    try:
        with _orderly_sigterm():
            yield where
    finally:
        ray.shutdown()  # stops a local cluster; disconnects from a remote one


@contextmanager
def _orderly_sigterm() -> Iterator[None]:
    """SIGTERM (a scheduler's stop) as KeyboardInterrupt while connected: Ray's core replaces
    the handler with one that dumps a stack and kills the process at once, which would
    skip closing the workers, stopping a local cluster and the store's last flush."""
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can only be set from the main thread
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)  # None: set outside Python


def worker_count(spec: RaySpec) -> int:
    """`spec.workers`, or as many as the cluster's resources hold: its GPUs / `num_gpus`
    per worker when workers ask for GPUs, else its CPUs / `num_cpus` (default 1)."""
    total = ray.cluster_resources()
    if spec.workers is not None:
        needed = {name: amount * spec.workers for name, amount in _as_ray_resources(spec).items()}
        short = {name: total.get(name, 0.0) for name, amount in needed.items() if total.get(name, 0.0) < amount}
        if short:  # an autoscaling cluster may still add nodes: say so, do not refuse
            logger.warning(
                "ray: %d workers need %s but the cluster has %s now; they wait until it has room",
                spec.workers,
                needed,
                short,
            )
        return spec.workers
    gpus = spec.resources.get("num_gpus", 0.0)
    if gpus > 0:
        return max(1, int(total.get("GPU", 0.0) // gpus))
    return max(1, int(total.get("CPU", 1.0) // max(spec.resources.get("num_cpus", 1.0), 1e-9)))


def _as_ray_resources(spec: RaySpec) -> dict[str, float]:
    """A worker's resources under Ray's own names (CPU, GPU, memory, custom)."""
    names = {"num_cpus": "CPU", "num_gpus": "GPU"}
    resources = {"CPU": 1.0, **{names.get(k, k): v for k, v in spec.resources.items()}}
    return {name: amount for name, amount in resources.items() if amount > 0}


def actor_options(spec: RaySpec, *, max_concurrency: int) -> dict[str, Any]:
    """`ray.remote(...).options(...)` of one worker: its resources, restarts and env."""
    options: dict[str, Any] = {
        "max_restarts": spec.max_restarts,
        "max_task_retries": 0,  # the driver hands a failed search out again itself, to another worker
        "max_concurrency": max_concurrency,
        "num_cpus": spec.resources.get("num_cpus", 1),
    }
    if "num_gpus" in spec.resources:
        options["num_gpus"] = spec.resources["num_gpus"]
    if "memory" in spec.resources:
        options["memory"] = spec.resources["memory"]
    custom = {k: v for k, v in spec.resources.items() if k not in ("num_cpus", "num_gpus", "memory")}
    if custom:
        options["resources"] = custom
    if spec.env_vars:
        options["runtime_env"] = {"env_vars": dict(spec.env_vars)}
    return options
