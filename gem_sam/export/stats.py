"""What an export wrote, for its summary."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ExportStats:
    images: int = 0  # images (or video frames) exported
    videos: int = 0  # videos exported (video exports)
    instances: int = 0  # masks written
    dropped_by_controls: int = 0  # masks removed by the quality controls
    dropped_small: int = 0  # masks whose every piece was below --min-polygon-area
    worst_area_disagreement: float | None = None  # max |rasterised polygon area - mask area| / mask area
    split_counts: dict[str, int] = field(default_factory=dict)  # images per split ("train", "val")
    renamed: list[str] = field(default_factory=list)  # "old -> new" for images given a distinct name
    upright_copies: int = 0  # EXIF-rotated photos written upright
    kept: list[str] = field(default_factory=list)  # lines naming what --out held that no export wrote

    def record_area(self, *, polygon_pixels: int, mask_pixels: int) -> None:
        """Note the disagreement of one instance's rasterised polygon with its mask."""
        if mask_pixels > 0:
            disagreement = abs(polygon_pixels - mask_pixels) / mask_pixels
            self.worst_area_disagreement = max(self.worst_area_disagreement or 0.0, disagreement)

    def lines(self) -> list[str]:
        out = [
            f"videos: {self.videos} ({self.images} frames)" if self.videos else f"images: {self.images}",
            f"instances written: {self.instances}",
            f"dropped by the quality controls: {self.dropped_by_controls}",
        ]
        if self.split_counts:
            counts = {name: self.split_counts.get(name, 0) for name in ("train", "val")}
            out.append("split: " + ", ".join(f"{count} {name}" for name, count in counts.items()))
            out += [
                f"warning: the {name} split is empty: each image's split is drawn from its file name and --seed, "
                "and none fell into it; use another --val-fraction or --seed, or more images"
                for name, count in counts.items()
                if not count
            ]
        if self.worst_area_disagreement is not None or self.dropped_small:
            out.append(f"dropped as smaller than --min-polygon-area: {self.dropped_small}")
            worst = self.worst_area_disagreement or 0.0
            out.append(f"worst area disagreement of a rasterised polygon with its mask: {100 * worst:.2f}%")
        if self.upright_copies:
            out.append(f"EXIF-rotated photos written as upright copies: {self.upright_copies}")
        if self.renamed:
            out.append(f"renamed so that each image keeps its own labels: {len(self.renamed)}")
            out += [f"  {line}" for line in self.renamed]
        return out + self.kept
