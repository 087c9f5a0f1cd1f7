"""The review loop against a real Label Studio server (started here, SQLite, a temporary data folder):
tasks imported with gem_sam's predictions, reviewed through Label Studio's API, exported and read back
with ``gem_sam.import_reviewed``; and ``gem_sam.serve`` connected as the project's ML backend.

Label Studio lives in its own environment (``.venv-label-studio``, made by ``scripts/setup_env.sh``;
``GEM_SAM_LABEL_STUDIO`` may point at another ``label-studio`` executable)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from label_studio_sdk.converter.brush import decode_rle as sdk_decode_rle

from gem_sam import AutoLabeller, build_gem_scorer, label_folder
from gem_sam.cli.export import main as export_main
from gem_sam.cli.import_reviewed import main as import_main
from gem_sam.mask_ops import decode_rle

from ..conftest import TINY_CLIP_NAME, TINY_SAM_NAME, small_photo
from ..label_studio_server import REPO, TOKEN, free_port, start_label_studio, stop, wait_until_up
from ..region_masks import RegionMaskGenerator

VOCABULARY = ["person", "cup", "cat"]


@dataclass
class LabelStudio:
    url: str
    document_root: Path

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        response = requests.request(
            method, f"{self.url}{path}", headers={"Authorization": f"Token {TOKEN}"}, timeout=120, **kwargs
        )
        assert response.ok, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response

    def project(self, config: str, title: str) -> int:
        return self.api("POST", "/api/projects", json={"title": title, "label_config": config}).json()["id"]

    def tasks(self, project: int) -> list[dict]:
        return self.api("GET", f"/api/tasks?project={project}&fields=all&page_size=100").json()["tasks"]


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory):
    data, root = tmp_path_factory.mktemp("ls_data"), tmp_path_factory.mktemp("ls_root")
    port = free_port()
    process = start_label_studio(data=data, document_root=root, port=port, log=data / "label_studio.log")
    try:
        yield LabelStudio(url=f"http://127.0.0.1:{port}", document_root=root)
    finally:
        stop(process)


@pytest.fixture(scope="module")
def run(label_studio: LabelStudio, varied_clip_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labelling run of three photos inside Label Studio's document root (object-like masks, a CLIP whose
    regions favour different classes), exported for Label Studio; returns the export folder."""
    photos = label_studio.document_root / "photos"
    photos.mkdir()
    for name in ("astronaut.png", "coffee.png", "chelsea.png"):
        small_photo(name, long_side=96).convert("RGB").save(photos / name.replace(".png", ".jpg"))
    scorer = build_gem_scorer(model_name=TINY_CLIP_NAME, pretrained=str(varied_clip_checkpoint), device="cpu")
    labeller = AutoLabeller(scorer=scorer, mask_generator=RegionMaskGenerator(), vocabulary=VOCABULARY)
    folder = tmp_path_factory.mktemp("run")
    label_folder(
        labeller, images_dir=photos, out_path=folder / "annotations.json", settings={"test": 1}, progress=False
    )
    code, out, err = call(
        export_main,
        [str(folder / "annotations.json"), "--to", "label-studio", "--out", str(folder / "ls"),
         "--document-root", str(label_studio.document_root)],
    )  # fmt: skip
    assert code == 0, err
    return folder


