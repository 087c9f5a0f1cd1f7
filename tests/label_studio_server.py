"""Starting a real Label Studio server for the review tests and the README's screenshot: its own
environment (``.venv-label-studio``, made by ``scripts/setup_env.sh``, or ``GEM_SAM_LABEL_STUDIO``),
SQLite in a data folder, local files served from a document root, a known API token."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
EMAIL, PASSWORD, TOKEN = "reviewer@example.com", "reviewer-password", "gem-sam-test-token-0123456789"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, *, seconds: float, log: Path | None = None) -> None:
    """Wait for ``url/health``; raise with the end of ``log`` if the process exits or time runs out."""
    deadline = time.monotonic() + seconds
    tail = lambda: log.read_text()[-3000:] if log is not None and log.exists() else ""  # noqa: E731
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}:\n{tail()}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(1)
    raise RuntimeError(f"{url} did not answer within {seconds} s:\n{tail()}")


def start_label_studio(*, data: Path, document_root: Path, port: int, log: Path) -> subprocess.Popen:
    """A Label Studio server on 127.0.0.1:``port``, up and answering, with the legacy API token enabled and
    loopback ML backends allowed (the backend under test runs on this machine)."""
    executable = os.environ.get("GEM_SAM_LABEL_STUDIO", str(REPO / ".venv-label-studio" / "bin" / "label-studio"))
    if not Path(executable).exists():
        raise FileNotFoundError(f"{executable} is missing: run scripts/setup_env.sh (it installs Label Studio)")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env.update(
        LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
        LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(document_root),
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        LABEL_STUDIO_BASE_DATA_DIR=str(data),
        DJANGO_DB="sqlite",
        SSRF_PROTECTION_ENABLED="false",
        USE_DEFAULT_BANNED_SUBNETS="false",
    )
    with open(log, "w") as output:
        process = subprocess.Popen(
            [executable, "start", "--no-browser", "--port", str(port), "--data-dir", str(data),
             "--username", EMAIL, "--password", PASSWORD, "--user-token", TOKEN],
            stdout=output, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        wait_until_up(f"http://127.0.0.1:{port}", process, seconds=600, log=log)
    except RuntimeError:
        process.kill()
        raise
    return process


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
