"""Running an evaluation item by item, resumable and optionally on Ray.

An evaluation is a list of item ids (images) and a picklable *task* whose ``build()`` loads the
models once and returns a function ``item id -> record`` (a JSON dict: the item's counts, or why it
was skipped). Records are saved as they finish (``RunStore``, one file per item), so a killed run
resumes where it stopped; the report is computed afterwards from the records, in item order, so it
equals an uninterrupted run's whatever the engine, the number of workers or the interruptions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import open_clip
from tqdm import tqdm

from ..naming.scorer import GemScorer, ScorerConfig, build_gem_scorer, scorer_config
from ..ray_runtime import map_replicas, ray_runtime
from ..run_store import RunStore
from ..sam import GridMaskGenerator, SamArchitecture, build_mask_generator, register_sam_architecture

Record = dict[str, Any]


class EvaluationTask(Protocol):
    def build(self) -> Callable[[str], Record]: ...


class MemoryStore:
    """Records kept in memory (a run without an output folder)."""

    def __init__(self) -> None:
        self.records: dict[str, Record] = {}

    def has(self, name: str) -> bool:
        return name in self.records

    def save_record(self, name: str, record: Record) -> None:
        self.records[name] = json.loads(json.dumps(record))

    def load_record(self, name: str) -> Record:
        return self.records[name]


@dataclass(frozen=True)
class ModelSpec:
    """The models of an evaluation, as plain data that can travel to worker processes."""

    clip_model: str = "ViT-B-16"
    pretrained: str | None = "openai"
    method: str = "gem"  # dense path (gem for gem-sam)
    scorer_options: dict[str, Any] = field(default_factory=dict)
    sam_model: str | None = None  # None: no mask generator
    sam_checkpoint: str | None = None
    generator_settings: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    clip_config_paths: tuple[str, ...] = ()  # custom open_clip configs to register in each process
    sam_architectures: dict[str, SamArchitecture] = field(default_factory=dict)

    def build(self, device: str | None = None) -> tuple[GemScorer, GridMaskGenerator | None]:
        for path in self.clip_config_paths:
            open_clip.add_model_config(path)
        for name, architecture in self.sam_architectures.items():
            register_sam_architecture(name, architecture)
        scorer = build_gem_scorer(
            model_name=self.clip_model,
            pretrained=self.pretrained,
            method=self.method,
            device=device or self.device,
            **{key: value for key, value in self.scorer_options.items() if value is not None},
        )
        if self.sam_model is None:
            return scorer, None
        generator = build_mask_generator(
            model_type=self.sam_model, checkpoint=self.sam_checkpoint, device=scorer.device, **self.generator_settings
        )
        return scorer, generator

    def scorer_config(self) -> ScorerConfig:
        """The scorer's configuration, without loading weights."""
        return scorer_config(
            method=self.method, **{key: value for key, value in self.scorer_options.items() if value is not None}
        )

    def settings(self) -> dict[str, Any]:
        """What changes the results (for refusing to resume a run with other models)."""
        settings = dataclasses.asdict(self)
        for key in ("device", "clip_config_paths", "sam_architectures"):
            settings.pop(key)
        return settings


class _RayEvaluationWorker:
    """A Ray Data actor: builds the task's function once, then evaluates and saves each item."""

    def __init__(self, *, task: EvaluationTask, out_path: str) -> None:
        self.evaluate = task.build()
        self.store = RunStore.attach(out_path)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for item in batch["item"]:
            self.store.save_record(str(item), self.evaluate(str(item)))
        return {"item": batch["item"]}


def run_evaluation(
    task: EvaluationTask,
    *,
    items: Sequence[str],
    store: RunStore | MemoryStore,
    on_record: Callable[[Record], str | None] | None = None,
    ray_address: str | None = None,
    use_ray: bool = False,
    workers: int | None = None,
    progress: bool = True,
    desc: str = "evaluating",
) -> list[Record]:
    """Evaluate the items not yet in ``store`` and return every item's record, in item order.

    ``on_record`` sees each record as it is done (resumed ones first) and returns a progress-bar
    note (e.g. the running metric). With ``use_ray``, items are spread over ``workers`` model
    replicas (default: one per GPU, else 1) on a local Ray runtime or the cluster at ``ray_address``;
    the store must then be a ``RunStore`` on a file system every worker sees.
    """
    todo = [item for item in items if not store.has(item)]
    with tqdm(total=len(items), desc=desc, unit="img", disable=not progress) as bar:

        def done(record: Record) -> None:
            note = on_record(record) if on_record else None
            if note:
                bar.set_postfix_str(note, refresh=False)
            bar.update(1)

        for item in items:
            if store.has(item):
                done(store.load_record(item))
        if todo and use_ray:
            if not isinstance(store, RunStore):
                raise ValueError("a Ray evaluation keeps its records on disk: give an output file")
            for item in _run_on_ray(task, todo, store=store, address=ray_address, workers=workers):
                done(store.load_record(item))
        elif todo:
            evaluate = task.build()
            for item in todo:
                record = evaluate(item)
                store.save_record(item, record)
                done(record)
    return [store.load_record(item) for item in items]


def _run_on_ray(
    task: EvaluationTask, items: list[str], *, store: RunStore, address: str | None, workers: int | None
) -> Iterator[str]:
    with ray_runtime(address) as ray:
        _, results = map_replicas(
            ray,
            [{"item": item} for item in items],
            _RayEvaluationWorker,
            constructor_kwargs={"task": task, "out_path": str(store.out_path)},
            workers=workers,
        )
        for row in results:
            yield str(row["item"])


def selection_settings(settings: dict[str, Any], selected: Sequence[str]) -> dict[str, Any]:
    """What a resumed evaluation must share with the first run: its settings and its items."""
    digest = hashlib.sha1("\n".join(selected).encode("utf-8")).hexdigest()
    return json.loads(json.dumps({**settings, "items": {"count": len(selected), "sha1": digest}}, default=str))


def evaluate_selected(
    task: EvaluationTask,
    selected: Sequence[str],
    *,
    on_record: Callable[[Record], str | None],
    out_path: str | os.PathLike | None = None,
    settings: dict[str, Any] | None = None,
    restart: bool = False,
    use_ray: bool = False,
    ray_address: str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[list[Record], float]:
    """``run_evaluation`` over ``selected`` with its records kept beside ``out_path`` (checked against
    ``settings`` and the selection; in memory without ``out_path``). Returns the records in item
    order and the seconds this run took."""
    store = (
        RunStore(out_path, settings=selection_settings(settings or {}, selected), restart=restart)
        if out_path is not None
        else MemoryStore()
    )
    start = time.perf_counter()
    records = run_evaluation(
        task,
        items=selected,
        store=store,
        on_record=on_record,
        use_ray=use_ray,
        ray_address=ray_address,
        workers=workers,
        progress=progress,
    )
    return records, time.perf_counter() - start
