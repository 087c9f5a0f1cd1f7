"""SAM 2 / 2.1 masks: the same as sam2's own SAM2AutomaticMaskGenerator, with random-init models of the
real Hiera-T and Hiera-S configs, on real photos; loading, settings and errors."""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import json

import numpy as np
import pytest
import torch
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

from gem_sam.sam import (
    GridMaskGenerator,
    MaskGeneratorConfig,
    Sam2GeneratorConfig,
    build_mask_generator,
    build_sam2_model,
    generator_config,
    load_sam,
    load_sam2,
)
from gem_sam.sam.point_decoder import PointPromptDecoder, WorkSizes

from ..cli.test_label import run as run_label
from ..conftest import (
    LOOSE_SETTINGS,
    TINY_CLIP_NAME,
    assert_reference_parity,
    rgb_photo,
    scaled_sam2,
    self_evaluation,
    tiny_sam,
)
from ..labelling.test_scale_and_trust import assert_same_annotations

# Loose enough that random-init masks survive (their predicted IoUs are near 0.5); crop NMS off so
# that the full-image layer's masks survive next to the crops'.
SAM2_LOOSE = {**LOOSE_SETTINGS, "points_per_side": 6, "crop_nms_thresh": 1.0}


@pytest.fixture(scope="module")
def hiera_t():
    return scaled_sam2("sam2.1_hiera_t")


def same_masks(model, image: np.ndarray, **settings) -> list[dict]:
    """Our records, after checking them against the reference's by the parity criterion
    (``gem_sam.sam.parity``); never an empty comparison."""
    config = Sam2GeneratorConfig(**settings)
    ours = GridMaskGenerator(model, config=config).generate(image)
    reference = SAM2AutomaticMaskGenerator(model, output_mode="coco_rle", **config.reference_kwargs())
    assert_reference_parity(ours, reference, image)
    return ours


@pytest.mark.parity
@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"multimask_output": False},
        {"use_m2m": True, "points_per_side": 4},
        {"crop_n_layers": 1, "points_per_side": 4},
        {"pred_iou_thresh": 0.5},  # the IoU filter before any mask is formed
    ],
    ids=["defaults-loosened", "single-mask", "m2m", "crops", "iou-filter"],
)
def test_same_masks_as_sam2_hiera_t(hiera_t, settings: dict) -> None:
    ours = same_masks(hiera_t, rgb_photo("chelsea.png", long_side=160), **{**SAM2_LOOSE, **settings})
    assert len(ours) >= 10


@pytest.mark.parity
def test_same_masks_as_sam2_hiera_s() -> None:
    ours = same_masks(scaled_sam2("sam2.1_hiera_s"), rgb_photo("coffee.png", long_side=160), **SAM2_LOOSE)
    assert len(ours) >= 10


@pytest.mark.parity
def test_same_masks_where_most_prompts_pass_the_iou_filter(hiera_t) -> None:
    """The trained-like case: the IoU head's bias shifted so that 90% of the prompts have a mask above
    the default pred_iou_thresh (as with trained weights), stability loosened so that masks survive.
    SAM 2's IoU head ends in a sigmoid, so the shift is of the predicted IoU's logit."""
    shifted = copy.deepcopy(hiera_t)
    image = rgb_photo("chelsea.png", long_side=160)
    settings = {"points_per_side": 6, "stability_score_thresh": 0.3, "box_nms_thresh": 1.0}
    threshold = Sam2GeneratorConfig().pred_iou_thresh
    probe = GridMaskGenerator(shifted, config=Sam2GeneratorConfig(**settings, pred_iou_thresh=1.0))
    with torch.no_grad():
        points = probe.point_grids[0] * np.array(image.shape[:2])[None, ::-1]
        features = probe.adapter.embed(image)
        best = probe._decode(features, probe.adapter.prompt_coords(points, image.shape[:2]))[0].max(dim=1).values
        shift = float(torch.logit(torch.tensor(threshold)) - torch.logit(torch.quantile(best, 0.1))) + 1e-5
        shifted.sam_mask_decoder.iou_prediction_head.layers[-1].bias += shift
    share = float((torch.sigmoid(torch.logit(best) + shift) > threshold).float().mean())
    assert 0.85 <= share <= 0.95

    ours = same_masks(shifted, image, **settings)
    assert len(ours) >= 10


