"""Labelling videos: SAM 2 / 2.1 tracks with ids that last, each named by GEM over its whole life,
written as YouTube-VIS (``tracks.json``)."""

from .frames import VideoFrames, VideoReadError, find_videos, open_video
from .pipeline import NamingRule, VideoConfig, VideoLabeller, VideoRunSummary, label_video, label_videos
from .propagation import Sam2Propagator
from .spec import VideoLabellerSpec
from .tracking import TrackingConfig, VideoTracker, resolve_overlaps
from .vis import read_tracks

__all__ = [
    "NamingRule",
    "Sam2Propagator",
    "TrackingConfig",
    "VideoConfig",
    "VideoFrames",
    "VideoLabeller",
    "VideoLabellerSpec",
    "VideoReadError",
    "VideoRunSummary",
    "VideoTracker",
    "find_videos",
    "label_video",
    "label_videos",
    "open_video",
    "read_tracks",
    "resolve_overlaps",
]
