"""Ray for labelling and evaluation runs: a runtime (local or a cluster) and model replicas mapped over
items with Ray Data. Ray is optional: ``pip install "gem_sam[ray]"``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def import_ray():  # noqa: ANN202 - the ray module
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is the part we use
    except ImportError as error:
        raise ImportError('--ray needs Ray Data: pip install "gem_sam[ray]"') from error
    return ray


@contextmanager
def ray_runtime(address: str | None) -> Iterator[Any]:
    """The ray module, with a runtime: a local one started here (and shut down after) when none is
    running and ``address`` is None, else the cluster at ``address``."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def map_replicas(
    ray: Any, rows: list[dict[str, Any]], actor: type, *, constructor_kwargs: dict[str, Any], workers: int | None
) -> tuple[int, Iterator[dict[str, Any]]]:
    """Run the Ray Data actor class ``actor`` over ``rows`` one at a time on ``workers`` replicas
    (default: one per GPU, else 1); each takes one GPU when the cluster has GPUs, else an equal share
    of the CPUs. Returns the number of replicas and the output rows as they finish."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    workers = workers or max(1, gpus)
    if workers < 1:
        raise ValueError(f"--ray-workers {workers} must be at least 1")
    per_worker = {"num_gpus": 1} if gpus else {"num_cpus": max(1, int(resources.get("CPU", 1)) // workers)}
    results = ray.data.from_items(rows).map_batches(
        actor, fn_constructor_kwargs=constructor_kwargs, batch_size=1, concurrency=workers, **per_worker
    )
    return workers, results.iter_rows()