def call(main, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def our_regions(run_folder: Path) -> dict[str, list[tuple[str, np.ndarray]]]:
    data = json.loads((run_folder / "annotations.json").read_text())
    names = {image["id"]: image["file_name"] for image in data["images"]}
    out: dict[str, list[tuple[str, np.ndarray]]] = {name: [] for name in names.values()}
    for a in data["annotations"]:
        out[names[a["image_id"]]].append((VOCABULARY[a["category_id"] - 1], decode_rle(a["segmentation"])))
    return out


def sdk_mask(result: dict) -> np.ndarray:
    """A brush region decoded with Label Studio's own decoder."""
    height, width = result["original_height"], result["original_width"]
    return sdk_decode_rle(result["value"]["rle"]).reshape(height, width, 4)[:, :, 3] > 0


def imported_project(label_studio: LabelStudio, run: Path, title: str) -> tuple[int, list[dict]]:
    project = label_studio.project((run / "ls" / "label_config.xml").read_text(), title)
    tasks = json.loads((run / "ls" / "tasks.json").read_text())
    label_studio.api("POST", f"/api/projects/{project}/import", json=tasks)
    return project, sorted(label_studio.tasks(project), key=lambda task: task["data"]["gem_sam_file_name"])


def test_predictions_survive_the_import_exactly(label_studio: LabelStudio, run: Path) -> None:
    project, tasks = imported_project(label_studio, run, "import check")
    ours = our_regions(run)
    assert [task["data"]["gem_sam_file_name"] for task in tasks] == sorted(ours)
    classes_seen = set()
    for task in tasks:
        (prediction,) = task["predictions"]
        assert prediction["model_version"].startswith("gem_sam ")
        results = prediction["result"]
        expected = ours[task["data"]["gem_sam_file_name"]]
        assert len(results) == len(expected) > 0
        for result, (class_name, mask) in zip(results, expected, strict=True):
            assert result["value"]["brushlabels"] == [class_name]
            np.testing.assert_array_equal(sdk_mask(result), mask)
            classes_seen.add(class_name)
    assert len(classes_seen) >= 2


def test_label_studio_brings_the_least_sure_images_first(label_studio: LabelStudio, run: Path) -> None:
    """Each task's prediction score is 1 - its image's review priority: Label Studio's data manager sorted
    by prediction score, and its uncertainty sampling, give the least sure image first."""
    project, _ = imported_project(label_studio, run, "review order")
    tasks = json.loads((run / "ls" / "tasks.json").read_text())
    scores = {task["data"]["gem_sam_file_name"]: task["predictions"][0]["score"] for task in tasks}
    assert len(set(scores.values())) == len(scores)  # the images differ, so the order means something
    expected = sorted(scores, key=scores.get)
    view = label_studio.api(
        "POST", "/api/dm/views", json={"project": project, "data": {"ordering": ["tasks:predictions_score"]}}
    ).json()
    ordered = label_studio.api("GET", f"/api/tasks?project={project}&view={view['id']}&fields=all").json()["tasks"]
    assert [task["data"]["gem_sam_file_name"] for task in ordered] == expected
    version = tasks[0]["predictions"][0]["model_version"]
    label_studio.api(
        "PATCH", f"/api/projects/{project}", json={"sampling": "Uncertainty sampling", "model_version": version}
    )
    first = label_studio.api("GET", f"/api/projects/{project}/next").json()
    assert first["data"]["gem_sam_file_name"] == expected[0]


def test_review_round_trip(label_studio: LabelStudio, run: Path, tmp_path: Path) -> None:
    """Accept predictions, delete a region, relabel one, add a polygon; export from Label Studio; the
    reviewed COCO file holds exactly those edits, mask for mask."""
    project, tasks = imported_project(label_studio, run, "round trip")
    first, second, third = tasks
    regions = first["predictions"][0]["result"]
    assert len(regions) >= 3
    relabelled = dict(regions[1])  # regions[0] is deleted: the annotation leaves it out
    new_class = next(name for name in VOCABULARY if name != relabelled["value"]["brushlabels"][0])
    relabelled["value"] = {**relabelled["value"], "brushlabels": [new_class]}
    polygon = {
        "id": "drawn-1", "from_name": "polygon", "to_name": "image", "type": "polygonlabels",
        "original_width": regions[0]["original_width"], "original_height": regions[0]["original_height"],
        "image_rotation": 0, "value": {"points": [[10, 10], [40, 10], [40, 30], [10, 30]], "polygonlabels": ["cat"]},
    }  # fmt: skip
    first_result = [relabelled, *regions[2:], polygon]
    for task, result in ((first, first_result), (second, second["predictions"][0]["result"])):
        label_studio.api(
            "POST", f"/api/tasks/{task['id']}/annotations", json={"result": result, "was_cancelled": False}
        )
    exported = tmp_path / "export.json"
    exported.write_bytes(
        label_studio.api("GET", f"/api/projects/{project}/export?exportType=JSON&download_all_tasks=true").content
    )

    out = tmp_path / "reviewed.json"
    code, stdout, err = call(import_main, [str(exported), "--run", str(run / "annotations.json"), "--out", str(out)])
    assert code == 0, err
    kept = len(regions) - 2 + len(second["predictions"][0]["result"])
    assert "tasks reviewed: 2, not reviewed: 1" in stdout
    assert f"regions kept: {kept}, edited: 1, added: 1, deleted: 1" in stdout
    data = json.loads(out.read_text())
    assert data["info"]["review"] == {
        "source": str(exported.resolve()), "unreviewed_rule": "drop", "kept": kept, "edited": 1, "added": 1,
        "deleted": 1, "reviewed": 2, "unreviewed": 1, "merged": [],
    }  # fmt: skip
    names = {image["id"]: image["file_name"] for image in data["images"]}
    assert sorted(names.values()) == [first["data"]["gem_sam_file_name"], second["data"]["gem_sam_file_name"]]
    ours = our_regions(run)
    by_file: dict[str, list[tuple[str, np.ndarray, str]]] = {name: [] for name in names.values()}
    for a in data["annotations"]:
        by_file[names[a["image_id"]]].append(
            (VOCABULARY[a["category_id"] - 1], decode_rle(a["segmentation"]), a["review"])
        )
    first_expected = ours[first["data"]["gem_sam_file_name"]]
    found = by_file[first["data"]["gem_sam_file_name"]]
    assert [status for _, _, status in found] == ["edited", *["kept"] * (len(regions) - 2), "added"]
    assert found[0][0] == new_class and (found[0][1] == first_expected[1][1]).all()
    for (name, mask, _), (our_name, our_mask) in zip(found[1:-1], first_expected[2:], strict=True):
        assert name == our_name and (mask == our_mask).all()
    height, width = first_expected[0][1].shape
    drawn = np.zeros((height, width), dtype=bool)
    drawn[round(0.1 * height) : round(0.3 * height), round(0.1 * width) : round(0.4 * width)] = True
    assert found[-1][0] == "cat" and abs(int(found[-1][1].sum()) - int(drawn.sum())) <= height + width
    second_found = by_file[second["data"]["gem_sam_file_name"]]
    assert [(n, m.tobytes()) for n, m, _ in second_found] == [
        (n, m.tobytes()) for n, m in ours[second["data"]["gem_sam_file_name"]]
    ]

    # unreviewed tasks keep their predictions on request; every export reads the file
    kept_out = tmp_path / "with_unreviewed.json"
    argv = [str(exported), "--run", str(run / "annotations.json"), "--out", str(kept_out), "--unreviewed", "keep"]
    assert call(import_main, argv)[0] == 0
    assert len(json.loads(kept_out.read_text())["images"]) == 3
    code, _, err = call(export_main, [str(out), "--to", "yolo-seg", "--out", str(tmp_path / "yolo")])
    assert code == 0, err

    # a label the run does not have: refused, naming the task and the label, nothing written
    bad = json.loads(exported.read_text())
    bad[0]["annotations"][0]["result"][0]["value"]["brushlabels"] = ["zebra"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    refused = tmp_path / "refused.json"
    code, _, err = call(
        import_main, [str(tmp_path / "bad.json"), "--run", str(run / "annotations.json"), "--out", str(refused)]
    )
    assert code == 2 and "'zebra' is not a class of the run" in err and f"task {bad[0]['id']!r}" in err
    assert not refused.exists()


@pytest.mark.parametrize(
    "content,message", [("not json", "it is not JSON"), ('{"tasks": []}', "expected a list of tasks")]
)
def test_malformed_exports_are_refused(run: Path, tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "export.json"
    path.write_text(content)
    code, _, err = call(
        import_main, [str(path), "--run", str(run / "annotations.json"), "--out", str(tmp_path / "o.json")]
    )
    assert code == 2 and message in err and not (tmp_path / "o.json").exists()


def test_ml_backend_predicts_what_the_export_holds(
    label_studio: LabelStudio, tmp_path: Path, tiny_clip_checkpoint: Path, tiny_sam_checkpoint: Path
) -> None:
    """gem_sam.serve connected to a project: the prediction Label Studio fetches for a new task equals the
    export's prediction of the same image from gem_sam.label with the same models and settings."""
    photos = label_studio.document_root / "serve_photos"
    photos.mkdir()
    small_photo("coffee.png", long_side=96).convert("RGB").save(photos / "coffee.jpg")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(VOCABULARY) + "\n")
    options = ["--vocab", str(vocab), "--clip-model", TINY_CLIP_NAME, "--pretrained", str(tiny_clip_checkpoint),
               "--sam-model", TINY_SAM_NAME, "--sam-checkpoint", str(tiny_sam_checkpoint), "--device", "cpu",
               "--points-per-side", "3", "--pred-iou-thresh", "0", "--stability-score-thresh", "0.3",
               "--box-nms-thresh", "1.0"]  # fmt: skip
    driver = (
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from pathlib import Path\n"
        "from tests.conftest import register_tiny_models\n"
        f"register_tiny_models(Path({str(tmp_path / 'configs')!r}))\n"
        "from gem_sam.cli.{module} import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    out = tmp_path / "annotations.json"
    labelled = subprocess.run(
        [sys.executable, "-c", driver.format(module="label"), "--images", str(photos), "--out", str(out),
         "--quiet", *options],
        capture_output=True, text=True,
    )  # fmt: skip
    assert labelled.returncode == 0, labelled.stderr
    assert call(export_main, [str(out), "--to", "label-studio", "--out", str(tmp_path / "ls"),
                              "--document-root", str(label_studio.document_root)])[0] == 0  # fmt: skip
    expected = json.loads((tmp_path / "ls" / "tasks.json").read_text())[0]

    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as output:
        server = subprocess.Popen(
            [sys.executable, "-c", driver.format(module="serve"), "--port", str(port),
             "--document-root", str(label_studio.document_root), *options],
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        backend = f"http://127.0.0.1:{port}"
        wait_until_up(backend, server, seconds=300, log=log)
        # an image it cannot read gets no prediction, with the error listed; a config without the classes
        # is a JSON error
        missing = requests.post(
            f"{backend}/predict",
            json={"tasks": [{"id": 1, "data": {"image": "/data/local-files/?d=nope.jpg"}}]},
            timeout=60,
        )
        assert missing.status_code == 200 and missing.json()["results"] == [[]]
        assert "nope.jpg" in missing.json()["errors"][0]["error"]
        config = (
            '<View><Image name="image" value="$image"/><BrushLabels name="label" toName="image">'
            '<Label value="cat"/></BrushLabels></View>'
        )
        wrong = requests.post(f"{backend}/setup", json={"schema": config}, timeout=60)
        assert wrong.status_code == 400 and "lack the classes" in wrong.json()["error"]

        project = label_studio.project((tmp_path / "ls" / "label_config.xml").read_text(), "ml backend")
        label_studio.api("POST", "/api/ml", json={"url": backend, "project": project, "title": "gem_sam"})
        label_studio.api("POST", f"/api/projects/{project}/import", json=[{"data": expected["data"]}])
        (task,) = label_studio.tasks(project)
        assert task["predictions"] == []
        label_studio.api(
            "POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}",
            json={"selectedItems": {"all": False, "included": [task["id"]]}},
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not label_studio.tasks(project)[0]["predictions"]:
            time.sleep(2)
        (prediction,) = label_studio.tasks(project)[0]["predictions"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    ours = expected["predictions"][0]
    assert prediction["model_version"] == ours["model_version"]
    assert len(prediction["result"]) == len(ours["result"]) > 0
    for got, want in zip(prediction["result"], ours["result"], strict=True):
        assert got["value"]["brushlabels"] == want["value"]["brushlabels"]
        np.testing.assert_array_equal(sdk_mask(got), sdk_mask(want))
        assert got["score"] == pytest.approx(want["score"], abs=1e-6)


def test_video_tracks_import_as_video_rectangles(
    label_studio: LabelStudio, tmp_path: Path, varied_clip_checkpoint: Path, sam2_t_checkpoint: Path
) -> None:
    """A tracks.json of an MP4 and a frame folder, exported as Label Studio video tasks (the folder
    encoded as MP4) under the server's document root, imported, and read back through its API: one
    VideoRectangle region per track, its keyframes the track's boxes on its frames."""
    from ..video.conftest import pan_frames, run_label_video, write_frame_folder, write_mp4

    videos = label_studio.document_root / "videos"
    write_mp4(videos / "clip.mp4", pan_frames(frames=8))
    write_frame_folder(videos / "pan", pan_frames(photo="coffee.png", frames=6))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("person\nrocket\ncat\n")
    tracks = tmp_path / "tracks.json"
    code, _, err = run_label_video([
        "--videos", str(videos), "--out", str(tracks), "--vocab", str(vocab), "--clip-model", TINY_CLIP_NAME,
        "--pretrained", str(varied_clip_checkpoint), "--sam-model", "sam2.1_hiera_t",
        "--sam-checkpoint", str(sam2_t_checkpoint), "--sam-image-size", "256", "--device", "cpu",
        "--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0.3",
        "--box-nms-thresh", "1.0", "--keyframe-every", "4", "--quiet",
    ])  # fmt: skip
    assert code == 0, err
    out = label_studio.document_root / "ls_video"
    code, _, err = call(
        export_main,
        [str(tracks), "--to", "label-studio", "--out", str(out), "--document-root", str(label_studio.document_root)],
    )
    assert code == 0, err
    assert (out / "videos" / "pan.mp4").is_file()
    project = label_studio.project((out / "label_config.xml").read_text(), "video review")
    for folder in (videos, out / "videos"):  # Label Studio serves only files under a storage it knows
        storage = {"project": project, "path": str(folder), "title": folder.name, "use_blob_urls": False}
        label_studio.api("POST", "/api/storages/localfiles", json=storage)
    label_studio.api("POST", f"/api/projects/{project}/import", json=json.loads((out / "tasks.json").read_text()))
    data = json.loads(tracks.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    imported = sorted(label_studio.tasks(project), key=lambda task: task["data"]["gem_sam_video"])
    assert [task["data"]["gem_sam_video"] for task in imported] == ["clip", "pan"]
    for task, video in zip(imported, data["videos"], strict=True):
        (prediction,) = task["predictions"]
        expected = [t for t in data["annotations"] if t["video_id"] == video["id"]]
        assert len(prediction["result"]) == len(expected) > 0
        fetched = requests.get(f"{label_studio.url}{task['data']['video']}", timeout=60,
                               headers={"Authorization": f"Token {TOKEN}"})  # fmt: skip
        assert fetched.status_code == 200 and fetched.content[4:8] == b"ftyp"  # Label Studio serves the MP4
        for region, track in zip(prediction["result"], expected, strict=True):
            assert region["type"] == "videorectangle" and region["value"]["labels"] == [names[track["category_id"]]]
            sequence = region["value"]["sequence"]
            seen = [frame for frame, box in enumerate(track["bboxes"]) if box is not None]
            assert [item["frame"] for item in sequence] == [frame + 1 for frame in seen]
            x, y, w, h = track["bboxes"][seen[0]]
            assert sequence[0]["x"] == pytest.approx(100 * x / video["width"])
            assert sequence[0]["width"] == pytest.approx(100 * w / video["width"])
            assert sequence[-1]["enabled"] is False
