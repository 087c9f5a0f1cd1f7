"""``gem-sam serve`` is safe to expose: tested against the running server (a subprocess on loopback) with
small local HTTP servers as the places it may and may not fetch from.

- "metadata": stands for a cloud metadata service or an internal admin page; it must receive nothing;
- "images": a host that ``--allow-host`` names, with an image and endpoints that misbehave (too large,
  too slow, redirecting to "metadata");
- "studio": the host of ``LABEL_STUDIO_URL`` (which says https, so plain http to it is another origin).
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from gem_sam.review.fetch import FetchPolicy, FetchRefused, fetch

from ..conftest import TINY_CLIP_NAME, TINY_SAM_NAME, small_photo
from ..label_studio_server import REPO, free_port

USER, PASSWORD, API_KEY = "reviewer", "review-password", "secret-api-key-0123"
AUTH = (USER, PASSWORD)


def jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    small_photo("coffee.png", long_side=max(size)).convert("RGB").resize(size).save(buffer, format="JPEG")
    return buffer.getvalue()


class Site:
    """A local HTTP server that records every request (path and headers) and answers by path."""

    def __init__(self, routes: dict[str, callable]) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                site.requests.append((self.path, dict(self.headers)))
                route = routes.get(self.path.split("?")[0], routes.get("*"))
                route(self)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()


def send(status: int, body: bytes = b"", headers: dict[str, str] | None = None, reason: str | None = None):
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status, reason)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        if "Content-Length" not in (headers or {}) and body:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return answer


def without_length(body: bytes):
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(body)
        handler.close_connection = True

    return answer


def trickle(handler: BaseHTTPRequestHandler) -> None:
    """A byte every 0.2 s, for up to 20 s."""
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    for _ in range(100):
        try:
            handler.wfile.write(b"x")
            handler.wfile.flush()
        except OSError:
            return
        time.sleep(0.2)


@pytest.fixture(scope="module")
def sites() -> Iterator[dict[str, Site]]:
    metadata = Site({"*": send(418, b"SECRET-METADATA", reason="SECRET TEAPOT")})
    images = Site(
        {
            "/photo.jpg": send(200, jpeg()),
            "/big.bin": send(200, b"\0" * 60_000),
            "/big-no-length.bin": without_length(b"\0" * 60_000),
            "/slow.jpg": trickle,
            "/teapot": send(418, b"SECRET-BODY", reason="SECRET REASON"),
            "/to-photo": send(302, headers={"Location": "/photo.jpg"}),
            "/to-metadata": send(302, headers={"Location": metadata.url("/latest/meta-data/")}),
        }
    )
    studio = Site({"/data/upload/photo.jpg": send(200, jpeg()), "*": send(404)})
    yield {"metadata": metadata, "images": images, "studio": studio}
    for site in (metadata, images, studio):
        site.close()


DRIVER = """
import socket, sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from tests.conftest import register_tiny_models
register_tiny_models(Path({configs!r}))
resolve = socket.getaddrinfo
def fake_dns(host, *args, **kwargs):  # cdn.images.test, matched by --allow-host '*.images.test', is loopback
    return resolve("127.0.0.1" if host == "cdn.images.test" else host, *args, **kwargs)
