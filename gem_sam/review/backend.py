"""A Label Studio ML backend: Label Studio asks it for predictions of its tasks, and it answers with
gem_sam's masks as brush predictions, the same as ``gem_sam.export --to label-studio`` writes.

The protocol Label Studio speaks (a Starlette app, served by uvicorn):

- ``GET /health``: ``{"status": "UP", "model_class": "gem_sam", ...}``;
- ``POST /setup``: Label Studio connects a project; answers the model version;
- ``POST /predict``: ``{"tasks": [...], "label_config": "..."}`` -> ``{"results": [predictions per task]}``;
- ``POST /webhook``: accepted and ignored (gem_sam does not train).

Safe to expose: with ``BasicAuth`` every route asks for HTTP basic auth (Label Studio sends it when the
model's settings give a user and password); request bodies and the tasks per request are bounded
(``BackendLimits``; 413 past them); images are read from the document root or fetched only as
``fetch.FetchPolicy`` allows. Predictions run in a worker thread, one at a time (the models are not
shared between threads), so ``/health`` answers while a batch is labelled.

Each task gets its own result: a task whose image cannot be fetched or read gets no prediction (an empty
list), its error is logged and listed under ``errors``, and the other tasks still get theirs. Errors of
the whole request are JSON ``{"error": message}``: a malformed request (400), a label config without a
``BrushLabels`` whose labels cover the vocabulary (400), a body or batch too large (413), missing or
wrong credentials (401).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import json
import logging
import threading
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlparse

import numpy as np

from ..images import ImageReadError, load_image
from ..labelling.pipeline import AutoLabeller
from .fetch import FetchPolicy, FetchRefused, fetch
from .label_studio import BRUSH_NAME, IMAGE_NAME, LOCAL_FILES_URL, prediction

LOG = logging.getLogger("gem_sam.serve")


class BackendError(Exception):
    """A request the backend cannot answer; ``status`` is the HTTP status, the message says why."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class BackendLimits:
    """Bounds of one request."""

    max_body_bytes: int = 16 * 2**20  # a /predict body (tasks with their data); 413 past it
    max_tasks: int = 100  # tasks per /predict; 413 past it (Label Studio sends all selected tasks at once)


