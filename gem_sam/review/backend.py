"""A Label Studio ML backend: Label Studio asks it for predictions of its tasks, and it answers with
gem_sam's masks as brush predictions, the same as ``gem_sam.export --to label-studio`` writes.

The protocol Label Studio speaks (a Starlette app, served by uvicorn):

- ``GET /health``: ``{"status": "UP", "model_class": "gem_sam", ...}``;
- ``POST /setup``: Label Studio connects a project; answers the model version;
- ``POST /predict``: ``{"tasks": [...], "label_config": "..."}`` -> ``{"results": [prediction per task]}``;
- ``POST /webhook``: accepted and ignored (gem_sam does not train).

Errors are JSON ``{"error": message}``: a label config without a ``BrushLabels`` whose labels cover the
vocabulary (400), an image that cannot be fetched or read (422).
"""

from __future__ import annotations

import io
import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urljoin, urlparse

import numpy as np

from ..images import ImageReadError, load_image
from ..labelling.pipeline import AutoLabeller
from .label_studio import BRUSH_NAME, IMAGE_NAME, LOCAL_FILES_URL, prediction

MAX_IMAGE_BYTES = 200 * 2**20  # larger downloads are refused


class BackendError(Exception):
    """A request the backend cannot answer; ``status`` is the HTTP status, the message says why."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LabelStudioSource:
    """Where task images come from: local-files URLs under ``document_root``, or any URL, fetched with
    the Label Studio API key for URLs of Label Studio itself (``url``)."""

    document_root: Path | None = None
    url: str | None = None  # LABEL_STUDIO_URL, for relative URLs such as /data/upload/...
    api_key: str | None = None  # LABEL_STUDIO_API_KEY

    @classmethod
    def from_environment(cls, document_root: str | None) -> LabelStudioSource:
        return cls(
            document_root=Path(document_root) if document_root else None,
            url=os.environ.get("LABEL_STUDIO_URL"),
            api_key=os.environ.get("LABEL_STUDIO_API_KEY"),
        )

    def read(self, url: str) -> np.ndarray:
        """The task image at ``url`` as HxWx3 uint8 RGB (EXIF orientation applied)."""
        if url.startswith(LOCAL_FILES_URL) or urlparse(url).path == "/data/local-files/":
            return self._local(url)
        return self._download(url)

    def _local(self, url: str) -> np.ndarray:
        relative = unquote(parse_qs(urlparse(url).query).get("d", [""])[0])
        if self.document_root is None:
            raise BackendError(f"{url!r} is a local-files URL; start the backend with --document-root", status=422)
        root = self.document_root.resolve()
        path = (root / relative).resolve()
        if not path.is_relative_to(root):
            raise BackendError(f"{url!r} points outside --document-root {str(root)!r}", status=422)
        try:
            return load_image(path)
        except ImageReadError as error:
            raise BackendError(f"image {url!r} ({path}) cannot be read: {error}", status=422) from error

    def _download(self, url: str) -> np.ndarray:
        import requests

        absolute = url if urlparse(url).scheme else urljoin((self.url or "").rstrip("/") + "/", url.lstrip("/"))
        if not urlparse(absolute).scheme:
            raise BackendError(f"{url!r} is relative; set LABEL_STUDIO_URL so that it can be fetched", status=422)
        same_host = self.url is not None and urlparse(absolute).netloc == urlparse(self.url).netloc
        headers = {"Authorization": f"Token {self.api_key}"} if same_host and self.api_key else {}
        try:
            response = requests.get(absolute, headers=headers, timeout=60)
            response.raise_for_status()
        except requests.RequestException as error:
            raise BackendError(f"image {absolute!r} cannot be fetched: {error}", status=422) from error
        if len(response.content) > MAX_IMAGE_BYTES:
            raise BackendError(f"image {absolute!r} is larger than {MAX_IMAGE_BYTES} bytes", status=422)
        try:
            return load_image(io.BytesIO(response.content))
        except ImageReadError as error:
            raise BackendError(f"image {absolute!r} cannot be read: {error}", status=422) from error


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


class PredictionService:
    """Labels task images with one labeller, loaded once."""

    def __init__(self, labeller: AutoLabeller, *, source: LabelStudioSource, version: str) -> None:
        self.labeller = labeller
        self.source = source
        self.version = version

    def predict_task(self, task: dict[str, Any]) -> dict[str, Any]:
        """One task -> one Label Studio prediction (the export's brush regions and their scores)."""
        url = (task.get("data") or {}).get(IMAGE_NAME)
        if not isinstance(url, str) or not url:
            raise BackendError(f"task {task.get('id')!r} has no data.{IMAGE_NAME} URL", status=422)
        image = self.source.read(url)
        annotations = self.labeller.label(image)
        names = [self.labeller.classes[annotation["class_index"]] for annotation in annotations]
        return prediction(annotations, names, version=self.version, id_prefix="gs")


def create_app(service: PredictionService):  # noqa: ANN201 - a Starlette application
    """The Starlette app of the backend."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def error(message: str, status: int) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def body(request: Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError as failure:
            raise BackendError(f"the request body is not JSON: {failure}", status=400) from failure
        if not isinstance(data, dict):
            raise BackendError("the request body must be a JSON object", status=400)
        return data

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "UP", "model_class": "gem_sam", "model_version": service.version})

    async def setup(request: Request) -> JSONResponse:
        try:
            data = await body(request)
            check_label_config(data.get("schema") or data.get("label_config"), service.labeller.classes)
        except BackendError as failure:
            return error(str(failure), failure.status)
        return JSONResponse({"model_version": service.version})

    async def predict(request: Request) -> JSONResponse:
        try:
            data = await body(request)
            check_label_config(data.get("label_config"), service.labeller.classes)
            tasks = data.get("tasks")
            if not isinstance(tasks, list):
                raise BackendError("the request has no 'tasks' list", status=400)
            results = [service.predict_task(task) for task in tasks]
        except BackendError as failure:
            return error(str(failure), failure.status)
        return JSONResponse({"results": results, "model_version": service.version})

    async def webhook(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ignored", "reason": "gem_sam does not train"}, status_code=200)

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/", health, methods=["GET"]),
            Route("/setup", setup, methods=["POST"]),
            Route("/predict", predict, methods=["POST"]),
            Route("/webhook", webhook, methods=["POST"]),
        ]
    )
