"""Propagating masks through a window of frames with SAM 2's own video predictor.

``Sam2Propagator.propagate`` seeds each track with a mask on the window's first frame
(``SAM2VideoPredictor.add_new_mask``) and runs ``propagate_in_video`` over the window, with the
predictor's default settings. The only thing it does differently from ``init_state`` on a folder of
those frames is where the frames come from: ``WindowFrames`` prepares each frame when the predictor asks
for it (as ``init_state`` prepares every frame up front: PIL's resize to the model's square input,
scaled to [0, 1], normalised with ImageNet's mean and deviation), so the window's frames are never all
held as tensors, and the whole state is dropped when the window ends. So a window's masks are the
predictor's for the same frames and seeds.

Logits are per track [H, W] float32 at the video's resolution; a mask is ``logits > 0``.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image

IMAGE_MEAN = (0.485, 0.456, 0.406)  # as sam2's frame loader normalises
IMAGE_STD = (0.229, 0.224, 0.225)


def prepare_frame(frame_rgb: np.ndarray, image_size: int) -> torch.Tensor:
    """HxWx3 uint8 -> [3, S, S] float32, as ``sam2.utils.misc`` loads a video frame."""
    resized = np.array(Image.fromarray(frame_rgb).resize((image_size, image_size))) / 255.0  # float64
    image = torch.from_numpy(resized).permute(2, 0, 1).to(torch.float32)
    mean = torch.tensor(IMAGE_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGE_STD, dtype=torch.float32)[:, None, None]
    return (image - mean) / std


class WindowFrames:
    """The predictor's ``images`` for one window: frame i prepared when asked for, the last two kept."""

    def __init__(self, frames: Sequence[np.ndarray], image_size: int, device: torch.device) -> None:
        self.frames = frames
        self.image_size = image_size
        self.device = device
        self.cache: OrderedDict[int, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> torch.Tensor:
        if index not in self.cache:
            self.cache[index] = prepare_frame(self.frames[index], self.image_size).to(self.device)
            while len(self.cache) > 2:
                self.cache.popitem(last=False)
        return self.cache[index]


def window_state(predictor: torch.nn.Module, frames: Sequence[np.ndarray]) -> dict:
    """An inference state as ``SAM2VideoPredictor.init_state`` makes it, over ``frames`` (prepared on
    demand); like ``init_state``, it encodes the first frame."""
    height, width = frames[0].shape[:2]
    device = predictor.device
    state = {
        "images": WindowFrames(frames, predictor.image_size, device),
        "num_frames": len(frames),
        "offload_video_to_cpu": False,
        "offload_state_to_cpu": False,
        "video_height": height,
        "video_width": width,
        "device": device,
        "storage_device": device,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }
    predictor._get_image_feature(state, frame_idx=0, batch_size=1)
    return state


class Sam2Propagator:
    """Track propagation with a ``SAM2VideoPredictor`` (``sam_model.load_sam2(..., video=True)``)."""

    def __init__(self, predictor: torch.nn.Module) -> None:
        if not hasattr(predictor, "propagate_in_video"):
            raise TypeError("the propagator needs a SAM2VideoPredictor (load_sam2(..., video=True))")
        self.predictor = predictor
        self.hole_filling_skipped = False  # sam2's optional CUDA extension is missing (see ``_quiet_propagation``)

    @torch.inference_mode()
    def propagate(
        self, frames: Sequence[np.ndarray], seeds: Mapping[int, np.ndarray]
    ) -> Iterator[tuple[int, dict[int, torch.Tensor]]]:
        """Seed each track id with its [H, W] bool mask on ``frames[0]`` and propagate through the window.
        Yields (frame offset, {track id: [H, W] logits}) for every frame of the window, in order."""
        if not seeds:
            for offset in range(len(frames)):
                yield offset, {}
            return
        with _quiet_propagation() as skipped:
            state = window_state(self.predictor, frames)
            for track_id, mask in seeds.items():
                self.predictor.add_new_mask(state, frame_idx=0, obj_id=int(track_id), mask=mask)
            for offset, obj_ids, logits in self.predictor.propagate_in_video(state, start_frame_idx=0):
                yield offset, {int(obj_id): logits[index, 0].float().cpu() for index, obj_id in enumerate(obj_ids)}
            state.clear()  # the window's state is released
        self.hole_filling_skipped |= bool(skipped)


@contextmanager
def _quiet_propagation() -> Iterator[list]:
    """Without sam2's progress bar of each window's propagation (the run shows one bar per video), and
    without its warning, repeated on every frame, that the hole filling of its optional CUDA extension
    is skipped; the warnings caught are yielded, so that the run can say it once."""
    import sam2.sam2_video_predictor as module

    bar = module.tqdm
    module.tqdm = lambda iterable, **_: iterable
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.filterwarnings("always", message=".*Skipping the post-processing step.*")
            skipped: list = []
            yield skipped
            skipped += [w for w in caught if "post-processing step" in str(w.message)]
            for other in caught:
                if "post-processing step" not in str(other.message):
                    warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    finally:
        module.tqdm = bar
