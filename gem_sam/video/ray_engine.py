"""Labelling a folder of videos with Ray: one video per task, one model replica per worker.

Workers write the same window records as the single-process run (``RunStore``), so runs resume across
engines and ``tracks.json`` is the same. Install with ``pip install "gem_sam[ray]"``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..ray_runtime import map_replicas, ray_runtime
from ..run_store import RunStore
from .frames import VideoReadError, open_video
from .pipeline import VideoRunSummary, VideoStats, label_video, write_video_run
from .spec import VideoLabellerSpec


class RayVideoWorker:
    """A Ray Data actor: builds one video labeller, then labels each video of its batches into the store."""

    def __init__(self, *, spec: VideoLabellerSpec, out_path: str) -> None:
        self.labeller = spec.build()
        self.store = RunStore.attach(out_path)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        stats, errors = [], []
        for path in batch["video"]:
            try:
                frames = open_video(path, frame_stride=self.labeller.config.frame_stride)
                stats.append(vars(label_video(self.labeller, frames, store=self.store, progress=False)))
                errors.append("")
                frames.close()
            except VideoReadError as error:
                stats.append({})
                errors.append(str(error))
        return {
            "video": batch["video"],
            "stats": np.array(stats, dtype=object),
            "error": np.array(errors, dtype=object),
        }


def label_videos_ray(
    spec: VideoLabellerSpec,
    *,
    videos: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    inputs: str | os.PathLike,
    address: str | None = None,
    workers: int | None = None,
    restart: bool = False,
    progress: bool = True,
) -> VideoRunSummary:
    """``label_videos`` with Ray: ``address`` None starts a local Ray runtime, else joins that cluster."""
    settings = spec.settings()
    store = RunStore(out_path, settings=settings, restart=restart, images_dir=inputs)
    summary = VideoRunSummary()
    done: dict[str, VideoStats] = {}
    with ray_runtime(address) as ray:
        replicas, results = map_replicas(
            ray,
            [{"video": str(path)} for path in videos],
            RayVideoWorker,
            constructor_kwargs={"spec": spec, "out_path": str(out_path)},
            workers=workers,
        )
        with tqdm(
            total=len(videos), desc=f"videos ({replicas} Ray workers)", unit="video", disable=not progress
        ) as bar:
            for row in results:
                if row["error"]:
                    summary.skipped.append((Path(row["video"]).name, row["error"]))
                else:
                    done[row["video"]] = VideoStats(**row["stats"])
                bar.update(1)
    opened = []
    for path in videos:  # in input order, as the single-process run writes them
        if str(path) in done:
            summary.videos.append(done[str(path)])
            opened.append(open_video(path, frame_stride=spec.video.frame_stride))
    summary.skipped.sort()
    write_video_run(
        opened, naming=spec.naming_rule(), store=store, settings=settings, summary=summary, out_path=out_path
    )
    return summary