socket.getaddrinfo = fake_dns
from gem_sam.cli.serve import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def backend(
    sites: dict[str, Site],
    tmp_path_factory: pytest.TempPathFactory,
    tiny_clip_checkpoint: Path,
    tiny_sam_checkpoint: Path,
) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("backend")
    root = folder / "root"
    root.mkdir()
    small_photo("coffee.png", long_side=60).convert("RGB").resize((60, 40)).save(root / "a%20b.png")
    small_photo("chelsea.png", long_side=60).convert("RGB").resize((40, 60)).save(root / "a b.png")
    (folder / "vocab.txt").write_text("cat\ncup\n")
    port = free_port()
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("LABEL_STUDIO", "BASIC"))},
        "LABEL_STUDIO_URL": f"https://127.0.0.1:{sites['studio'].port}",
        "LABEL_STUDIO_API_KEY": API_KEY,
        "BASIC_AUTH_USER": USER,
        "BASIC_AUTH_PASS": PASSWORD,
    }  # fmt: skip
    args = [
        "--vocab", str(folder / "vocab.txt"), "--port", str(port), "--document-root", str(root),
        "--allow-host", f"127.0.0.1:{sites['images'].port}", "--allow-host", f"127.0.0.1:{sites['studio'].port}",
        "--allow-host", "*.images.test", "--max-tasks", "3", "--max-image-mb", str(50_000 / 2**20),
        "--fetch-timeout", "2",
        "--clip-model", TINY_CLIP_NAME, "--pretrained", str(tiny_clip_checkpoint), "--sam-model", TINY_SAM_NAME,
        "--sam-checkpoint", str(tiny_sam_checkpoint), "--device", "cpu", "--points-per-side", "3",
        "--pred-iou-thresh", "0", "--stability-score-thresh", "0.3", "--box-nms-thresh", "1.0",
    ]  # fmt: skip
    driver = DRIVER.format(repo=str(REPO), configs=str(folder / "configs"))
    log = folder / "serve.log"
    with open(log, "w") as output:
        server = subprocess.Popen(
            [sys.executable, "-c", driver, *args], stdout=output, stderr=subprocess.STDOUT, env=env
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and server.poll() is None:
            try:
                requests.get(f"{url}/health", timeout=2)
                break
            except requests.RequestException:
                time.sleep(1)
        if server.poll() is not None:
            raise RuntimeError(log.read_text()[-3000:])
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def predict(backend: str, urls: list[str], **kwargs) -> requests.Response:
    tasks = [{"id": index, "data": {"image": url}} for index, url in enumerate(urls, start=1)]
    return requests.post(f"{backend}/predict", json={"tasks": tasks}, auth=AUTH, timeout=120, **kwargs)


def test_every_route_needs_the_basic_auth_credentials(backend: str) -> None:
    for method, route in (("GET", "/health"), ("GET", "/"), ("POST", "/predict"), ("POST", "/setup")):
        for auth in (None, (USER, "wrong"), ("someone", PASSWORD)):
            response = requests.request(method, f"{backend}{route}", json={}, auth=auth, timeout=30)
            assert response.status_code == 401 and "basic auth" in response.json()["error"], (route, auth)
            assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert requests.get(f"{backend}/health", auth=AUTH, timeout=30).json()["status"] == "UP"


def test_only_the_named_origins_are_fetched(backend: str, sites: dict[str, Site]) -> None:
    metadata, images = sites["metadata"], sites["images"]
    refused = [
        metadata.url("/admin"),  # loopback, another port than the allowed one
        "http://169.254.169.254/latest/meta-data/",  # link-local, never named
        f"http://cdn.images.test:{images.port}/photo.jpg",  # named only by '*.images.test', resolves to loopback
        images.url("/to-metadata"),  # an allowed host redirecting to a refused one
        "file:///etc/passwd",
    ]
    response = predict(backend, [images.url("/photo.jpg"), *refused[:2]])
    assert response.status_code == 200
    body = response.json()
    assert len(body["results"][0]) == 1 and body["results"][1:] == [[], []]  # the good task still gets its own
    answers = [predict(backend, [url]).json() for url in refused]
    assert all(answer["results"] == [[]] for answer in answers)
    errors = [answer["errors"][0]["error"] for answer in answers]
    assert all(error.startswith("refused to fetch") for error in errors[:4]), errors
    assert "not a public address" in errors[2] and "not an http or https URL" in errors[4]
    assert metadata.requests == []  # nothing reached it, not even through the redirect
    assert predict(backend, [images.url("/to-photo")]).json()["results"][0]  # a redirect within an allowed origin


def test_errors_say_what_was_refused_not_what_the_server_answered(backend: str, sites: dict[str, Site]) -> None:
    error = predict(backend, [sites["images"].url("/teapot")]).json()["errors"][0]["error"]
    assert "HTTP status 418" in error and "SECRET" not in error


def test_the_api_key_goes_to_label_studios_exact_origin_only(backend: str, sites: dict[str, Site]) -> None:
    """LABEL_STUDIO_URL is https://127.0.0.1:<port>; the same host and port over plain http is another
    origin (allowed by --allow-host here), so it gets the image but not the key."""
    studio = sites["studio"]
    before = len(studio.requests)
    response = predict(backend, [studio.url("/data/upload/photo.jpg")])
    assert response.json()["results"][0]
    (path, headers), *_ = studio.requests[before:]
    assert path == "/data/upload/photo.jpg" and not {key.lower() for key in headers} & {"authorization"}
    assert all(API_KEY not in value for _, headers in studio.requests for value in headers.values())


def test_fetch_sends_the_key_to_the_exact_origin(sites: dict[str, Site]) -> None:
    """The policy itself (no server): the key to LABEL_STUDIO_URL's origin, not to the same host on
    another port."""
    studio, images = sites["studio"], sites["images"]
    policy = FetchPolicy(label_studio_url=studio.url(""), api_key=API_KEY, allowed_hosts=(f"127.0.0.1:{images.port}",))
    assert fetch(studio.url("/data/upload/photo.jpg"), policy)[:2] == b"\xff\xd8"
    assert studio.requests[-1][1]["Authorization"] == f"Token {API_KEY}"
    fetch(images.url("/photo.jpg"), policy)
    assert "Authorization" not in images.requests[-1][1]
    with pytest.raises(FetchRefused, match="not LABEL_STUDIO_URL's origin"):
        fetch(f"http://localhost:{studio.port}/data/upload/photo.jpg", policy)


def test_bodies_batches_and_downloads_are_bounded(backend: str, sites: dict[str, Site]) -> None:
    images = sites["images"]
    padded = {"tasks": [{"id": 1, "data": {"image": images.url("/photo.jpg")}}], "pad": "x" * (17 * 2**20)}
    response = requests.post(f"{backend}/predict", json=padded, auth=AUTH, timeout=120)
    assert response.status_code == 413 and "larger than" in response.json()["error"]
    response = predict(backend, [images.url("/photo.jpg")] * 4)
    assert response.status_code == 413 and "at most 3" in response.json()["error"]
    for path in ("/big.bin", "/big-no-length.bin"):
        error = predict(backend, [images.url(path)]).json()["errors"][0]["error"]
        assert "larger than the 50000-byte limit" in error, path
    start = time.monotonic()
    error = predict(backend, [images.url("/slow.jpg")]).json()["errors"][0]["error"]
    assert "took longer than 2 s" in error and time.monotonic() - start < 10


def test_health_answers_while_a_prediction_runs(backend: str, sites: dict[str, Site]) -> None:
    """A prediction that takes seconds (a slow download, then two photos) runs in a worker thread; /health
    answers meanwhile, well within Label Studio's one-second health timeout."""
    images = sites["images"]
    done = threading.Event()

    def long_prediction() -> None:
        predict(backend, [images.url("/slow.jpg"), images.url("/photo.jpg"), images.url("/photo.jpg")])
        done.set()

    worker = threading.Thread(target=long_prediction)
    worker.start()
    time.sleep(0.3)
    latencies = []
    while not done.is_set() and len(latencies) < 20:
        start = time.monotonic()
        assert requests.get(f"{backend}/health", auth=AUTH, timeout=5).status_code == 200
        latencies.append(time.monotonic() - start)
        time.sleep(0.05)
    worker.join()
    print(f"/health during a prediction: {len(latencies)} answers, slowest {1000 * max(latencies):.0f} ms")
    assert len(latencies) >= 5 and max(latencies) < 0.5, latencies


def test_local_files_paths_are_decoded_once(backend: str) -> None:
    """The export's URL of ``a%20b.png`` (60x40) names that file, not ``a b.png`` (40x60)."""
    body = predict(backend, ["/data/local-files/?d=" + quote("a%20b.png")]).json()
    (prediction,) = body["results"][0]
    assert prediction["result"] and {region["original_width"] for region in prediction["result"]} == {60}


def test_malformed_requests_are_400_and_one_bad_task_spoils_nothing(backend: str) -> None:
    for tasks in ([1], [{"data": "x"}], [{"data": {"image": 5}}], "tasks", []):
        response = requests.post(f"{backend}/predict", json={"tasks": tasks}, auth=AUTH, timeout=30)
        assert response.status_code == 400 and response.json()["error"], tasks
    response = requests.post(f"{backend}/predict", data=b"{not json", auth=AUTH, timeout=30)
    assert response.status_code == 400 and "not JSON" in response.json()["error"]
    good = "/data/local-files/?d=" + quote("a%20b.png")
    body = predict(backend, [good, "/data/local-files/?d=missing.jpg", good]).json()
    assert body["results"][0] and body["results"][1] == [] and body["results"][2] == body["results"][0]
    assert [error["task"] for error in body["errors"]] == [2] and "missing.jpg" in body["errors"][0]["error"]


def test_a_wider_host_needs_auth_or_no_auth(monkeypatch, tmp_path: Path, capsys) -> None:
    from gem_sam.cli.serve import basic_auth_from_environment, main

    for key in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS"):
        monkeypatch.delenv(key, raising=False)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("cup\n")
    assert main(["--vocab", str(vocab), "--host", "0.0.0.0"]) == 2
    error = capsys.readouterr().err
    assert (
        len(error.strip().splitlines()) == 1 and "BASIC_AUTH_USER and BASIC_AUTH_PASS" in error and "--no-auth" in error
    )
    assert basic_auth_from_environment("0.0.0.0", no_auth=True) is None
    assert basic_auth_from_environment("127.0.0.1", no_auth=False) is None
    assert basic_auth_from_environment("::1", no_auth=False) is None
    monkeypatch.setenv("BASIC_AUTH_USER", USER)
    assert main(["--vocab", str(vocab), "--host", "0.0.0.0"]) == 2
    assert "set both" in capsys.readouterr().err
    monkeypatch.setenv("BASIC_AUTH_PASS", PASSWORD)
    auth = basic_auth_from_environment("0.0.0.0", no_auth=False)
    header = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert auth.accepts(header) and not auth.accepts(header[:-2]) and not auth.accepts(None)
    assert PASSWORD not in repr(auth)
