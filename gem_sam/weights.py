"""Checkpoint files: the SAM 1 and SAM 2 download registry (URL, file name, SHA-256) and safe loading."""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .atomic import atomic_write

CHECKPOINTS_README = "checkpoints/README.md in the gem_sam repository"


class WeightsUnavailableError(RuntimeError):
    """Weights that could not be had: not on disk and not downloadable (e.g. offline)."""


@dataclass(frozen=True)
class CheckpointFile:
    """A published checkpoint: where it lives and the SHA-256 of its bytes (None: not confirmed from
    independent sources, so a download is not checked; its SHA-256 is printed instead)."""

    url: str
    file_name: str
    sha256: str | None


SAM_CHECKPOINTS: dict[str, CheckpointFile] = {
    "vit_b": CheckpointFile(
        url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        file_name="sam_vit_b_01ec64.pth",
        sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
    ),
    "vit_l": CheckpointFile(
        url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        file_name="sam_vit_l_0b3195.pth",
        sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
    ),
    "vit_h": CheckpointFile(
        url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        file_name="sam_vit_h_4b8939.pth",
        sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
    ),
    **{
        f"{release}_hiera_{size}": CheckpointFile(
            url=f"https://dl.fbaipublicfiles.com/segment_anything_2/{folder}/{release}_hiera_{file_size}.pt",
            file_name=f"{release}_hiera_{file_size}.pt",
            sha256=None,
        )
        for release, folder in (("sam2", "072824"), ("sam2.1", "092824"))
        for size, file_size in (("t", "tiny"), ("s", "small"), ("b+", "base_plus"), ("l", "large"))
    },
}


def cache_dir() -> Path:
    """Where downloaded checkpoints live: ``$GEM_SAM_CACHE`` or ``~/.cache/gem_sam``."""
    return Path(os.environ.get("GEM_SAM_CACHE", Path.home() / ".cache" / "gem_sam"))


def download_checkpoint(entry: CheckpointFile, *, target_dir: Path, progress: bool = True) -> Path:
    """Download ``entry`` into ``target_dir`` unless already there; the SHA-256 must match.

    The file is written under a temporary name and renamed only once its hash is verified, so an
    interrupted download never leaves a file that looks complete.
    """
    target = target_dir / entry.file_name
    if target.is_file():
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_write(target, binary=True) as out, urllib.request.urlopen(entry.url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0)
            digest = hashlib.sha256()
            with tqdm(
                total=total or None, unit="B", unit_scale=True, desc=entry.file_name, disable=not progress
            ) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            if entry.sha256 is None:
                print(
                    f"{entry.file_name}: SHA-256 {digest.hexdigest()} (no published value to check against; "
                    f"see {CHECKPOINTS_README})",
                    file=sys.stderr,
                )
            elif digest.hexdigest() != entry.sha256:
                raise RuntimeError(
                    f"downloaded {entry.url} has SHA-256 {digest.hexdigest()}, expected {entry.sha256}; "
                    "the file was discarded"
                )
        return target
    except (urllib.error.URLError, OSError) as error:
        raise FileNotFoundError(
            f"checkpoint {entry.file_name} is not in {target_dir} and could not be downloaded from {entry.url} "
            f"({error}). Download it on a machine with internet and pass its path, or put it in {target_dir}; "
            f"see {CHECKPOINTS_README}"
        ) from error


def resolve_sam_checkpoint(model_type: str, checkpoint: str | os.PathLike | None) -> Path:
    """A local SAM checkpoint file: the given path, else the cached or downloaded official file."""
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.exists():
            raise FileNotFoundError(f"SAM checkpoint {str(path)!r} does not exist; see {CHECKPOINTS_README}")
        if not path.is_file():
            raise IsADirectoryError(f"SAM checkpoint {str(path)!r} is a folder, not a checkpoint file")
        return path
    if model_type not in SAM_CHECKPOINTS:
        raise ValueError(
            f"SAM model {model_type!r} has no published checkpoint; pass a checkpoint file "
            f"(published: {', '.join(SAM_CHECKPOINTS)})"
        )
    return download_checkpoint(SAM_CHECKPOINTS[model_type], target_dir=cache_dir())


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a checkpoint's tensors on the CPU without executing pickled code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a bad file
        raise ValueError(f"{str(path)!r} is not a readable PyTorch checkpoint: {error}") from error
    for wrapper in ("state_dict", "model"):  # {"model": ...} is SAM 2's checkpoint layout
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ValueError(f"{str(path)!r} does not hold a state dict of tensors")
    return state
