"""Labelling a folder with Ray Data: one model replica per worker, on one machine or a cluster.

Workers write the same per-image records as the single-process run (``RunStore``), so runs resume
across engines and the assembled COCO file is the same. The image folder and the output folder must
be visible to every node (a shared file system) when the run spans several machines.

Install with ``pip install "gem_sam[ray]"``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..ray_runtime import map_replicas, ray_runtime
from ..run_store import RunStore
from .pipeline import RunSummary, finish_run, label_and_store, prepare_run, stored_key
from .spec import LabellerSpec


class RayLabelWorker:
    """A Ray Data actor: builds one labeller, then labels the files of each batch into the store."""

    def __init__(self, *, spec: LabellerSpec, images_dir: str, out_path: str) -> None:
        self.labeller = spec.build()
        self.store = RunStore.attach(out_path)
        self.images_dir = Path(images_dir)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = [
            label_and_store(
                self.labeller, self.store, self.images_dir, Path(name), overlay_path=Path(overlay) if overlay else None
            )
            for name, overlay in zip(batch["file_name"], batch["overlay"], strict=True)
        ]
        return {
            "file_name": batch["file_name"],
            "key": np.array([key or "" for key, _ in results], dtype=object),
            "skipped": np.array([reason or "" for _, reason in results], dtype=object),
        }


def label_folder_ray(
    spec: LabellerSpec,
    *,
    images_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    address: str | None = None,
    workers: int | None = None,
    restart: bool = False,
    progress: bool = True,
    overlay_dir: str | os.PathLike | None = None,
) -> RunSummary:
    """``label_folder`` with Ray: ``address`` None starts a local Ray runtime, else joins that cluster.

    ``workers``: model replicas; default one per GPU, or one on a machine without GPUs. Each replica
    takes one GPU when the cluster has GPUs, else an equal share of the CPUs.
    """
    settings = spec.settings()
    files, store, overlays = prepare_run(
        images_dir=images_dir, out_path=out_path, settings=settings, restart=restart, overlay_dir=overlay_dir
    )
    summary = RunSummary()
    done: list[str] = []
    todo: list[str] = []
    for file_name in files:
        key, reason = stored_key(store, Path(images_dir), file_name)
        if key is not None:
            done.append(key)
        elif reason is not None:
            summary.skipped.append((file_name.as_posix(), reason))
        else:
            todo.append(file_name.as_posix())
    summary.resumed = len(done)

    start = time.perf_counter()
    if todo:
        with ray_runtime(address) as ray:
            replicas, results = map_replicas(
                ray,
                [{"file_name": name, "overlay": str(overlays[name]) if overlays else ""} for name in todo],
                RayLabelWorker,
                constructor_kwargs={
                    "spec": spec,
                    "images_dir": str(images_dir),
                    "out_path": str(out_path),
                },
                workers=workers,
            )
            with tqdm(
                total=len(todo), desc=f"labelling ({replicas} Ray workers)", unit="img", disable=not progress
            ) as bar:
                for row in results:
                    if row["skipped"]:
                        summary.skipped.append((row["file_name"], row["skipped"]))
                    else:
                        summary.labelled += 1
                        done.append(row["key"])
                    bar.update(1)
    summary.seconds = time.perf_counter() - start
    summary.skipped.sort()
    return finish_run(
        store,
        done=done,
        vocabulary=spec.vocabulary,
        templates=spec.scorer_config().templates,
        summary=summary,
        settings=settings,
        images_dir=images_dir,
    )
