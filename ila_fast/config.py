"""Typed configuration: one dataclass per section, loaded strictly from TOML.

Unknown keys, wrong types and impossible values are refused before any work starts,
with an error naming the file, the key and (for a misspelling) the nearest valid key.
This module imports nothing else from ila_fast.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and key."""


# The model zoo's CLIP towers: one source of truth for their shapes.
ARCHS: dict[str, dict] = {
    "ViT-B/32": dict(patch_size=32, width=768, layers=12, heads=12, embed_dim=512,
                     text_width=512, text_heads=8, text_layers=12),
    "ViT-B/16": dict(patch_size=16, width=768, layers=12, heads=12, embed_dim=512,
                     text_width=512, text_heads=8, text_layers=12),
    "ViT-L/14": dict(patch_size=14, width=1024, layers=24, heads=16, embed_dim=768,
                     text_width=768, text_heads=12, text_layers=12),
    # A small tower for tests and the demo (random weights only).
    "tiny": dict(patch_size=16, width=64, layers=2, heads=2, embed_dim=64,
                 text_width=64, text_heads=1, text_layers=1),
    # Any other shape: every tower field must then be given explicitly.
    "custom": {},
}
TOWER_FIELDS = ("patch_size", "width", "layers", "heads", "embed_dim", "text_width", "text_heads", "text_layers")
DATASETS = {"k400": 400, "ssv2": 174}
INTERACTIVE = {"k400": "depthwise", "ssv2": "dense"}  # the interactive block each branch uses
KERNELS = ("auto", "reference", "triton")  # auto: triton on a GPU, reference on a CPU