def test_single_mask_output_falls_back_where_unstable(hiera_t) -> None:
    """With multimask_output=False some points give their single-mask output and some the best multimask
    output, so the parity above covers both branches. Counted with sam2's own predictor: the mask it
    returns for a point, against its single-mask output with the fallback switched off."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    image = rgb_photo("chelsea.png", long_side=160)
    generator = GridMaskGenerator(hiera_t, config=Sam2GeneratorConfig(**{**SAM2_LOOSE, "multimask_output": False}))
    points = generator.point_grids[0] * np.array(image.shape[:2])[None, ::-1]  # [N, 2] (x, y) pixels
    predictor = SAM2ImagePredictor(hiera_t)
    predictor.set_image(image)
    prompts = {"point_coords": points[:, None, :], "point_labels": np.ones((len(points), 1), dtype=np.int64)}
    _, _, chosen = predictor.predict(**prompts, multimask_output=False, return_logits=True)
    decoder = hiera_t.sam_mask_decoder
    assert decoder.dynamic_multimask_via_stability
    decoder.dynamic_multimask_via_stability = False  # sam2's setting: always the single-mask output
    try:
        _, _, single = predictor.predict(**prompts, multimask_output=False, return_logits=True)
    finally:
        decoder.dynamic_multimask_via_stability = True
    fell_back = [not np.array_equal(a, b) for a, b in zip(chosen, single, strict=True)]
    assert 0 < sum(fell_back) < len(points), sum(fell_back)


def sam2_with_random_norms(model_type: str = "sam2.1_hiera_t"):
    model = scaled_sam2(model_type)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for module in model.sam_mask_decoder.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(1 + 0.3 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=generator))
    return model


@pytest.mark.parametrize("prompts", [1, 7, 20])
@pytest.mark.parametrize("device_sizes", ["cpu", "cuda"])
def test_decoder_matches_sam2_mask_decoder(prompts: int, device_sizes: str) -> None:
    """All four outputs (single-mask and multimask), with the object-score token and the high-resolution
    features, against sam2's MaskDecoder.predict_masks on random inputs; with the CPU's work sizes and a
    GPU's (one chunk of prompts, one band of tokens)."""
    model = sam2_with_random_norms()
    torch.manual_seed(prompts)
    embedding = torch.randn(1, 256, 64, 64)
    high_res = [torch.randn(1, 32, 256, 256), torch.randn(1, 64, 128, 128)]
    coords = torch.rand(prompts, 2) * 1024
    prompt_encoder, mask_decoder = model.sam_prompt_encoder, model.sam_mask_decoder
    with torch.no_grad():
        labels = torch.ones(prompts, 1, dtype=torch.int)
        sparse, dense = prompt_encoder(points=(coords[:, None], labels), boxes=None, masks=None)
        reference_masks, reference_iou, _, _ = mask_decoder.predict_masks(
            image_embeddings=embedding,
            image_pe=prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            repeat_image=True,
            high_res_features=high_res,
        )
        sizes = WorkSizes.for_device(torch.device(device_sizes))
        decoder = PointPromptDecoder(prompt_encoder, mask_decoder, work_sizes=sizes)
        tokens, image_tokens = decoder.transform(embedding, coords)
        selected = torch.arange(0, prompts, 2)
        shifts = decoder.upscaling_shifts(high_res, side=64)
        masks = decoder.mask_logits(tokens[selected], image_tokens, selected, outputs=(0, 1, 2, 3), shifts=shifts)
        per_prompt = torch.tensor([[3, 0]]).expand(len(selected), -1)  # outputs chosen per prompt
        picked = decoder.mask_logits(tokens[selected], image_tokens, selected, outputs=per_prompt, shifts=shifts)
    torch.testing.assert_close(decoder.iou_predictions(tokens), reference_iou, atol=1e-5, rtol=1e-5)
    scale = reference_masks.abs().max()
    assert scale > 1.0
    torch.testing.assert_close(masks, reference_masks[selected], atol=1e-5 * scale, rtol=1e-4)
    torch.testing.assert_close(picked, reference_masks[selected][:, [3, 0]], atol=1e-5 * scale, rtol=1e-4)


def test_defaults_are_each_reference_generators() -> None:
    """Read from the reference generators' signatures, not from our code."""
    for config, reference in (
        (Sam2GeneratorConfig(), SAM2AutomaticMaskGenerator),
        (MaskGeneratorConfig(), __import__("segment_anything").SamAutomaticMaskGenerator),
    ):
        signature = inspect.signature(reference.__init__).parameters
        for name, value in config.reference_kwargs().items():
            assert signature[name].default == pytest.approx(value), name
    assert Sam2GeneratorConfig().pred_iou_thresh == 0.8 and MaskGeneratorConfig().pred_iou_thresh == 0.88


