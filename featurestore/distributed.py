"""Extraction on a Ray cluster: actors compute blocks, the driver alone writes the store.

Each actor loads the encoder once, by name and load options (never a pickled model), and turns
whole plan batches into :class:`~featurestore.extract.Block` s (decode, resample, condition, embed,
pool). The driver keeps a bounded window of batches in flight, commits the blocks in plan order
with the same :func:`~featurestore.extract.commit_block` as a local run, so a Ray store holds the
same bytes as a local one and resumes the same way. A worker that dies is restarted by Ray and
its batches retried (``max_restarts`` / ``max_task_retries``); a worker gone for good hands its
batches to the others. Install with ``pip install "fs-ser[ray]"``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from featurestore.conditions import ConditionChain
from featurestore.encoders.base import Encoder, EncoderInfo
from featurestore.extract import Block, ExtractError, ExtractOptions, PlanEntry, compute_block, decode_row

RAY_EXTRA = 'pip install "fs-ser[ray]"  (or: pip install "ray[default]")'


class DistributedError(ExtractError):
    """The cluster cannot run the extraction (unreachable, no resources, a node without the model)."""


@dataclass(frozen=True)
class EncoderSpec:
    """How every worker loads the encoder: the arguments of :func:`~featurestore.encoders.load_encoder`."""

    name: str
    seed: int = 0
    whisper_input: str = "full"
    chunk_seconds: float | None = None
    device: str = "cpu"

    def load(self) -> Encoder:
        from featurestore.encoders import load_encoder

        return load_encoder(self.name, device=self.device, seed=self.seed, whisper_input=self.whisper_input,
                            chunk_seconds=self.chunk_seconds)


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run: cluster address, workers (actors) and their resources."""

    address: str | None = None  # None: a Ray runtime on this machine; "auto" or HOST:PORT: a running cluster
    workers: int = 2
    gpus_per_worker: float = 0.0  # e.g. 0.5: two workers share a GPU
    threads_per_worker: int = 1  # CPU threads (and Ray CPUs) of each worker
    in_flight: int = 2  # batches queued per worker (keeps it busy while the driver writes)
    max_restarts: int = 2  # restarts of a dead worker, each retrying its batches
    startup_timeout_s: float = 300.0  # for every worker to be placed and to load the model


@dataclass
class RunStats:
    """What the engine did: batches, worker compute time, retries (for benchmarks and reports)."""

    units: int = 0
    compute_seconds: float = 0.0  # sum over batches of the time spent in compute on a worker
    wall_seconds: float = 0.0  # first submission to last block received
    rerouted: int = 0  # batches handed to another worker after theirs died for good
    nodes: set[str] = field(default_factory=set)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise DistributedError(f"--backend ray needs Ray, which is not installed here: {RAY_EXTRA}") from None
    return ray


def connect(address: str | None, *, num_cpus: int | None = None) -> bool:
    """Connect this process to Ray: an already initialised runtime, ``address``, or a new local one.

    A given HOST:PORT is checked first (a TCP connect, 5 s), so a wrong address fails fast. Returns
    True when this call started or joined the runtime (the caller shuts it down), False when one was
    already initialised. Raises DistributedError naming the address and the fix.
    """
    ray = _import_ray()
    if address not in (None, "auto", "local"):
        host, _, port = address.removeprefix("ray://").rpartition(":")
        if not host or not port.isdigit():
            raise DistributedError(f"--address {address!r}: give auto or HOST:PORT of a Ray head node "
                                   "(`ray start --head` prints it)")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as exc:
            raise DistributedError(f"no Ray cluster reachable at {address} ({exc.strerror or exc}): start one "
                                   f"there with `ray start --head --port {port}`, check the host, port and firewall, "
                                   "or leave out --address to run on this machine") from None
    if ray.is_initialized():
        return False
    with _keep_sigterm_handler():
        try:
            ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        except ConnectionError as exc:
            raise DistributedError(f"cannot join the Ray cluster at {address}: {exc}. Start one with "
                                   "`ray start --head`, or leave out --address to run on this machine") from None
    return True


