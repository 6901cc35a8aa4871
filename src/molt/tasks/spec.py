"""What a task brings to the framework (:class:`TaskSpec`), and the registry of tasks.

Part of molt-av (Apache-2.0). A task is one package under ``molt/tasks/`` that ends its ``__init__.py`` with one
:func:`register_task` call, like timm's ``@register_model`` or PEFT's ``register_peft_method``. The trainer, the
evaluator, the CLI, ``molt ablate``, ``molt params``, ``molt bench`` and ``molt analyze`` read everything
task-specific from the spec; none of them names a task. ``docs/adding_a_task.md`` lists the pieces.

Contracts (every task follows them; ``ave`` is the reference):

* ``prepare(data, *, setting=None, image_size=None, workers=2, show_progress=True, out_dir=None, limit=None,
  force=False, **options) -> Path``: ``options`` are the task's own :attr:`TaskSpec.prepare_options`; ``data``
  is either a prepared directory (returned as is) or a dataset root in the real
  on-disk layout, prepared on first use (into ``out_dir``, by default a sub-directory of the root) and reused
  afterwards; ``force`` or ``limit`` prepares it again.
* ``dataset(prepared_dir, split)``: a ``torch.utils.data.Dataset`` with attributes ``sample_rate``, ``image_size``,
  ``num_segments``, a method ``task_options() -> dict`` (JSON-serialisable keyword arguments of the head that the
  data decides: class names, vocabularies, ...) and ``item_without_media(index)``. Items are dicts with ``frames``
  uint8 ``(T, 3, S, S)``, ``audio`` float32 ``(T, R)``, ``video_id`` and the task's targets, collatable by the
  default collate function.
* ``synthesize(out_dir, num_videos=..., seed=..., *, image_size=64, workers=2, setting=None)``: writes procedural
  clips in the task's real layout (settings-free tasks take no ``setting``).
* ``monitor``: the validation metric (a key of the head's ``compute_metrics``) that picks the best checkpoint.

What the paper reports for a task (:class:`PaperFigures`) and what ``molt bench`` needs to benchmark it
(:class:`BenchHooks`) are records of their own, referenced from the spec (``spec.paper``, ``spec.bench``).
Callers open a task's prepared data with :meth:`TaskSpec.open_prepared`, which checks the setting.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from .base import HeadConfig, TaskHead

__all__ = ["TaskSpec", "TaskParts", "TaskOption", "PaperFigures", "BenchHooks", "register_task",
           "register_official_heads", "get_task", "task_names", "registered_tasks"]

_TASKS: dict[str, "TaskSpec"] = {}


@dataclass(frozen=True)
class TaskOption:
    """An input only one task's ``prepare`` or ``predict`` takes (``molt prepare avqa --duplicates first``,
    ``molt predict avqa --question "..."``).

    Attributes:
        name: keyword argument of the task's function (the flag is ``--name`` with ``-`` for ``_``).
        help: one line for ``--help``.
        choices: the accepted values (``None``: any text).
        default: the value when the flag is not given (``None``: the function's own default).
        required: the task refuses to run without it.
        switch: a flag without a value (``--overlay-video``); the function receives ``True`` when it is given.
    """

    name: str
    help: str
    choices: tuple[str, ...] | None = None
    default: str | None = None
    required: bool = False
    switch: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class PaperFigures:
    """What the paper reports for a task, printed beside our own numbers (``molt params``, ``molt bench``).

    Attributes:
        task_options: what the real dataset decides for the head (class counts, vocabularies), for counting
            parameters at paper scale without the data (``molt params``).
        parameters: backbone preset -> (trainable %, total M) the paper reports for MoLT on this task.
        efficiency: ``(backbone preset, method) -> (trainable %, total M, training memory GB or None)`` of the
            paper's efficiency columns for this task, printed beside ``molt bench efficiency``.
    """

    task_options: Mapping[str, Any] = field(default_factory=dict)
    parameters: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    efficiency: Mapping[tuple[str, str], tuple[float, float, float | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchHooks:
    """What ``molt bench efficiency`` needs to benchmark a task without its data.

    Attributes:
        targets: ``(batch_clips, num_segments, task_options, generator) -> dict`` random targets (and any other
            non-media input, e.g. questions) of one training batch.
        segments: segments (frames and 1-s audio rows) per clip of a benchmark batch.
    """

    targets: Callable[..., dict[str, Any]]
    segments: int = 10


@dataclass(frozen=True)
class TaskParts:
    """The code of a task: the objects that need torch, media libraries or plotting, imported on first use.

    Attributes:
        reader: the class that reads the real release's annotation files (its on-disk layout).
        prepare: prepared directory for a dataset root or prepared directory (see the module docstring).
        dataset: the ``Dataset`` class over a prepared directory.
        synthesize: the procedural generator writing clips in the real layout.
        head: the :class:`~molt.tasks.base.TaskHead` subclass (head + loss + metrics).
        figures: the function drawing the task's pictures of results (called by the head's ``save_figures``).
        predictor: ``(model, task_options, video, *, out_dir, **predict_options) -> dict`` predictions for one user
            video (``molt predict``), JSON-serialisable, its pictures written into ``out_dir`` and listed under
            ``"files"``; ``None`` when the task has no predictor yet.
        bench: what ``molt bench efficiency`` needs (:class:`BenchHooks`), or ``None`` when the task is not
            benchmarked.
    """

    reader: type
    prepare: Callable[..., Path]
    dataset: Callable[..., Any]
    synthesize: Callable[..., Any]
    head: type[TaskHead]
    figures: Callable[..., Any]
    predictor: Callable[..., dict[str, Any]] | None = None
    bench: BenchHooks | None = None


@cache
def _load_parts(load: Callable[[], TaskParts]) -> TaskParts:
    parts = load()
    if not isinstance(parts, TaskParts):
        raise TypeError(f"{load.__module__}.{load.__qualname__} must return a TaskParts, got {type(parts).__name__}")
    return parts


@dataclass(frozen=True)
class TaskSpec:
    """Everything task-specific: what the command line and the configs need (names, settings, presets, options;
    plain data, importable without torch, so that ``molt --help`` is instant) and a function that imports the
    task's code (:class:`TaskParts`) on first use. The parts read as attributes of the spec (``spec.head``,
    ``spec.dataset``, ...).

    Attributes:
        name: the ``TASK`` of every ``molt VERB TASK`` command and the ``task:`` of a config.
        description: one line for ``--help``.
        dataset_name: the real dataset's name in messages (``AVE``, ``AVSBench``, ...).
        parts: a function without arguments returning the task's :class:`TaskParts`, called once, on first use of
            a part (the task package's ``_parts``, which imports its modules).
        monitor: validation metric that selects the best checkpoint; ``monitor_mode`` ``max`` or ``min``.
        metric_columns: ``(column title, metric key)`` of the paper's tables, in their order (ablation tables).
        presets: backbone preset (``tiny``, ``paper``, ``shared``) -> name of the task's MoLT config preset.
        paper: what the paper reports for this task (:class:`PaperFigures`).
        settings: task variants (``s4``, ``ms3`` for AVSBench); ``default_setting`` when none is given.
        test_variants: test files of a task whose release has several, ``name -> split`` (the first is the
            default), chosen with ``molt eval TASK --test-json NAME``.
        splits: the split names of the dataset (``molt eval --split`` takes any of them).
        prepare_options: keyword options of the task's ``prepare`` beyond the common ones (``molt prepare`` flags).
        predict_options: keyword options of the task's ``predictor`` beyond the video (``molt predict`` flags).
    """

    name: str
    description: str
    dataset_name: str
    parts: Callable[[], TaskParts]
    monitor: str
    metric_columns: tuple[tuple[str, str], ...]
    presets: Mapping[str, str]
    paper: PaperFigures
    monitor_mode: str = "max"
    settings: tuple[str, ...] = ()
    default_setting: str | None = None
    test_variants: Mapping[str, str] = field(default_factory=dict)
    splits: tuple[str, ...] = ("train", "val", "test")
    prepare_options: tuple[TaskOption, ...] = ()
    predict_options: tuple[TaskOption, ...] = ()

    @property
    def reader(self) -> type:
        return _load_parts(self.parts).reader

    @property
    def prepare(self) -> Callable[..., Path]:
        return _load_parts(self.parts).prepare

    @property
    def dataset(self) -> Callable[..., Any]:
        return _load_parts(self.parts).dataset

    @property
    def synthesize(self) -> Callable[..., Any]:
        return _load_parts(self.parts).synthesize

    @property
    def head(self) -> type[TaskHead]:
        return _load_parts(self.parts).head

    def official_head(self, method: str, *, shared: bool) -> type[TaskHead]:
        """The peer ``method``'s own head for this task (one backbone reading both modalities when ``shared``).

        Raises:
            ValueError: the task has no official head for ``method``, naming those it has.
        """
        _load_parts(self.parts)     # a task registers its official heads when its parts are loaded
        heads = _OFFICIAL_HEADS.get(self.name, {})
        if method not in heads:
            known = ", ".join(sorted(heads)) or "none"
            raise ValueError(f"{self.name} has no official head for {method} (official heads: {known}); "
                             f"use method_config.head: common")
        return heads[method]["shared" if shared else "separate"]

    @property
    def figures(self) -> Callable[..., Any]:
        return _load_parts(self.parts).figures

    @property
    def predictor(self) -> Callable[..., dict[str, Any]] | None:
        return _load_parts(self.parts).predictor

    @property
    def bench(self) -> BenchHooks | None:
        return _load_parts(self.parts).bench

    def __post_init__(self) -> None:
        if self.monitor not in {key for _, key in self.metric_columns}:
            raise ValueError(f"task {self.name!r}: the monitor metric {self.monitor!r} is not one of its metric "
                             f"columns {[key for _, key in self.metric_columns]}")
        if self.monitor_mode not in ("max", "min"):
            raise ValueError(f"task {self.name!r}: monitor_mode must be 'max' or 'min', got {self.monitor_mode!r}")
        if self.default_setting is not None and self.default_setting not in self.settings:
            raise ValueError(f"task {self.name!r}: default setting {self.default_setting!r} is not one of "
                             f"{self.settings}")
        if not set(self.test_variants.values()) <= set(self.splits):
            raise ValueError(f"task {self.name!r}: test variants {dict(self.test_variants)} name splits outside "
                             f"{self.splits}")
        for option in (*self.prepare_options, *self.predict_options):
            if option.choices is not None and option.default is not None and option.default not in option.choices:
                raise ValueError(f"task {self.name!r}: option {option.name!r} defaults to {option.default!r}, which "
                                 f"is not one of {option.choices}")
        if "tiny" not in self.presets:
            raise ValueError(f"task {self.name!r} needs a 'tiny' preset (the CPU default of molt train)")

    def check_setting(self, setting: str | None) -> str | None:
        """``setting`` if this task knows it (``None`` -> the default), else a ``ValueError`` naming the choices."""
        if setting is None:
            return self.default_setting
        if setting not in self.settings:
            choices = ", ".join(self.settings) if self.settings else "none (this task has no settings)"
            raise ValueError(f"task {self.name!r} has no setting {setting!r}; choices: {choices}")
        return setting

    def open_prepared(self, data: str | os.PathLike, setting: str | None = None, **options: Any) -> Path:
        """The prepared directory of ``data`` (a prepared directory, or a dataset root prepared on first use) for
        ``setting`` (checked, ``None`` -> the default); ``options`` go to :attr:`prepare` (``show_progress``,
        ``image_size``, ``force``, the task's :attr:`prepare_options`, ...)."""
        if not Path(data).exists():
            raise FileNotFoundError(f"{data} does not exist: give --data the {self.dataset_name} release as you "
                                    f"downloaded it (its annotation files and videos) or a prepared directory")
        return self.prepare(data, setting=self.check_setting(setting), **options)

    def open_split(self, prepared: str | os.PathLike, split: str):
        """The task's dataset over one split of a prepared directory, refusing an empty split with the fix."""
        dataset = self.dataset(Path(prepared), split)
        if len(dataset) == 0:
            raise ValueError(f"{prepared}: the {split!r} split of this {self.dataset_name} data set is empty; check "
                             f"the split files of the data set (or see skipped.tsv there for clips that could not "
                             f"be decoded)")
        return dataset

    def test_split(self, variant: str | None) -> str:
        """The split of test file ``variant`` (``None``: ``test``), a ``ValueError`` naming the choices otherwise."""
        if variant is None:
            return "test"
        if variant not in self.test_variants:
            choices = ", ".join(self.test_variants) or "none (its release has one test file)"
            raise ValueError(f"task {self.name!r} has no test file {variant!r}; choices: {choices}")
        return self.test_variants[variant]

    def split_title(self, split: str) -> str:
        """``split``, and which test file it is when the task has several (``test (corrected test file)``)."""
        variant = next((name for name, value in self.test_variants.items() if value == split), None)
        return f"{split} ({variant} test file)" if variant else split

    def default_preset(self, backbone: str | None = None) -> str:
        """The task's MoLT preset for a backbone preset (``tiny`` and ``tiny-shared`` -> the tiny preset)."""
        key = "tiny" if backbone is None or backbone.startswith("tiny") else backbone
        if key not in self.presets:
            raise ValueError(f"task {self.name!r} has no preset for backbone {backbone!r} (presets: "
                             f"{', '.join(f'{b}: {p}' for b, p in self.presets.items())}); pass --config")
        return self.presets[key]

    def head_option_names(self) -> list[str]:
        """The options of the head's config class (the ``head:`` section of a config)."""
        return [f.name for f in dataclasses.fields(self.head.config_class)]

    def head_argument_names(self) -> list[str]:
        """What the data and the model decide for the head (its keyword arguments besides the config)."""
        parameters = inspect.signature(self.head.__init__).parameters
        return [name for name in parameters if name not in ("self", "config")]

    def build_head(self, config: HeadConfig | None = None, **options: Any) -> TaskHead:
        """The head built from its config and keyword options: config fields (``hidden_dim``, ...), applied on top of
        ``config``, and the head's arguments (``dim``, ``num_classes``, ...); unknown options are refused."""
        fields = set(self.head_option_names())
        accepted = self.head_argument_names() + sorted(fields)
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)} for the {self.name} head; accepted: "
                             f"{', '.join(accepted)}")
        changes = {key: value for key, value in options.items() if key in fields}
        config = config or self.head.config_class()
        if changes:
            config = self.head.config_class.from_dict({**config.to_dict(only_set=True), **changes},
                                                      source=f"{self.name} head")
        return self.head(config, **{key: value for key, value in options.items() if key not in fields})