@dataclass(frozen=True)
class BasicAuth:
    """HTTP basic auth credentials (``BASIC_AUTH_USER`` / ``BASIC_AUTH_PASS``, as Label Studio's ML backends
    read them)."""

    user: str
    password: str = field(repr=False)

    def accepts(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries these credentials (compared in constant time)."""
        if not header or not header.lower().startswith("basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user.encode(), self.user.encode()) & hmac.compare_digest(
            password.encode(), self.password.encode()
        )


@dataclass(frozen=True)
class LabelStudioSource:
    """Where task images come from: local-files URLs under ``document_root``, or URLs that ``policy``
    allows (relative ones, such as ``/data/upload/...``, are Label Studio's own)."""

    document_root: Path | None = None
    policy: FetchPolicy = field(default_factory=FetchPolicy)

    def read(self, url: str) -> np.ndarray:
        """The task image at ``url`` as HxWx3 uint8 RGB (EXIF orientation applied)."""
        if url.startswith(LOCAL_FILES_URL) or urlparse(url).path == "/data/local-files/":
            return self._local(url)
        return self._download(url)

    def _local(self, url: str) -> np.ndarray:
        # parse_qs decodes the query once, as Label Studio does: "a%2520b.png" names the file "a%20b.png"
        relative = parse_qs(urlparse(url).query).get("d", [""])[0]
        if self.document_root is None:
            raise BackendError(f"{url!r} is a local-files URL; start the backend with --document-root", status=422)
        root = self.document_root.resolve()
        path = (root / relative).resolve()
        if not path.is_relative_to(root):
            raise BackendError(f"{url!r} points outside --document-root {str(root)!r}", status=422)
        try:
            return load_image(path)
        except ImageReadError as error:
            raise BackendError(f"image {url!r} cannot be read: {error}", status=422) from error

    def _download(self, url: str) -> np.ndarray:
        if not urlparse(url).scheme:
            base = self.policy.label_studio_url
            if not base:
                raise BackendError(f"{url!r} is relative; set LABEL_STUDIO_URL so that it can be fetched", status=422)
            url = urljoin(base.rstrip("/") + "/", url.lstrip("/"))
        try:
            content = fetch(url, self.policy)
        except FetchRefused as error:
            raise BackendError(str(error), status=422) from error
        try:
            return load_image(io.BytesIO(content))
        except ImageReadError as error:
            raise BackendError(f"image {url!r} cannot be read: {error}", status=422) from error


def check_label_config(config: str | None, classes: tuple[str, ...]) -> None:
    """Refuse a labelling config without a BrushLabels (named like the export's) fed by the Image, whose
    labels cover the vocabulary's classes."""
    if not config:
        return  # Label Studio sends it with /setup and /predict; without one there is nothing to check
    try:
        root = ElementTree.fromstring(config)
    except ElementTree.ParseError as error:
        raise BackendError(f"the label config is not XML: {error}", status=400) from error
    brushes = [tag for tag in root.iter("BrushLabels") if tag.get("name") == BRUSH_NAME]
    if not brushes:
        raise BackendError(
            f'the label config has no <BrushLabels name="{BRUSH_NAME}" toName="{IMAGE_NAME}">; use the '
            "label_config.xml that 'gem_sam.export --to label-studio' writes",
            status=400,
        )
    labels = {label.get("value") for label in brushes[0].iter("Label")}
    missing = [name for name in classes if name not in labels]
    if missing:
        raise BackendError(f"the label config's BrushLabels lack the classes {missing}", status=400)


def task_image_urls(tasks: Any, *, max_tasks: int) -> list[str]:
    """Each task's image URL; a request that is not a list of tasks with ``data.image`` is refused
    (400), and one with more than ``max_tasks`` tasks too (413)."""
    if not isinstance(tasks, list) or not tasks:
        raise BackendError("the request has no 'tasks' list", status=400)
    if len(tasks) > max_tasks:
        raise BackendError(
            f"the request has {len(tasks)} tasks; this backend takes at most {max_tasks} at a time (--max-tasks): "
            "retrieve predictions for fewer tasks at once",
            status=413,
        )
    urls = []
    for index, task in enumerate(tasks):
        data = task.get("data") if isinstance(task, dict) else None
        url = data.get(IMAGE_NAME) if isinstance(data, dict) else None
        if not isinstance(url, str) or not url:
            raise BackendError(f"task {index} of the request has no data.{IMAGE_NAME} URL", status=400)
        urls.append(url)
    return urls


class PredictionService:
    """Labels task images with one labeller, loaded once; one prediction at a time."""

    def __init__(self, labeller: AutoLabeller, *, source: LabelStudioSource, version: str) -> None:
        self.labeller = labeller
        self.source = source
        self.version = version
        self.lock = threading.Lock()  # the models are not shared between threads

    def predict_task(self, url: str) -> dict[str, Any]:
        """One task's image -> one Label Studio prediction (the export's brush regions; the prediction's
        score is 1 - the image's review priority)."""
        image = self.source.read(url)
        with self.lock:
            annotations = self.labeller.label(image)
        names = [self.labeller.classes[annotation["class_index"]] for annotation in annotations]
        return prediction(annotations, names, version=self.version, id_prefix="gs")

    def predict(self, tasks: list[dict[str, Any]], urls: list[str]) -> tuple[list[Any], list[dict[str, Any]]]:
        """Per task, ``[prediction]``, or ``[]`` (no prediction) where it failed; and the failures."""
        results, errors = [], []
        for task, url in zip(tasks, urls, strict=True):
            try:
                results.append([self.predict_task(url)])
            except BackendError as failure:
                LOG.warning("task %s: %s", task.get("id"), failure)
                results.append([])
                errors.append({"task": task.get("id"), "error": str(failure)})
        return results, errors


def create_app(  # noqa: ANN201 - a Starlette application
    service: PredictionService, *, auth: BasicAuth | None = None, limits: BackendLimits = BackendLimits()
):
    """The Starlette app of the backend."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def error(message: str, status: int) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Basic realm="gem_sam"'} if status == 401 else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def guarded(handler):  # noqa: ANN001, ANN202
        async def route(request: Request) -> JSONResponse:
            if auth is not None and not auth.accepts(request.headers.get("authorization")):
                return error(
                    "this backend needs HTTP basic auth: set the user and password in the model's settings", 401
                )
            try:
                return await handler(request)
            except BackendError as failure:
                return error(str(failure), failure.status)

        return route

    async def body(request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise BackendError(f"the request body is larger than {limits.max_body_bytes} bytes", status=413)
        received = bytearray()
        async for chunk in request.stream():
            received += chunk
            if len(received) > limits.max_body_bytes:
                raise BackendError(f"the request body is larger than {limits.max_body_bytes} bytes", status=413)
        try:
            data = json.loads(received)
        except ValueError as failure:
            raise BackendError(f"the request body is not JSON: {failure}", status=400) from failure
        if not isinstance(data, dict):
            raise BackendError("the request body must be a JSON object", status=400)
        return data

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "UP", "model_class": "gem_sam", "model_version": service.version})

    async def setup(request: Request) -> JSONResponse:
        data = await body(request)
        check_label_config(data.get("schema") or data.get("label_config"), service.labeller.classes)
        return JSONResponse({"model_version": service.version})

    async def predict(request: Request) -> JSONResponse:
        data = await body(request)
        check_label_config(data.get("label_config"), service.labeller.classes)
        tasks = data.get("tasks")
        urls = task_image_urls(tasks, max_tasks=limits.max_tasks)
        results, errors = await run_in_threadpool(service.predict, tasks, urls)
        return JSONResponse({"results": results, "model_version": service.version, "errors": errors})

    async def webhook(request: Request) -> JSONResponse:
        await body(request)  # bounded like every body
        return JSONResponse({"status": "ignored", "reason": "gem_sam does not train"}, status_code=200)

    return Starlette(
        routes=[
            Route("/health", guarded(health), methods=["GET"]),
            Route("/", guarded(health), methods=["GET"]),
            Route("/setup", guarded(setup), methods=["POST"]),
            Route("/predict", guarded(predict), methods=["POST"]),
            Route("/webhook", guarded(webhook), methods=["POST"]),
        ]
    )
