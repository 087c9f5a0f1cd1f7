"""The README's picture of a Label Studio task with gem_sam's predictions, from a real server.

Labels scikit-image's ``coffee`` photo with graph-based region masks (the tests' ``RegionMaskGenerator``)
named by a random-init CLIP ViT-B/16, exports the run with ``--to label-studio``, starts Label Studio
(from ``.venv-label-studio``, made by ``scripts/setup_env.sh``, or ``GEM_SAM_LABEL_STUDIO``), creates a
project with the exported config and a local-files storage, imports the tasks, logs in with headless
Chromium and saves the task's page as ``docs/label_studio_task.png``.

Needs Debian's ``chromium`` and ``chromium-driver`` and ``pip install selenium``:

    python scripts/make_review_screenshot.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import open_clip
import requests
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gem_sam import AutoLabeller, GemScorer, label_folder  # noqa: E402
from gem_sam.cli.export import main as export  # noqa: E402
from gem_sam.naming.scorer import ScorerConfig  # noqa: E402
from tests.conftest import SKIMAGE_DATA  # noqa: E402
from tests.label_studio_server import EMAIL, PASSWORD, TOKEN, free_port, start_label_studio, stop  # noqa: E402
from tests.region_masks import RegionMaskGenerator  # noqa: E402

VOCABULARY = ["cup", "saucer", "table", "spoon"]


def api(url: str, method: str, path: str, **kwargs) -> dict:
    response = requests.request(method, url + path, headers={"Authorization": f"Token {TOKEN}"}, timeout=60, **kwargs)
    response.raise_for_status()
    return response.json()


def screenshot(url: str, page: str, out: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,900"]  # fmt: skip
    for flag in flags:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"{url}/user/login/")
        driver.find_element(By.NAME, "email").send_keys(EMAIL)
        driver.find_element(By.NAME, "password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
        time.sleep(3)
        driver.get(url + page)
        time.sleep(12)  # the labelling interface loads the image and draws the regions
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        root, data = folder / "root", folder / "ls_data"
        photos = root / "photos"
        photos.mkdir(parents=True)
        data.mkdir()
        photo = Image.open(SKIMAGE_DATA / "coffee.png").convert("RGB")
        photo.thumbnail((480, 480))
        photo.save(photos / "coffee.png")
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-16", pretrained=None).eval()
        scorer = GemScorer(model, tokenizer=open_clip.get_tokenizer("ViT-B-16"), config=ScorerConfig()).eval()
        labeller = AutoLabeller(scorer=scorer, mask_generator=RegionMaskGenerator(), vocabulary=VOCABULARY)
        label_folder(labeller, images_dir=photos, out_path=folder / "annotations.json", settings={}, progress=False)
        argv = [str(folder / "annotations.json"), "--to", "label-studio", "--out", str(folder / "ls"),
                "--document-root", str(root)]  # fmt: skip
        assert export(argv) == 0

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = start_label_studio(data=data, document_root=root, port=port, log=folder / "label_studio.log")
        try:
            config = (folder / "ls" / "label_config.xml").read_text()
            project = api(url, "POST", "/api/projects", json={"title": "gem_sam review", "label_config": config})["id"]
            storage = {"project": project, "path": str(photos), "title": "photos", "use_blob_urls": False}
            api(url, "POST", "/api/storages/localfiles", json=storage)
            tasks = json.loads((folder / "ls" / "tasks.json").read_text())
            api(url, "POST", f"/api/projects/{project}/import", json=tasks)
            task = api(url, "GET", f"/api/tasks?project={project}")["tasks"][0]["id"]
            out = REPO / "docs" / "label_studio_task.png"
            screenshot(url, f"/projects/{project}/data?task={task}", out)
            print(f"wrote {out}")
        finally:
            stop(process)


if __name__ == "__main__":
    main()