#: task name -> method name -> {"shared": head class, "separate": head class} (:func:`register_official_heads`)
_OFFICIAL_HEADS: dict[str, dict[str, Mapping[str, type[TaskHead]]]] = {}


def register_official_heads(task: str, heads: Mapping[str, Mapping[str, type[TaskHead]]]) -> None:
    """Register the peers' own heads for ``task`` (``head: official`` of an in-block method's config), called by
    the task's ``_parts`` when its code is loaded: method name -> ``{"shared": head class, "separate": head class}``
    (one backbone reading both modalities, or two); each class takes ``(config, *, visual_dim, audio_dim,
    **task_options)`` and reads the method's pooled final tokens. :meth:`TaskSpec.official_head` looks them up."""
    for method, by_setting in heads.items():
        if set(by_setting) != {"shared", "separate"}:
            raise ValueError(f"official heads of {task}/{method}: expected the keys shared and separate, got "
                             f"{sorted(by_setting)}")
    _OFFICIAL_HEADS.setdefault(task, {}).update({method: dict(by_setting) for method, by_setting in heads.items()})


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add ``spec`` to the registry; a second task of the same name is refused with a ``ValueError``."""
    if spec.name in _TASKS:
        raise ValueError(f"a task named {spec.name!r} is already registered ({_TASKS[spec.name].description}); "
                         f"pick another name")
    _TASKS[spec.name] = spec
    return spec


def task_names() -> list[str]:
    """Registered task names, sorted."""
    return sorted(_TASKS)


def registered_tasks() -> list[TaskSpec]:
    """Every registered spec, sorted by name."""
    return [_TASKS[name] for name in task_names()]


def get_task(name: str) -> TaskSpec:
    """The registry entry of ``name``; a ``ValueError`` listing the known tasks otherwise."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}: expected one of {', '.join(task_names())}")
    return _TASKS[name]
