"""Evaluation: OpenImages V7 point p-mIoU (Table 3) and dense zero-shot segmentation mIoU on VOC,
Pascal Context and ADE20K (Tables 1, 2, 4, 6), on one engine that resumes and runs on Ray."""

from .dense import DenseEvalTask, evaluate_dense
from .dense_predictor import DensePredictor, SlidingWindow
from .engine import ModelSpec, evaluate_selected
from .point_predictor import PointPredictor, SamRefinement
from .points import PointEvalTask, evaluate_points

__all__ = [
    "DenseEvalTask",
    "DensePredictor",
    "ModelSpec",
    "PointEvalTask",
    "PointPredictor",
    "SamRefinement",
    "SlidingWindow",
    "evaluate_dense",
    "evaluate_points",
    "evaluate_selected",
]
