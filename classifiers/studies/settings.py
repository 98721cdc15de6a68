"""The one settings table: every study setting (name, type, choices or range, default, help) declared once.

The run configurations (:class:`~classifiers.studies.protocols.ProbeConfig`,
:class:`~classifiers.studies.finetune.FinetuneConfig`), the study-file validation
(:func:`~classifiers.studies.sweep.parse_study`, did-you-mean included) and the click options of
``fs probe`` / ``fs finetune`` / ``fs sweep`` (:func:`options`) all read :data:`SETTINGS`, so a
constraint is written once and every door refuses a bad value with the same message::

    classifier 'logrge' is not valid (did you mean 'logreg'?); use logreg, svm, ridge, lgbm, mlp

(the name is the one the user wrote: ``classifiers`` in a study file, ``--classifier`` on the command
line). Layer choices are parsed by :class:`~featurestore.layers.LayerChoice` (its own one message).
Choices that come from a registry (classifiers, normalisations) are read when first needed, so
importing this module (the CLI does) loads no learner.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, TypeVar

from featurestore.errors import FsError
from featurestore.layers import HELP as LAYER_HELP
from featurestore.layers import LayerChoice, LayerError

F = TypeVar("F", bound=Callable[..., Any])
METHODS: tuple[str, ...] = ("head", "cnn-lstm", "lora")
CONDITIONS: tuple[str, ...] = ("clean", "target", "source", "both")  # which side is mixed with the study's noise
STATS: tuple[str, ...] = ("mean", "mean+std")
SHOT_WEIGHT_WORDS: tuple[str, ...] = ("none", "auto", "balanced")  # besides a positive number
WHISPER_INPUTS: tuple[str, ...] = ("full", "trim")
SELECT_RULES: tuple[str, ...] = ("lto", "source", "entropy", "snd", "iwcv")  # classifiers.studies.selection rules
# Named training recipes of `fs finetune` (head, cnn-lstm): ``paper`` is the study's fixed one (Adam); ``tuned`` trains
# up to ``epochs`` and chooses epochs and learning rate on the source's speaker-independent dev split (the grids in
# classifiers/learners/tuning.py: RECIPE_GRIDS for the CNN-LSTM, GRIDS["mlp"] for the head); lr None: chosen.
RECIPES: dict[str, dict[str, Any]] = {"paper": {"epochs": 5, "batch_size": 16, "lr": 1e-4},
                                      "tuned": {"epochs": 20, "batch_size": 16, "lr": None}}


class SettingError(FsError):
    """A setting value outside its declared type, choices or range."""


def _classifiers() -> tuple[str, ...]:
    from classifiers.learners.probes import classifier_names

    return tuple(classifier_names())


def _norms() -> tuple[str, ...]:
    from classifiers.learners.normalise import MODES

    return tuple(MODES)


def _protocols() -> tuple[str, ...]:
    from classifiers.studies.protocol_registry import protocol_names

    return protocol_names()


def suggest(word: Any, valid: tuple[str, ...] | list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``valid`` to ``word``, else empty."""
    close = difflib.get_close_matches(str(word), [str(v) for v in valid], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and type(value).__name__ != "bool_"


@dataclass(frozen=True)
class Setting:
    """One setting. ``kind``: ``choice`` | ``int`` | ``float`` | ``bool`` | ``layer`` | ``mapping`` |
    ``modules`` | ``weight`` (``none``, ``auto`` or a positive number); ``choices``: a tuple or a function giving
    one (a registry); ``minimum`` / ``maximum``
    (``*_open``: excluded) bound numbers; ``optional``: None is a value (unset); ``study_key``: its key in
    a study file; ``many``: that key takes one value or a list (the study is their product); ``help``:
    one line for ``--help`` and errors."""

    name: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None
    minimum: float | None = None
    maximum: float | None = None
    min_open: bool = False
    max_open: bool = False
    optional: bool = False
    study_key: str | None = None
    many: bool = False

    @property
    def flag(self) -> str:
        """The command-line flag: ``--dev-fraction``."""
        return "--" + self.name.replace("_", "-")

    def valid_choices(self) -> tuple[str, ...]:
        """The choices (a registry's read now)."""
        return tuple(self.choices()) if callable(self.choices) else tuple(self.choices or ())

    def valid_text(self) -> str:
        """What a valid value is, in words (the end of every refusal)."""
        if self.kind == "choice":
            return ", ".join(self.valid_choices())
        if self.kind == "layer":
            return LAYER_HELP
        if self.kind in ("int", "float"):
            what = "a whole number" if self.kind == "int" else "a number"
            low = "" if self.minimum is None else f"{'>' if self.min_open else '>='} {self.minimum:g}"
            high = "" if self.maximum is None else f"{'<' if self.max_open else '<='} {self.maximum:g}"
            return " ".join(x for x in (what, low, "and" if low and high else "", high) if x)
        if self.kind == "bool":
            return "true or false"
        if self.kind == "mapping":
            return "a mapping of parameter: value, e.g. {C: 0.1}" + (" (or a list of them)" if self.many else "")
        if self.kind == "weight":
            return ("none, auto (chosen by cross-validation on the shots), balanced (shots and source weigh the same "
                    "in total) or a positive number")
        if self.kind == "names":
            return "names, e.g. emodb,ravdess"
        return "module names, e.g. [q_proj, v_proj]"

    def refusal(self, value: Any, label: str | None = None) -> SettingError:
        """The one message for a bad ``value`` (``label``: the name as the user wrote it)."""
        hint = suggest(value, self.valid_choices()) if self.kind == "choice" else ""
        return SettingError(f"{label or self.name} {value!r} is not valid{hint}; use {self.valid_text()}")

    def check(self, value: Any, label: str | None = None) -> Any:
        """``value`` in canonical form (ints as int, a layer choice as its value, params as plain JSON), or
        :class:`SettingError` (:class:`~featurestore.layers.LayerError` for a layer) saying what is valid."""
        if value is None and self.optional:
            return None
        if self.kind == "layer":
            return LayerChoice.parse(value).value
        if self.kind == "choice":
            if value not in self.valid_choices():
                raise self.refusal(value, label)
            return value
        if self.kind == "bool":
            if not isinstance(value, bool) and type(value).__name__ != "bool_":
                raise self.refusal(value, label)
            return bool(value)
        if self.kind in ("int", "float"):
            ok = _is_int(value) if self.kind == "int" else isinstance(value, Real) and not isinstance(value, bool)
            if not ok or not self._in_range(float(value)):
                raise self.refusal(value, label)
            return int(value) if self.kind == "int" else float(value)
        if self.kind == "weight":
            return self._weight(value, label)
        if self.kind == "mapping":
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise self.refusal(value, label)
            try:
                return json.loads(json.dumps(value, sort_keys=True))
            except (TypeError, ValueError):
                raise SettingError(f"{label or self.name} {value!r} is not valid: give plain values (numbers, "
                                   "strings, lists)") from None
        if self.kind == "names" and isinstance(value, str):
            value = value.split(",")
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise self.refusal(value, label)
        names = tuple(sorted({str(m).strip() for m in value if str(m).strip()}))
        return names or None

    def _weight(self, value: Any, label: str | None) -> str | float:
        """``none`` / ``auto`` / ``balanced`` (any case) or a finite number > 0 (a numeric text too) as a float."""
        if isinstance(value, str) and value.strip().lower() in SHOT_WEIGHT_WORDS:
            return value.strip().lower()
        try:
            number = float(value) if isinstance(value, (str, Real)) and not isinstance(value, bool) else None
        except ValueError:
            number = None
        if number is None or not 0 < number < float("inf"):
            raise self.refusal(value, label)
        return number

    def _in_range(self, x: float) -> bool:
        low = self.minimum is None or (x > self.minimum if self.min_open else x >= self.minimum)
        high = self.maximum is None or (x < self.maximum if self.max_open else x <= self.maximum)
        return low and high


SETTINGS: tuple[Setting, ...] = (
    Setting("whisper_input", "choice", None, "Whisper: full (padded to 30 s, as trained) or trim (only the real "
            "frames) [default: full when extracting; when reading, the mode stored if only one is].", WHISPER_INPUTS,
            optional=True, study_key="whisper_input"),
    Setting("model_seed", "int", None, "Randomly initialised models: the seed they were extracted with.",
            minimum=0, optional=True, study_key="model_seed"),
    Setting("layer", "layer", "last", f"Layer choice: {LAYER_HELP}.", study_key="layers", many=True),
    Setting("classifier", "choice", "logreg", "Probe: logistic regression, linear SVM, ridge, LightGBM, or the "
            "study's MLP head.", _classifiers, study_key="classifiers", many=True),
    Setting("classifier_params", "mapping", {}, "Classifier parameters NAME: VALUE, e.g. {C: 0.1}; a study file "
            "may list several (one configuration each).", study_key="classifier_params", many=True),
    Setting("tune", "bool", False, "Search the classifier's hyper-parameters (the grid declared in "
            "classifiers/learners/tuning.py) on leave-speakers-out folds of the source only; the choice and every "
            "candidate's fold UAR are recorded.", study_key="tune"),
    Setting("norm", "choice", "none", "Feature normalisation; corpus, speaker and coral (corpus, then the "
            "source mapped to the target's covariance) are transductive (the result says so).", _norms,
            study_key="norms", many=True),
    Setting("stat", "choice", "mean", "Pooled statistic: mean over frames, or mean and std side by side.", STATS,
            study_key="stats", many=True),
    Setting("seeds", "int", 5, "Runs with seeds 0..N-1; UAR is reported with its interval.", minimum=1,
            study_key="seeds"),
    Setting("shots", "int", 0, "Target utterances per class added to training (0 = none).", minimum=0,
            study_key="shots", many=True),
    Setting("shot_weight", "weight", "none", "Few-shot: how much each target shot counts against a source "
            "utterance: none (plain union), auto (chosen by cross-validation on the shots, shots-only included), "
            "balanced (n_source / n_shots: shots and source weigh the same in total) or a number; ignored without "
            "few-shot shots.", study_key="shot_weights", many=True),
    Setting("shot_augment", "bool", False, "Few-shot: EasyAdapt feature augmentation (each feature gets a shared "
            "copy and a source-only or target-only copy), so the shots can overrule the source where they disagree; "
            "fs's recommended few-shot learner with --shot-weight balanced.", study_key="shot_augment"),
    Setting("shots_speaker_disjoint", "bool", False, "Test only on target speakers who gave no shot.",
            study_key="shots_speaker_disjoint"),
    Setting("dev_fraction", "float", 0.2, "Share of training utterances (whole speakers) held out as a dev split "
            "(to pick --layer best, or the best epoch).", minimum=0, maximum=1, min_open=True, max_open=True,
            study_key="dev_fraction"),
    Setting("protocol", "choice", None, "Study protocol [default: what source, target and shots make: "
            "within-corpus, few-shot or cross-language].", _protocols, optional=True, study_key="protocols",
            many=True),
    Setting("method", "choice", None, "Fine-tuning: head (the study's MLP head on pooled features), cnn-lstm (on "
            "stored log-mel frames) or lora (LoRA on the layers above --from-layer).", METHODS, optional=True,
            study_key="method"),
    Setting("from_layer", "int", None, "lora: the layer whose frames are stored (`fs extract --frames K`); "
            "layers K+1.. are adapted.", minimum=0, optional=True, study_key="from_layer"),
    Setting("recipe", "choice", None, "head and cnn-lstm: a named training recipe instead of --epochs, --batch-size "
            "and --lr: paper (the study's: Adam 1e-4, 5 epochs, batch 16) or tuned (epochs and learning rate chosen "
            "on the source's speaker-independent dev split; the choice is recorded).", tuple(RECIPES), optional=True,
            study_key="recipe"),
    Setting("epochs", "int", 5, "Training epochs.", minimum=1, study_key="epochs"),
    Setting("batch_size", "int", 16, "Utterances per batch.", minimum=1, study_key="batch_size"),
    Setting("lr", "float", 1e-4, "Adam learning rate.", minimum=0, min_open=True, study_key="lr"),
    Setting("rank", "int", 8, "lora: adapter rank.", minimum=1, optional=True, study_key="rank"),
    Setting("alpha", "float", 16.0, "lora: adapter scaling alpha.", minimum=0, min_open=True, optional=True,
            study_key="alpha"),
    Setting("target_modules", "modules", None, "lora: linear modules that get adapters, e.g. q_proj,v_proj "
            "[default: the family's].", optional=True, study_key="target_modules"),
    Setting("head_hidden", "int", 256, "head and lora: width of the head's hidden layer.", minimum=1, optional=True,
            study_key="head_hidden"),
    Setting("max_frames", "int", None, "cnn-lstm: keep the first N frames of longer utterances [default: all].",
            minimum=8, optional=True, study_key="max_frames"),
    Setting("condition", "choice", "clean", "Which side is mixed with the study's noise.", CONDITIONS,
            study_key="conditions", many=True),
    Setting("select", "choice", None, "Choose layer, normalisation and classifier from --select-grid without the "
            "target's labels: lto (mean UAR over the pairs among the other corpora) or source (a speaker-"
            "independent dev split of the source); label-free scores on the target's features: entropy (prediction "
            "entropy), snd (soft neighbourhood density), iwcv (importance-weighted source dev UAR).",
            SELECT_RULES, optional=True, study_key="select"),
    Setting("select_on", "names", None, "lto: the corpora to select on [default: every other corpus extracted "
            "with the model], e.g. emodb,ravdess,emovo.", optional=True, study_key="select_on"),
    Setting("select_grid", "mapping", {}, "Candidates of --select, e.g. {layers: [2, 3, 4], norms: [none, corpus], "
            "classifiers: [logreg]} [default: every layer x none, corpus, speaker x --classifier].",
            study_key="select_grid"),
)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
BY_STUDY_KEY: dict[str, Setting] = {s.study_key: s for s in SETTINGS if s.study_key}


def setting(name: str) -> Setting:
    """The setting called ``name`` (a KeyError names the known ones)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no setting {name!r}; known: {', '.join(BY_NAME)}") from None


def check(name: str, value: Any, label: str | None = None) -> Any:
    """:meth:`Setting.check` of setting ``name``."""
    return setting(name).check(value, label)


def check_all(values: dict[str, Any], error: type[FsError]) -> dict[str, Any]:
    """Every value of ``values`` whose key is a setting, checked (canonical form); a refusal is raised as
    ``error`` (the door's own type) with the table's message."""
    out = dict(values)
    for name, value in values.items():
        if name in BY_NAME:
            try:
                out[name] = BY_NAME[name].check(value)
            except (SettingError, LayerError) as exc:
                raise error(str(exc)) from None
    return out


# --------------------------------------------------------------------------- click options
def _click_type(s: Setting) -> Any:
    import click

    class SettingType(click.ParamType):
        """A click parameter checked by the table (same message as a config or a study file)."""

        name = s.name

        def convert(self, value: Any, param: Any, ctx: Any) -> Any:
            if not isinstance(value, str):
                return value
            text = value.strip()
            try:
                if s.kind == "int":
                    return s.check(int(text) if text.lstrip("-").isdigit() else text, param.opts[0] if param else None)
                if s.kind == "float":
                    try:
                        number: Any = float(text)
                    except ValueError:
                        number = text
                    return s.check(number, param.opts[0] if param else None)
                return s.check(text, param.opts[0] if param else None)
            except (SettingError, LayerError) as exc:
                self.fail(str(exc), param, ctx)

        def get_metavar(self, param: Any, ctx: Any = None) -> str | None:
            if s.kind == "choice":  # a registry's choices are read here, when help is shown, not on import
                return "[" + "|".join(s.valid_choices()) + "]"
            return s.name.upper() if s.kind != "layer" else "LAYER"

        def shell_complete(self, ctx: Any, param: Any, incomplete: str) -> list[Any]:
            from click.shell_completion import CompletionItem

            return [CompletionItem(c) for c in s.valid_choices() if c.startswith(incomplete)]

    return SettingType()


def option_help(s: Setting) -> str:
    """``--help`` text of a setting (its choices show as the option's metavar, read when help is shown)."""
    return s.help


def click_option(name: str, **overrides: Any) -> Callable[[F], F]:
    """A ``click.option`` for setting ``name`` built from the table (flag, type, default, help); ``overrides``
    replace any of them (e.g. ``default=None`` for a filter, ``help`` for a command's own wording)."""
    import click

    s = setting(name)
    if s.kind == "bool":
        kwargs: dict[str, Any] = {"is_flag": True, "default": s.default, "help": s.help}
    else:
        kwargs = {"type": _click_type(s), "default": s.default, "help": option_help(s),
                  "show_default": s.default not in (None, {}, ())}
    kwargs.update(overrides)
    return click.option(kwargs.pop("flag", s.flag), **kwargs)


def options(*names: str, **overrides: dict[str, Any]) -> Callable[[F], F]:
    """A decorator adding the click options of settings ``names`` in that order (``overrides``: per
    name, keyword arguments for :func:`click_option`): ``@settings.options("classifier", "layer")``."""
    def decorate(func: F) -> F:
        for name in reversed(names):
            func = click_option(name, **overrides.get(name, {}))(func)
        return func

    return decorate


def study_keys() -> Iterator[str]:
    """The settings' keys in a study file, in table order."""
    return (s.study_key for s in SETTINGS if s.study_key)
