"""The one builder of ``fs extract`` command lines printed in advice, errors and provenance.

Every printed command reproduces all the settings of the group it stands for (model, corpora,
Whisper input mode, seed of a random model, chunking, noise source / SNR / seed / environments
or the ``--condition`` steps of a condition chain,
frame layers), so pasting it makes exactly that group and never a slower or different one.
No torch here: the store, the classifiers and the CLI import it freely.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from featurestore.provenance import Provenance

NOISE_PLACEHOLDER = "NOISE_DIR"
SNR_PLACEHOLDER = "SNR_DB"


def extract_command(model: str, corpora: Sequence[str], *, whisper_input: str | None = None,
                    seed: int | None = None, chunk_seconds: float | None = None, noise: str | None = None,
                    snr_db: float | None = None, noise_seed: int | None = None, noise_env: Iterable[str] = (),
                    noisy: bool = False, conditions: Sequence[str] = (), condition_seed: int = 0,
                    frames: Iterable[int] = (), extra: Sequence[str] = ()) -> str:
    """``fs extract --model MODEL --corpus C ...`` with every given setting as its flag.

    A noisy group (``noise`` or ``snr_db`` given, or ``noisy``) gets ``--noise``, ``--snr`` and
    ``--noise-seed``; unknown values are shown as ``NOISE_DIR`` / ``SNR_DB``. A condition chain
    (``conditions``: its steps' canonical texts, noise sources included) gets one ``--condition`` per
    step and ``--noise-seed condition_seed`` (the chain's seed). ``extra`` flags (e.g.
    ``("--overwrite",)``) are appended.
    """
    args = ["fs", "extract", "--model", str(model)]
    for corpus in corpora:
        args += ["--corpus", str(corpus)]
    if whisper_input:
        args += ["--whisper-input", str(whisper_input)]
    if seed is not None:
        args += ["--seed", str(int(seed))]
    if chunk_seconds:
        args += ["--chunk-seconds", f"{float(chunk_seconds):g}"]
    if noisy or noise is not None or snr_db is not None:
        args += ["--noise", str(noise or NOISE_PLACEHOLDER),
                 "--snr", f"{float(snr_db):g}" if snr_db is not None else SNR_PLACEHOLDER,
                 "--noise-seed", str(int(noise_seed or 0))]
        envs = [str(e) for e in noise_env]
        if envs:
            args += ["--noise-env", ",".join(envs)]
    elif conditions:
        for text in conditions:
            args += ["--condition", str(text)]
        args += ["--noise-seed", str(int(condition_seed))]
    layers = sorted({int(k) for k in frames})
    if layers:
        args += ["--frames", ",".join(map(str, layers))]
    return shlex.join([*args, *extra])


READ_FLAGS = {"whisper_input": "--whisper-input", "seed": "--model-seed", "snr_db": "--snr",
              "noise_seed": "--noise-seed", "noise": "--noise"}  # store filters as the reading commands spell them


def filter_flags(filters: Mapping[str, Any]) -> str:
    """The given (non-None) store filters as flags of ``fs probe`` / ``fs finetune``: ``--whisper-input trim``."""
    return shlex.join([part for name, value in filters.items() if value is not None
                       for part in (READ_FLAGS.get(name, "--" + name.replace("_", "-")), f"{value}")])


def command_from_filters(model: str, corpora: Sequence[str], filters: Mapping[str, Any], *, noisy: bool = False,
                         frames: Iterable[int] = (), extra: Sequence[str] = ()) -> str:
    """The command for groups asked for by store filters (``FeatureStore.find``'s keywords:
    whisper_input, seed, snr_db, noise_seed, noise, noise_env)."""
    return extract_command(model, corpora, whisper_input=filters.get("whisper_input"), seed=filters.get("seed"),
                           noise=filters.get("noise"), snr_db=filters.get("snr_db"),
                           noise_seed=filters.get("noise_seed"), noise_env=filters.get("noise_env") or (),
                           noisy=noisy, frames=frames, extra=extra)


def command_for_group(prov: Provenance, corpus: str, *, frames: Iterable[int] | None = None,
                      whisper_input: str | None = None, extra: Sequence[str] = ()) -> str:
    """The command that makes the group whose provenance is ``prov`` (``StoreGroup.provenance``).

    ``frames``: the frame layers to ask for (default: the group's own); ``whisper_input``: another
    input mode than the group's (the same group in that mode).
    """
    condition = prov.condition
    noise = condition.noise if condition.is_lone_noise else None  # else: a chain, as its --condition steps
    texts = [] if condition.is_lone_noise else list(condition.texts)
    flags = model_flags(prov.model.as_dict())
    if whisper_input:
        flags["whisper_input"] = whisper_input
    return extract_command(prov.model.name or "MODEL", [corpus], **flags,
                           noise=noise.source if noise else None, snr_db=noise.snr_db if noise else None,
                           noise_seed=noise.seed if noise else None, noise_env=noise.environments if noise else (),
                           noisy=noise is not None, conditions=texts, condition_seed=condition.seed,
                           frames=prov.frame_layers if frames is None else frames, extra=extra)


def model_flags(model: Mapping[str, Any]) -> dict[str, Any]:
    """whisper_input, seed and chunk_seconds of a model's provenance (``EncoderInfo`` fields) that
    its command must repeat: the input mode of Whisper, the seed of a random model, and chunking
    other than Whisper's own 30-s windows."""
    settings = model.get("settings") or {}
    seed = settings.get("seed")
    chunk = settings.get("chunk_seconds")
    return {"whisper_input": settings.get("whisper_input"),
            "seed": seed if not model.get("pretrained", True) else None,
            "chunk_seconds": chunk if chunk and model.get("family") != "whisper" else None}
