"""Video data: one sample plan, a DALI GPU backend and a CPU backend, ILA's sampling and
augmentation, and no crash on bad videos.

* ``dataset``: list / label CSV parsing and the cached probe index of the videos;
* ``probe``: one pass over each video: frame count by the frame-index rule, main stream, DALI issues;
* ``plan``: ``SamplePlan``, the single source of randomness (frames, crops, augmentation, mixing);
* ``augment``: the clip transforms both backends compute; ``mixup``: mixing and smoothed targets;
* ``cpu_backend`` (PyAV / torchcodec in DataLoader workers) and ``dali_backend`` (NVDEC on the GPU);
* ``bad_videos``: reasons, accounting, the JSON report and the stop rule;
* ``loader.build_loader``: what the trainer uses; ``synthetic``: ``ila-fast make-synthetic``;
* ``prepare``: ``ila-fast prepare`` (re-encode a dataset for fast loading).

PyAV and DALI are imported only inside the modules that need them.
"""
from .bad_videos import REASONS, BadVideo, TooManyBadVideos
from .dataset import DatasetError, VideoDataset, read_labels, read_list
from .loader import Batch, VideoLoader, build_loader
from .mixup import mix_batch, smooth_one_hot, soft_target_cross_entropy
from .plan import ClipSpec, MixSpec, PlanSettings, SamplePlan

__all__ = ["REASONS", "BadVideo", "TooManyBadVideos", "DatasetError", "VideoDataset", "read_labels",
           "read_list", "Batch", "VideoLoader", "build_loader", "mix_batch", "smooth_one_hot",
           "soft_target_cross_entropy", "ClipSpec", "MixSpec", "PlanSettings", "SamplePlan"]