@contextlib.contextmanager
def _keep_sigterm_handler() -> Iterator[None]:
    """Keep this process's SIGTERM handler across ``ray.init``.

    Ray replaces it with ``sys.exit`` and its core worker installs a C++ failure handler that
    aborts the process (exit 134) on SIGTERM; fs's handler (:func:`featurestore.errors.raise_on_sigterm`)
    commits the finished rows and exits 143, as a local run does. Only the main thread can set it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)  # sigaction again: also replaces the C++ handler


class _Worker:
    """One Ray actor: loads the encoder once, computes blocks of whole plan batches."""

    def __init__(self, spec: EncoderSpec, threads: int) -> None:
        import torch

        self.node = f"{socket.gethostname()} ({_node_ip()})"
        torch.set_num_threads(max(1, threads))
        self.spec = spec
        self.error = ""
        self.encoder: Encoder | None = None
        self.chain: ConditionChain | None = None
        try:
            self.encoder = spec.load()
        except Exception as exc:  # reported by hello(): the driver names the node
            self.error = f"{type(exc).__name__}: {exc}"

    def hello(self) -> dict[str, Any]:
        """Node, process and the loaded encoder's info (or why it could not be loaded)."""
        return {"node": self.node, "pid": os.getpid(), "error": self.error,
                "info": self.encoder.info if self.encoder is not None else None}

    def run(self, index: int, start: int, rows: list[dict[str, Any]], chain: ConditionChain,
            frame_layers: tuple[int, ...], on_bad_audio: str) -> tuple[Block, float, str]:
        """The block of plan batch ``index`` (group rows ``start:start+len(rows)``), compute seconds, node."""
        began = time.perf_counter()
        encoder = self.encoder
        if encoder is None:
            raise DistributedError(f"worker on node {self.node} has no encoder: {self.error}")
        local = self._chain(chain, encoder.info.sample_rate)
        by_row = {start + j: row for j, row in enumerate(rows)}
        items = [decode_row(i, row, encoder.info.sample_rate, local) for i, row in by_row.items()]
        block = compute_block(index, start, items, by_row, encoder, frame_layers=frame_layers,
                              on_bad_audio=on_bad_audio, conditioned=bool(local.steps))
        return block, time.perf_counter() - began, self.node

    def _chain(self, chain: ConditionChain, sample_rate: int) -> ConditionChain:
        """The driver's chain, rebuilt here from its spec (its key recomputed from this node's files, so
        other noise recordings or impulse responses are refused) and prepared once per worker."""
        if self.chain is None or self.chain.key != chain.key:
            local = ConditionChain.from_dict(chain.to_dict())
            if local.key != chain.key:
                raise DistributedError(f"worker on node {self.node}: the condition's files (noise recordings, impulse "
                                       f"responses) differ from the driver's (condition {local.key}, driver "
                                       f"{chain.key}); give every node the same files (a shared filesystem)")
            local.prepare(sample_rate)
            self.chain = local
        return self.chain


def _node_ip() -> str:
    try:
        import ray

        return str(ray.util.get_node_ip_address())
    except Exception:
        return "?"


