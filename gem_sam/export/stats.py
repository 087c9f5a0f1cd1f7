"""What an export wrote, for its summary."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ExportStats:
    images: int = 0  # images exported
    instances: int = 0  # masks written
    dropped_by_controls: int = 0  # masks removed by the quality controls
    dropped_small: int = 0  # masks whose every piece was below --min-polygon-area
    worst_area_disagreement: float | None = None  # max |rasterised polygon area - mask area| / mask area

    def record_area(self, *, polygon_pixels: int, mask_pixels: int) -> None:
        """Note the disagreement of one instance's rasterised polygon with its mask."""
        if mask_pixels > 0:
            disagreement = abs(polygon_pixels - mask_pixels) / mask_pixels
            self.worst_area_disagreement = max(self.worst_area_disagreement or 0.0, disagreement)

    def lines(self) -> list[str]:
        out = [
            f"images: {self.images}",
            f"instances written: {self.instances}",
            f"dropped by the quality controls: {self.dropped_by_controls}",
        ]
        if self.worst_area_disagreement is not None or self.dropped_small:
            out.append(f"dropped as smaller than --min-polygon-area: {self.dropped_small}")
            worst = self.worst_area_disagreement or 0.0
            out.append(f"worst area disagreement of a rasterised polygon with its mask: {100 * worst:.2f}%")
        return out