@dataclass
class ModelConfig:
    arch: str = "ViT-B/16"
    dataset: str = "k400"            # k400: text head + depthwise interactive block; ssv2: classifier + dense
    interactive: str | None = None   # "depthwise" | "dense"; default follows the dataset
    frames: int = 8
    input_size: int = 224
    num_classes: int | None = None   # default from the dataset (400 / 174)
    # Tower shape; None takes the arch's value (set explicitly only for custom towers).
    patch_size: int | None = None
    width: int | None = None
    layers: int | None = None
    heads: int | None = None
    embed_dim: int | None = None
    text_width: int | None = None
    text_heads: int | None = None
    text_layers: int | None = None
    context_length: int = 77
    vocab_size: int = 49408
    # ILA branch and heads
    ila: bool = True                 # false: the frame-only baseline (plain CLIP blocks, frame features averaged)
    freeze_clip: bool = True         # false: every weight trains (a model from random weights, e.g. the demo)
    correlation_channels: int = 256
    mit_layers: int = 1
    prompt_layers: int = 2
    prompt_alpha: float = 0.1
    drop_path: float = 0.0
    ssv2_dropout: float = 0.5
    alignment_delta: float = 0.2           # initial jitter of the 9 training masks
    alignment_delta_halve_from: int = 30   # epoch from which delta halves every epoch
    kernels: str = "auto"           # auto: fused Triton ops on a GPU, PyTorch reference ops on a CPU
    official_eval_bn: bool = False  # reproduce the official code's batch-stat BN in evaluation
    clip_weights: str | None = None  # local OpenAI / open_clip checkpoint; "random": train from random weights
    class_names: str | None = None   # label CSV (id,name) or bundled set ("kinetics400") for the text head
    prompt: str | list[str] = "{}"   # text template(s) of a class name ("a video of {}."); a list: features averaged

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ConfigError(f"model.dataset: {self.dataset!r} is not one of {sorted(DATASETS)}")
        if self.arch not in ARCHS:
            raise ConfigError(f"model.arch: unknown arch {self.arch!r}{_suggest(self.arch, ARCHS)}; "
                              f"choose one of {sorted(ARCHS)}")
        for key, value in ARCHS[self.arch].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        # SSv2 models have no text tower, so they need no text shape.
        unset = [key for key in TOWER_FIELDS if getattr(self, key) is None
                 and not (key.startswith("text_") and self.dataset == "ssv2")]
        if unset:
            raise ConfigError(f"model.arch = 'custom' needs every tower field; missing: {', '.join(unset)}")
        if self.interactive is None:
            self.interactive = INTERACTIVE[self.dataset]
        if self.interactive not in INTERACTIVE.values():
            raise ConfigError(f"model.interactive: {self.interactive!r} is not one of "
                              f"{sorted(set(INTERACTIVE.values()))}")
        if self.num_classes is None:
            self.num_classes = DATASETS[self.dataset]
        if self.kernels not in KERNELS:
            raise ConfigError(f"model.kernels: {self.kernels!r} is not one of {list(KERNELS)}")
        prompts = [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
        if not prompts or any(not isinstance(p, str) or p.count("{}") != 1 for p in prompts):
            raise ConfigError(f"model.prompt = {self.prompt!r}: each template holds '{{}}' once, where the class "
                              "name goes (e.g. \"a video of {}.\")")
        checks = [
            (self.frames >= 2, f"model.frames = {self.frames}: ILA aligns frame pairs, so T must be >= 2"),
            (self.input_size % self.patch_size == 0,
             f"model.input_size = {self.input_size} is not divisible by patch_size = {self.patch_size}"),
            (self.grid_size >= 4, f"model.input_size / patch_size = {self.grid_size}: the point head's "
                                  "two 2x2 max-pools need a token grid of at least 4x4"),
            (self.width % self.heads == 0, f"model.width = {self.width} is not divisible by heads = {self.heads}"),
            (self.embed_dim % 64 == 0, f"model.embed_dim = {self.embed_dim}: the heads use embed_dim/64 "
                                       "attention heads, so it must be a multiple of 64"),
            (self.correlation_channels % 8 == 0 and self.correlation_channels >= 8,
             f"model.correlation_channels = {self.correlation_channels} must be a multiple of 8 "
             "(pre / cur halves, and the point head's grouped convolutions)"),
            (self.num_classes >= 1, f"model.num_classes = {self.num_classes} must be >= 1"),
            (0.0 <= self.drop_path < 1.0, f"model.drop_path = {self.drop_path} must be in [0, 1)"),
            (0.0 <= self.ssv2_dropout < 1.0, f"model.ssv2_dropout = {self.ssv2_dropout} must be in [0, 1)"),
            (self.alignment_delta >= 0, f"model.alignment_delta = {self.alignment_delta} must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def grid_size(self) -> int:
        return self.input_size // self.patch_size

    @property
    def tokens(self) -> int:
        return self.grid_size ** 2 + 1


# Pixel normalisation (ImageNet statistics on 0-255 RGB, docs/specification.md#2-data-format): the one place they live.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
DATA_BACKENDS = ("auto", "dali", "cpu")
CPU_DECODERS = ("auto", "pyav", "torchcodec")
SHORT_VIDEO_POLICIES = ("repeat", "skip")
# data.dataset: the adapters of ila_fast.data.datasets (a test keeps the two in step)
DATASET_ADAPTERS = ("list", "kinetics400", "kinetics600", "kinetics700", "ssv2", "ucf101", "hmdb51")


@dataclass
class DataConfig:
    """Datasets, sampling, augmentation and the loader backend (docs/specification.md#2-data-format, docs/recipe.md).

    Frames per clip and the input size come from ``model.frames`` / ``model.input_size``.
    """
    root: str = ""                     # data root; list paths are relative to it
    train_list: str | None = None      # `relative/path.mp4 label` per line
    val_list: str | None = None
    labels: str | None = None          # label CSV (id,name), or a bundled label set's name ("kinetics400", ...)
    # A dataset as downloaded (data/datasets/): its annotation folder, videos under data.root; "list": the lists
    dataset: str = "list"              # list | kinetics400 | kinetics600 | kinetics700 | ssv2 | ucf101 | hmdb51
    annotations: str | None = None     # the dataset's own annotation files (CSV / JSON / split files)
    split: int = 1                     # official split of UCF101 / HMDB51 (1-3)
    backend: str = "auto"              # auto: DALI on a GPU when installed, else the CPU backend
    cpu_decoder: str = "auto"          # CPU backend: auto picks torchcodec when installed, else PyAV
    dali_device: str = "mixed"         # "mixed" (NVDEC) or "cpu" (VP8/VP9/MJPEG only)
    dali_pipelines: int = 1            # DALI decoder pipelines per GPU (one NVDEC engine each; H100/H200 have 7)
    dali_fallback: str = "cpu"         # videos DALI would decode wrongly / refuses: "cpu" (PyAV) or "skip"
    batch_size: int = 8                # clips per rank per step
    num_workers: int = 8               # CPU backend worker processes / DALI threads
    seed: int = 0
    # sampling
    test_clips: int = 4                # evaluation: temporal clips (evenly spaced, deterministic)
    # "official": the K test clips lie in the official multi-view support (T segments of floor(n/T)
    # frames from frame 0), evenly spaced; "spread": evenly spaced inside the training segments,
    # which cover the whole video (docs/recipe.md)
    test_clip_frames: str = "official"
    test_crops: int = 3                # evaluation: spatial crops (left/centre/right or top/centre/bottom)
    short_videos: str = "repeat"       # fewer frames than T: "repeat" (ILA sampler repeats) or "skip"
    # augmentation (training)
    resize_ratio: float = 256 / 224    # short side resized to resize_ratio * input_size before cropping
    crop_scales: list[float] = field(default_factory=lambda: [1.0, 0.875, 0.75, 0.66])
    max_aspect_gap: int = 1
    antialias: bool = False            # the official pipeline resizes with plain bilinear (cv2)
    color_jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2            # the X-CLIP pipeline ILA uses: 0.4 / 0.4 / 0.2 / 0.1
    hue: float = 0.1                   # fraction of a full turn, as torchvision: 0.1 = +-36 degrees
    grayscale_p: float = 0.2
    erasing_p: float = 0.25
    # "per_frame" (the recipe): every frame of a jittered clip draws its own torchvision ColorJitter
    # (factors and order), each operation and the integer-luma grayscale on whole 8-bit levels as
    # PIL computes them; "per_clip": one affine colour map per clip (cheaper, no frame-to-frame flicker)
    color_jitter: str = "per_frame"
    erase_fill: str = "zeros"          # erased box: "zeros" (the mean colour, timm's 'const') or "noise" (N(0, 1))
    # batch mixing and targets (on the device)
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    mix_switch_p: float = 0.5          # probability of cutmix instead of mixup
    mix_p: float = 1.0                 # probability that a batch is mixed at all
    mix_partner: str = "randperm"      # clip i mixes with a random permutation of the batch (may be itself) or "reverse"
    label_smoothing: float = 0.1
    # bad videos
    max_bad_fraction: float = 0.01     # stop the run when more of the dataset than this is unreadable
    replace_attempts: int = 16
    missing: str = "skip"              # listed files that are absent: "skip" (bad videos, replaced) or "error"
    report_dir: str | None = None      # JSON bad-video reports (default: beside the list file)
    index_dir: str | None = None       # probe-index cache (default: beside the list file)

    def __post_init__(self):
        def check(ok, message):
            if not ok:
                raise ConfigError(message)
        check(self.backend in DATA_BACKENDS, f"data.backend: {self.backend!r} is not one of {list(DATA_BACKENDS)}")
        check(self.dataset in DATASET_ADAPTERS, f"data.dataset: {self.dataset!r} is not one of "
              f"{list(DATASET_ADAPTERS)}{_suggest(self.dataset, DATASET_ADAPTERS)}")
        check(self.dataset == "list" or not (self.train_list or self.val_list),
              f"data.train_list / val_list are for data.dataset = 'list'; data.dataset = {self.dataset!r} reads "
              "data.annotations: unset the lists (or the dataset)")
        check(1 <= self.split <= 3, f"data.split = {self.split}: the official splits are 1-3 (UCF101 / HMDB51)")
        check(self.cpu_decoder in CPU_DECODERS,
              f"data.cpu_decoder: {self.cpu_decoder!r} is not one of {list(CPU_DECODERS)}")
        check(self.dali_device in ("mixed", "cpu"), f"data.dali_device: {self.dali_device!r} is not 'mixed' or 'cpu'")
        check(self.short_videos in SHORT_VIDEO_POLICIES,
              f"data.short_videos: {self.short_videos!r} is not one of {list(SHORT_VIDEO_POLICIES)}")
        check(self.batch_size >= 1, f"data.batch_size = {self.batch_size} must be >= 1")
        check(self.num_workers >= 0, f"data.num_workers = {self.num_workers} must be >= 0")
        check(self.test_clips >= 1, f"data.test_clips = {self.test_clips} must be >= 1")
        check(self.test_crops in (1, 3), f"data.test_crops = {self.test_crops} must be 1 or 3")
        check(self.resize_ratio >= 1.0, f"data.resize_ratio = {self.resize_ratio} must be >= 1")
        check(len(self.crop_scales) >= 1 and all(0 < s <= 1 for s in self.crop_scales),
              f"data.crop_scales = {self.crop_scales}: need at least one scale in (0, 1]")
        check(self.max_aspect_gap >= 0, f"data.max_aspect_gap = {self.max_aspect_gap} must be >= 0")
        for key in ("color_jitter_p", "grayscale_p", "erasing_p", "mix_switch_p", "mix_p"):
            value = getattr(self, key)
            check(0.0 <= value <= 1.0, f"data.{key} = {value} is a probability: it must be in [0, 1]")
        for key in ("brightness", "contrast", "saturation"):
            value = getattr(self, key)
            check(0.0 <= value < 1.0, f"data.{key} = {value} must be in [0, 1)")
        check(0.0 <= self.hue <= 0.5, f"data.hue = {self.hue} must be in [0, 0.5]")
        check(self.mixup_alpha >= 0 and self.cutmix_alpha >= 0,
              f"data.mixup_alpha / cutmix_alpha = {self.mixup_alpha} / {self.cutmix_alpha} must be >= 0")
        check(0.0 <= self.label_smoothing < 1.0, f"data.label_smoothing = {self.label_smoothing} must be in [0, 1)")
        check(0.0 <= self.max_bad_fraction <= 1.0,
              f"data.max_bad_fraction = {self.max_bad_fraction} must be in [0, 1]")
        check(self.dali_fallback in ("cpu", "skip"), f"data.dali_fallback: {self.dali_fallback!r} is not 'cpu' or 'skip'")
        check(self.dali_pipelines >= 1, f"data.dali_pipelines = {self.dali_pipelines} must be >= 1")
        for key, allowed in (("color_jitter", ("per_frame", "per_clip")), ("erase_fill", ("zeros", "noise")),
                             ("mix_partner", ("randperm", "reverse")), ("test_clip_frames", ("official", "spread"))):
            check(getattr(self, key) in allowed, f"data.{key}: {getattr(self, key)!r} is not one of {list(allowed)}")
        check(self.missing in ("skip", "error"), f"data.missing: {self.missing!r} is not 'skip' or 'error'")
        check(self.replace_attempts >= 1, f"data.replace_attempts = {self.replace_attempts} must be >= 1")
        self.crop_scales = [float(s) for s in self.crop_scales]


PARALLELISMS = ("fsdp", "hsdp")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")   # auto: bf16 on a GPU, fp32 on a CPU
ACTIVATION_CHECKPOINTING = ("off", "block")


@dataclass
class TrainConfig:
    """The training recipe (docs/recipe.md) and how the trainer runs, saves and reports.

    Per-GPU clips come from ``data.batch_size``; accumulation = total_batch / (batch_size x world),
    reconciled in one place (``accumulation_steps``).
    """
    epochs: int = 50
    warmup_epochs: float = 5.0
    # AdamW groups (docs/recipe.md): name contains message_ / temporal_ (not message_) / mit. or classifier.
    lr_message: float = 5e-4
    wd_message: float = 1e-2
    lr_temporal: float = 8e-5
    wd_temporal: float = 1e-3
    lr_mit: float = 4e-4
    wd_mit: float = 3e-3
    lr_other: float = 8e-6           # any other trainable parameter (the recipe's base lr)
    wd_other: float = 1e-3
    min_lr: float = 8e-8             # cosine floor (absolute, every group)
    warmup_lr: float = 0.0           # lr at step 0 of the linear warm-up (every group)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-8
    total_batch: int = 256           # clips per optimizer step, all ranks and micro-steps together
    grad_clip: float = 0.0           # max global grad norm; 0 (the recipe) disables clipping
    # "micro_batch" (the recipe): timm's CosineLRScheduler indexed by micro-batch, each step's lr set
    # after the step before (the first step at warmup_lr); "per_step": the same cosine evaluated at
    # the optimizer step itself, no delay (docs/recipe.md)
    lr_schedule: str = "micro_batch"
    precision: str = "auto"          # auto | bf16 | fp16 | fp32
    compile: bool | None = None      # None: on for a GPU, off on a CPU
    activation_checkpointing: str = "off"   # off | block
    freeze_bn_stats: bool = False    # BatchNorm normalises with running statistics while training
    aux_loss_weight: float = 1.0
    # checkpoints: whichever interval comes first
    checkpoint_every_steps: int = 1000
    checkpoint_every_minutes: float = 30.0
    keep_last: int = 3
    keep_best: bool = True           # checkpoints/best: the best evaluation's checkpoint (not pruned by keep_last)
    # evaluation and reporting
    eval_every_epochs: int = 1       # single-view evaluation on data.val_list; 0 disables
    log_every_steps: int = 10
    seed: int = 0
    max_steps: int = 0               # stop after this many optimizer steps (0: run all epochs)
    max_bad_steps: int = 5           # stop after this many non-finite steps in a row
    log_samples: bool = False        # write every step's sample ids to samples.rank{r}.jsonl (audits resume)
    dist_timeout_s: float = 600.0    # start-up: every rank must join within this (rendezvous), and the first step
    dist_step_timeout_s: float = 300.0   # collective timeout from the second step on: a dead rank is seen soon
    parallelism: str = "fsdp"        # fsdp: shard over all ranks | hsdp: shard inside a node, replicate across

    def __post_init__(self):
        def check(ok, message):
            if not ok:
                raise ConfigError(message)
        check(self.epochs >= 1, f"train.epochs = {self.epochs} must be >= 1")
        check(0 <= self.warmup_epochs <= self.epochs,
              f"train.warmup_epochs = {self.warmup_epochs} must be in [0, epochs = {self.epochs}]")
        for key in ("lr_message", "lr_temporal", "lr_mit", "lr_other", "wd_message", "wd_temporal", "wd_mit",
                    "wd_other", "min_lr", "warmup_lr", "aux_loss_weight", "grad_clip"):
            check(getattr(self, key) >= 0, f"train.{key} = {getattr(self, key)} must be >= 0")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
              f"train.betas = {self.betas}: need two values in [0, 1)")
        check(self.eps > 0, f"train.eps = {self.eps} must be > 0")
        check(self.total_batch >= 1, f"train.total_batch = {self.total_batch} must be >= 1")
        check(self.precision in PRECISIONS, f"train.precision: {self.precision!r} is not one of {list(PRECISIONS)}")
        check(self.activation_checkpointing in ACTIVATION_CHECKPOINTING,
              f"train.activation_checkpointing: {self.activation_checkpointing!r} is not one of "
              f"{list(ACTIVATION_CHECKPOINTING)}")
        check(self.checkpoint_every_steps >= 0, "train.checkpoint_every_steps must be >= 0 (0: no step interval)")
        check(self.checkpoint_every_minutes >= 0, "train.checkpoint_every_minutes must be >= 0 (0: no time interval)")
        check(self.keep_last >= 1, f"train.keep_last = {self.keep_last} must be >= 1")
        check(self.eval_every_epochs >= 0, f"train.eval_every_epochs = {self.eval_every_epochs} must be >= 0")
        check(self.log_every_steps >= 1, f"train.log_every_steps = {self.log_every_steps} must be >= 1")
        check(self.max_steps >= 0, f"train.max_steps = {self.max_steps} must be >= 0")
        check(self.max_bad_steps >= 1, f"train.max_bad_steps = {self.max_bad_steps} must be >= 1")
        check(self.dist_timeout_s > 0, f"train.dist_timeout_s = {self.dist_timeout_s} must be > 0")
        check(self.dist_step_timeout_s > 0, f"train.dist_step_timeout_s = {self.dist_step_timeout_s} must be > 0")
        check(self.lr_schedule in ("micro_batch", "per_step"),
              f"train.lr_schedule: {self.lr_schedule!r} is not one of ['micro_batch', 'per_step']")
        check(self.parallelism in PARALLELISMS,
              f"train.parallelism: {self.parallelism!r} is not one of {list(PARALLELISMS)}")
        self.betas = [float(b) for b in self.betas]


def slurm_time_minutes(text: str | int) -> int:
    """Slurm's time formats -> minutes: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS (seconds round up)."""
    if isinstance(text, int):
        minutes = text
    else:
        m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(text).strip())
        if not m:
            raise ConfigError(f"time {text!r}: use minutes, HH:MM:SS or D-HH:MM:SS (e.g. 90, 04:00:00, 2-00:00:00)")
        days, a, b, c = (int(g) if g is not None else None for g in m.groups())
        if days is not None:   # D-HH[:MM[:SS]]
            seconds = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
        elif c is not None:    # HH:MM:SS
            seconds = a * 3600 + b * 60 + c
        elif b is not None:    # MM:SS
            seconds = a * 60 + b
        else:                  # minutes
            seconds = a * 60
        minutes = -(-seconds // 60)
    if minutes < 1:
        raise ConfigError(f"time {text!r}: the limit must be at least one minute")
    return minutes


@dataclass
class SlurmConfig:
    """Cluster defaults for ``ila-fast submit``; its command-line options override them."""
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    nodes: int = 1
    gpus_per_node: int = 8           # 0: a CPU-only job (tests, gloo)
    tasks_per_node: int | None = None   # default: one task per GPU (1 without GPUs)
    cpus_per_task: int = 8
    mem: str | None = None           # per node, sbatch syntax ("400G"); unset: the partition's default
    time: str = "1-00:00:00"         # minutes, HH:MM:SS or D-HH:MM:SS
    sbatch: list[str] = field(default_factory=list)   # extra sbatch options "KEY=VALUE" ("exclusive=" for a flag)
    setup: list[str] = field(default_factory=list)    # shell lines before srun (module load ..., source venv)
    env: list[str] = field(default_factory=list)      # "NAME=VALUE" for every task, e.g. NCCL_SOCKET_IFNAME=ib0
    signal_delay_s: int = 120        # USR2 this long before the time limit: time to save a checkpoint
    max_timeouts: int = 20           # requeues after reaching the time limit (preemptions are not counted)
    max_retries: int = 2             # requeues after a training error
    job_name: str | None = None      # default: the config's name

    def __post_init__(self):
        def check(ok, message):
            if not ok:
                raise ConfigError(message)
        check(self.nodes >= 1, f"slurm.nodes = {self.nodes} must be >= 1")
        check(self.gpus_per_node >= 0, f"slurm.gpus_per_node = {self.gpus_per_node} must be >= 0")
        check(self.tasks_per_node is None or self.tasks_per_node >= 1,
              f"slurm.tasks_per_node = {self.tasks_per_node} must be >= 1")
        check(self.cpus_per_task >= 1, f"slurm.cpus_per_task = {self.cpus_per_task} must be >= 1")
        try:
            slurm_time_minutes(self.time)
        except ConfigError as e:
            raise ConfigError(f"slurm.{e}") from None
        for key in ("sbatch", "env"):
            for item in getattr(self, key):
                check(isinstance(item, str) and "=" in item and item.split("=", 1)[0].strip(),
                      f"slurm.{key}: {item!r} is not KEY=VALUE")
        check(self.signal_delay_s >= 0, f"slurm.signal_delay_s = {self.signal_delay_s} must be >= 0")
        check(self.max_timeouts >= 0 and self.max_retries >= 0, "slurm.max_timeouts / max_retries must be >= 0")

    @property
    def tasks(self) -> int:
        """Tasks per node: one per GPU unless set."""
        return self.tasks_per_node or max(1, self.gpus_per_node)


@dataclass
class Config:
    """A whole run."""
    name: str = "ila"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


def accumulation_steps(cfg: Config, world: int) -> int:
    """Micro-steps per optimizer step: total_batch / (data.batch_size x world), refused unless exact."""
    per_step = cfg.data.batch_size * world
    if cfg.train.total_batch % per_step:
        raise ConfigError(f"train.total_batch = {cfg.train.total_batch} is not a multiple of data.batch_size x "
                          f"world size = {cfg.data.batch_size} x {world} = {per_step}; change one of them "
                          f"(e.g. --set train.total_batch={per_step * max(1, round(cfg.train.total_batch / per_step))})")
    return cfg.train.total_batch // per_step


# ---------------------------------------------------------------- strict loading

def _suggest(key: str, valid) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_ok(value, annotation) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def build_dataclass(cls, values: dict, where: str, prefix: str = ""):
    """Build ``cls`` from a dict, refusing unknown keys and wrong types; ``where`` names the source."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key '{prefix}{key}'{_suggest(key, fields)}; "
                              f"valid keys: {', '.join(fields)}")
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: '{prefix}{key}' must be a table [{prefix}{key}]")
            kwargs[key] = build_dataclass(annotation, value, where, f"{prefix}{key}.")
        elif not _type_ok(value, annotation):
            raise ConfigError(f"{where}: '{prefix}{key}' = {value!r} has type {type(value).__name__}, "
                              f"expected {_type_name(annotation)}")
        else:
            kwargs[key] = float(value) if annotation is float else value
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _type_name(annotation) -> str:
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def bundled_configs() -> dict[str, Path]:
    """The configs installed with the package (``ila_fast.configs``): name -> path."""
    from importlib import resources

    folder = resources.files("ila_fast.configs")
    return {p.name[:-5]: Path(str(p)) for p in sorted(folder.iterdir(), key=lambda p: p.name)
            if p.name.endswith(".toml")}


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A config file path, or the name of a bundled config (``k400_b16_8f``) -> the file's path.

    An existing file wins; a bare name (no folder, ``.toml`` optional) looks in the bundled configs.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = bundled_configs()
    name = path.name[:-5] if path.name.endswith(".toml") else path.name
    if path.parent == Path(".") and name in bundled:
        return bundled[name]
    if path.exists():
        raise ConfigError(f"{path}: is not a file; pass a config file or a bundled config name")
    raise ConfigError(f"{path}: no such config file, and no bundled config of that name"
                      f"{_suggest(name, bundled)}; bundled: {', '.join(bundled)} (`ila-fast configs` lists them)")


def load_config(path: str | Path, overrides: dict | None = None) -> Config:
    """Load a TOML run config (a path or a bundled config's name); ``overrides`` maps dotted keys
    (``model.frames``) to values."""
    path = resolve_config_path(path)
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    for dotted, value in (overrides or {}).items():
        _check_dotted_key(dotted)
        node = values
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    where = f"{path} (with --set {', '.join(overrides)})" if overrides else str(path)
    return build_dataclass(Config, values, where)


def _check_dotted_key(dotted: str) -> None:
    """Refuse a misspelled ``--set`` key with the nearest valid one, before it reaches the file's values."""
    cls, parts = Config, dotted.split(".")
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            known = ".".join(parts[:i])
            raise ConfigError(f"--set {dotted}: unknown key '{part}'{' in [' + known + ']' if known else ''}"
                              f"{_suggest(part, fields)}; valid keys: {', '.join(fields)}")
        annotation = typing.get_type_hints(cls)[part]
        if i < len(parts) - 1:
            if not dataclasses.is_dataclass(annotation):
                raise ConfigError(f"--set {dotted}: '{'.'.join(parts[:i + 1])}' is a value, not a section")
            cls = annotation
        elif dataclasses.is_dataclass(annotation):
            raise ConfigError(f"--set {dotted}: '{dotted}' is a section; set one of its keys")


def parse_overrides(items: list[str] | None) -> dict:
    """``["train.lr_mit=1e-4", "data.root=/x"]`` -> {dotted key: value}; values are TOML (bare words: strings)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. --set train.epochs=10")
        key, raw = (part.strip() for part in item.split("=", 1))
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word or path: a string
        _check_dotted_key(key)
        out[key] = value
    return out


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(config: Config) -> str:
    """The resolved config as TOML: every key, defaults included (unset optional keys as comments).

    ``load_config`` of this text gives back an equal Config.
    """
    lines = []
    for key, value in to_dict(config).items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in to_dict(config).items():
        if isinstance(value, dict):
            lines += ["", f"[{key}]"]
            for k, v in value.items():
                lines.append(f"# {k} = (unset)" if v is None else f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def config_hash(config: Config) -> str:
    """A short, stable digest of the resolved config (ranks compare it at start-up)."""
    import hashlib

    return hashlib.sha256(to_toml(config).encode()).hexdigest()[:16]