def test_sam2_settings_are_refused_for_sam1() -> None:
    with pytest.raises(ValueError, match="use_m2m: SAM 2 setting.*vit_b is a SAM 1 model"):
        generator_config("vit_b", use_m2m=True)
    with pytest.raises(TypeError, match="unknown mask generator setting.*valid:.*use_m2m"):
        generator_config("sam2.1_hiera_t", use_mm=True)
    assert isinstance(generator_config("sam2_hiera_l"), Sam2GeneratorConfig)


def test_generator_refuses_a_config_of_the_other_family(hiera_t) -> None:
    with pytest.raises(TypeError, match="SAM 2 model takes a Sam2GeneratorConfig"):
        GridMaskGenerator(hiera_t, config=MaskGeneratorConfig())


def test_build_from_checkpoint_file_gives_the_same_masks(sam2_t_checkpoint, hiera_t) -> None:
    image = rgb_photo("astronaut.png", long_side=120)
    settings = {**SAM2_LOOSE, "points_per_side": 3}
    generator = build_mask_generator(
        model_type="sam2.1_hiera_t", checkpoint=sam2_t_checkpoint, device="cpu", **settings
    )
    assert isinstance(generator.config, Sam2GeneratorConfig)
    expected = GridMaskGenerator(hiera_t, config=Sam2GeneratorConfig(**settings)).generate(image)
    assert expected and generator.generate(image) == expected  # the same weights and code: identical records


def test_checkpoint_of_another_model_is_named(sam2_t_checkpoint, tmp_path) -> None:
    with pytest.raises(
        ValueError, match=r"does not fit sam2.1_hiera_s.*width 96 and 12 blocks.*fits --sam-model sam2.1_hiera_t"
    ):
        load_sam2(model_type="sam2.1_hiera_s", checkpoint=sam2_t_checkpoint)
    with pytest.raises(ValueError, match=r"does not fit sam2_hiera_t.*unexpected key"):
        load_sam2(model_type="sam2_hiera_t", checkpoint=sam2_t_checkpoint)
    with pytest.raises(ValueError, match=r"is a SAM 2 checkpoint.*not vit_b.*sam2.1_hiera"):
        load_sam(model_type="vit_b", checkpoint=sam2_t_checkpoint)
    sam1 = tmp_path / "sam1.pth"
    torch.save(tiny_sam().state_dict(), sam1)
    with pytest.raises(ValueError, match=r"does not fit sam2.1_hiera_t: it is a SAM 1 \(ViT\) checkpoint"):
        load_sam2(model_type="sam2.1_hiera_t", checkpoint=sam1)


def test_checkpoint_with_pickled_code_is_refused(tmp_path, hiera_t) -> None:
    path = tmp_path / "pickled.pt"
    torch.save({"model": copy.deepcopy(hiera_t)}, path)  # a whole module: not loadable with weights_only
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_sam2(model_type="sam2.1_hiera_t", checkpoint=path)


def test_missing_checkpoint_names_the_file() -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_sam2(model_type="sam2.1_hiera_t", checkpoint="nowhere.pt")
    with pytest.raises(ValueError, match="unknown SAM 2 model 'sam2.1_hiera_x'; choose one of sam2.1_hiera_t"):
        load_sam2(model_type="sam2.1_hiera_x")


def test_models_are_built_with_sam2s_single_mask_fallback() -> None:
    """As ``build_sam2`` builds them: an unstable single-mask output falls back to a multimask one."""
    decoder = build_sam2_model("sam2_hiera_t").sam_mask_decoder
    assert decoder.dynamic_multimask_via_stability and decoder.dynamic_multimask_stability_thresh == 0.98


def _label_args(clip_checkpoint, sam2_checkpoint) -> list[str]:
    return [
        "--clip-model", TINY_CLIP_NAME, "--pretrained", str(clip_checkpoint),
        "--sam-model", "sam2.1_hiera_t", "--sam-checkpoint", str(sam2_checkpoint), "--device", "cpu",
        "--points-per-side", "3", "--pred-iou-thresh", "0", "--stability-score-thresh", "0.3",
        "--box-nms-thresh", "1.0", "--quiet",
    ]  # fmt: skip


def test_label_cli_writes_valid_coco_with_sam2(
    photo_folder, vocab_file, tmp_path, tiny_clip_checkpoint, sam2_t_checkpoint
) -> None:
    out = tmp_path / "annotations.json"
    args = ["--images", str(photo_folder), "--vocab", str(vocab_file), "--out", str(out)]
    code, stdout, _ = run_label([*args, *_label_args(tiny_clip_checkpoint, sam2_t_checkpoint), "--use-m2m"])
    assert code == 0, stdout
    data = json.loads(out.read_text())
    assert len(data["images"]) == 4 and len(data["annotations"]) >= 4
    assert data["info"]["settings"]["sam_model"] == "sam2.1_hiera_t"
    generator_settings = data["info"]["settings"]["mask_generator"]
    assert generator_settings["use_m2m"] is True and generator_settings["multimask_output"] is True
    assert self_evaluation(out).stats[0] == pytest.approx(1.0)  # pycocotools reads every mask