class RayRunner:
    """A :class:`~featurestore.extract.Runner` on Ray: use as a context manager around
    :func:`~featurestore.extract.run_extraction` (workers start and load the model on enter)."""

    def __init__(self, spec: EncoderSpec, options: RayOptions = RayOptions()):
        if options.workers < 1:
            raise DistributedError("--workers must be at least 1 with --backend ray")
        self.spec, self.options = spec, options
        self.actors: list[Any] = []
        self.nodes: list[str] = []
        self.info: EncoderInfo | None = None
        self.device = spec.device
        self.stats = RunStats()
        self._started = False

    def __enter__(self) -> RayRunner:
        opts = self.options
        self._started = connect(opts.address, num_cpus=max(os.cpu_count() or 1, opts.workers * opts.threads_per_worker))
        ray = _import_ray()
        try:
            actor = ray.remote(_Worker).options(num_cpus=opts.threads_per_worker, num_gpus=opts.gpus_per_worker,
                                                max_restarts=opts.max_restarts, max_task_retries=opts.max_restarts)
            self.actors = [actor.remote(self.spec, opts.threads_per_worker) for _ in range(opts.workers)]
            self._check_workers(ray)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.device = f"{self.spec.device} (ray, {opts.workers} workers)"
        return self

    def _check_workers(self, ray: Any) -> None:
        try:
            hellos = ray.get([a.hello.remote() for a in self.actors], timeout=self.options.startup_timeout_s)
        except ray.exceptions.GetTimeoutError:
            resources = ray.available_resources()
            raise DistributedError(
                f"{self.options.workers} worker(s) with {self.options.threads_per_worker} CPU(s) and "
                f"{self.options.gpus_per_worker:g} GPU(s) each could not start within "
                f"{self.options.startup_timeout_s:.0f} s (cluster has free: CPU {resources.get('CPU', 0):g}, "
                f"GPU {resources.get('GPU', 0):g}); lower --workers or --gpus-per-worker, or add nodes") from None
        except ray.exceptions.RayError as exc:
            raise DistributedError(f"a Ray worker failed to start ({type(exc).__name__}: {exc}); see the Ray logs "
                                   "(/tmp/ray/session_latest/logs) of its node") from None
        for hello in hellos:
            if hello["error"]:
                raise DistributedError(
                    f"worker on node {hello['node']} cannot load encoder {self.spec.name!r}: {hello['error']}. "
                    "Every node needs the weights: put the model folder at the same path on every node (or on a "
                    "shared filesystem), or fill each node's Hugging Face cache and set HF_HUB_OFFLINE=1")
        self.nodes = [h["node"] for h in hellos]
        first = hellos[0]["info"]
        for hello in hellos[1:]:
            if hello["info"].weights_hash != first.weights_hash:
                raise DistributedError(
                    f"worker on node {hello['node']} loaded other weights for {self.spec.name!r} than node "
                    f"{hellos[0]['node']} (hash {hello['info'].weights_hash[:12]} vs {first.weights_hash[:12]}); "
                    "give every node the same model files")
        self.info = first

    def __exit__(self, *exc: object) -> None:
        ray = _import_ray()
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already gone
                pass
        self.actors = []
        if self._started:
            ray.shutdown()
            self._started = False

    def blocks(self, rows: list[dict[str, Any]], plan: list[PlanEntry], chain: ConditionChain,
               options: ExtractOptions) -> Iterator[Block]:
        """Blocks of ``plan`` in plan order, computed by the workers with at most ``in_flight`` each queued."""
        if not self.actors or self.info is None:
            raise DistributedError("RayRunner.blocks() outside `with RayRunner(...)`: the workers are not started")
        ray = _import_ray()
        frame_layers = tuple(options.frame_layers)
        alive = list(range(len(self.actors)))
        load = dict.fromkeys(alive, 0)
        window = self.options.in_flight * len(self.actors)
        in_flight: dict[Any, tuple[int, int]] = {}  # future -> (position in plan, worker)
        ready: dict[int, Block] = {}
        submitted = yielded = 0
        began = time.perf_counter()

        def submit(position: int) -> None:
            worker = min(alive, key=lambda w: load[w])
            index, start, stop = plan[position]
            future = self.actors[worker].run.remote(index, start, rows[start:stop], chain, frame_layers,
                                                    options.on_bad_audio)
            in_flight[future] = (position, worker)
            load[worker] += 1

        try:
            while yielded < len(plan):
                while submitted < len(plan) and submitted < yielded + window:
                    submit(submitted)
                    submitted += 1
                done, _ = ray.wait(list(in_flight), num_returns=1)
                for future in done:
                    position, worker = in_flight.pop(future)
                    load[worker] -= 1
                    try:
                        block, seconds, node = ray.get(future)
                    except ray.exceptions.RayTaskError as exc:
                        cause = getattr(exc, "cause", None)
                        if isinstance(cause, ExtractError):
                            raise cause from None
                        raise DistributedError(f"batch {plan[position][0]} failed on worker {worker} "
                                               f"({self.nodes[worker]}): {cause or exc}") from None
                    except ray.exceptions.RayActorError:
                        if worker in alive:
                            alive.remove(worker)
                        if not alive:
                            raise DistributedError(
                                f"every Ray worker died (last: {self.nodes[worker]}); the finished batches are "
                                "committed: re-run the same command to resume") from None
                        self.stats.rerouted += 1
                        submit(position)
                        continue
                    ready[position] = block
                    self.stats.units += 1
                    self.stats.compute_seconds += seconds
                    self.stats.nodes.add(node)
                while yielded in ready:
                    yield ready.pop(yielded)
                    yielded += 1
        finally:
            for future in in_flight:
                ray.cancel(future)
            self.stats.wall_seconds += time.perf_counter() - began