def test_label_cli_help_and_family_errors(tmp_path, photo_folder, vocab_file) -> None:
    from gem_sam.cli.label import build_parser

    stdout = build_parser().format_help()
    assert "0.88 for SAM 1, 0.8 for SAM 2" in " ".join(stdout.split())
    assert "sam2.1_hiera_b+" in stdout and "SAM 2 only" in " ".join(stdout.split())
    out = tmp_path / "out.json"
    args = ["--images", str(photo_folder), "--vocab", str(vocab_file), "--out", str(out), "--sam-model", "vit_b"]
    code, _, stderr = run_label([*args, "--no-multimask-output"])
    assert code == 2 and "multimask_output: SAM 2 setting(s), but vit_b is a SAM 1 model" in stderr


@pytest.mark.parity
def test_ray_labelling_with_sam2(photo_folder, tmp_path, tiny_clip_checkpoint, sam2_t_checkpoint, hiera_t) -> None:
    pytest.importorskip("ray.data", reason="Ray is an optional extra: pip install gem_sam[ray]")
    from gem_sam import LabellerSpec, label_folder, label_folder_ray

    spec = LabellerSpec(
        vocabulary=("cat", "person"),
        clip_model=TINY_CLIP_NAME,
        pretrained=str(tiny_clip_checkpoint),
        sam_model="sam2.1_hiera_t",
        sam_checkpoint=str(sam2_t_checkpoint),
        generator=Sam2GeneratorConfig(**{**SAM2_LOOSE, "points_per_side": 3}),
        device="cpu",
        clip_config_paths=(str(tiny_clip_checkpoint.parent / "configs"),),
    )
    single, distributed = tmp_path / "single.json", tmp_path / "ray.json"
    label_folder(spec.build(), images_dir=photo_folder, out_path=single, settings=spec.settings(), progress=False)
    summary = label_folder_ray(spec, images_dir=photo_folder, out_path=distributed, workers=1, progress=False)
    assert summary.labelled == 4
    reference = SAM2AutomaticMaskGenerator(hiera_t, output_mode="coco_rle", **spec.generator.reference_kwargs())
    assert_same_annotations(
        json.loads(distributed.read_text()), json.loads(single.read_text()), reference, images_dir=photo_folder
    )


@pytest.mark.slow  # a random-init Hiera-L checkpoint (900 MB) is written and loaded
def test_evaluate_gem_sam_with_sam2_hiera_l(tmp_path, tiny_clip_checkpoint) -> None:
    from gem_sam.evaluate import main as evaluate_main

    from ..evaluation.test_points import write_dataset

    checkpoint = tmp_path / "sam2.1_hiera_l_random.pt"
    torch.save({"model": scaled_sam2("sam2.1_hiera_l").state_dict()}, checkpoint)
    dataset = write_dataset(tmp_path)
    out = tmp_path / "report.json"
    argv = [
        "--points", dataset["points"], "--classes", dataset["classes"], "--images", dataset["images"],
        "--method", "gem-sam", "--out", str(out), "--quiet", "--device", "cpu",
        "--clip-model", TINY_CLIP_NAME, "--pretrained", str(tiny_clip_checkpoint),
        "--sam-model", "sam2.1_hiera_l", "--sam-checkpoint", str(checkpoint), "--points-per-side", "2",
        "--pred-iou-thresh", "0", "--stability-score-thresh", "0.3",
    ]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        assert evaluate_main(argv) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["sam_model"] == "sam2.1_hiera_l" and report["n_images"] == 3
    assert report["settings"]["mask_generator"]["pred_iou_thresh"] == 0.0
    assert "use_m2m" in report["settings"]["mask_generator"]


@pytest.mark.slow  # bf16 convolutions are slow on CPUs without bf16 units
def test_sam2_bf16_autocast_runs_on_cpu(hiera_t) -> None:
    """The GPU path's reduced precision, exercised on the CPU: encoder, decoder and m2m under autocast."""
    image = rgb_photo("astronaut.png", long_side=100)
    config = Sam2GeneratorConfig(**{**SAM2_LOOSE, "points_per_side": 2, "use_m2m": True}, precision="bf16")
    records = GridMaskGenerator(hiera_t, config=config).generate(image)
    assert records and all(np.isfinite(r["predicted_iou"]) and 0.0 <= r["stability_score"] <= 1.0 for r in records)
