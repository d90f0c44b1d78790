"""Where and how training runs: the tf.distribute strategy, the precision, XLA and kernels.

`plan_devices(config.training)` turns the `auto` settings into choices for this machine:

    distribute  auto: a TF_CONFIG cluster of several tasks -> multi_worker; else more than
                one GPU -> mirrored; else none. mirrored uses every GPU (every logical CPU
                device when there is no GPU); multi_worker reads the cluster from TF_CONFIG;
                tpu finds the TPU through TPUClusterResolver (TPU_NAME or the local TPU).
    precision   auto: mixed_float16 on a GPU of compute capability 7.0 or newer;
                mixed_bfloat16 on a TPU and on a CPU with bfloat16 units (AMX or AVX-512
                BF16), where it trains about twice (AMX) or 1.3-1.5 times (AVX-512 BF16) as
                fast as float32 with the same loss (scripts/bench_train.py,
                docs/scale.md); float32 elsewhere.
    jit_compile auto: off on a CPU (XLA's recurrent training steps measured 5-35% slower
                there); Keras's own choice on a GPU (cuDNN layers opt out); on for a TPU.

The mixed-precision policy is global in Keras, so `DevicePlan.policy()` sets it only for
the duration of a run and restores the previous one. Only the chief worker writes files:
the others train into a private temporary directory that is removed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import keras
import tensorflow as tf

from textgen.config import TrainingConfig
from textgen.errors import TextgenError, UsageError
from textgen.models import cells
from textgen.models.fused_rnn import FusedRecurrent, fused_kernel_applies


@dataclass
class DevicePlan:
    strategy: tf.distribute.Strategy
    distribute: str  # none | mirrored | multi_worker | tpu
    device: str  # cpu | gpu | tpu: what the replicas run on
    precision: str  # float32 | mixed_float16 | mixed_bfloat16
    jit_compile: bool | str  # as handed to model.compile
    fused_kernels: bool  # layers of cells with a fused twin train through textgen.models.fused_rnn (CPU only)
    chief: bool = True  # this process writes the run directory
    worker: int = 0
    workers: int = 1
    notes: list[str] = field(default_factory=list)  # why the auto settings chose what they did

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    @contextlib.contextmanager
    def policy(self):
        """The mixed-precision policy of this plan, for the duration of the block only."""
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(self.precision)
        try:
            yield
        finally:
            keras.mixed_precision.set_global_policy(previous)

    def describe(self, batch_size: int | None = None) -> str:
        """One line of choices (with each replica's share of `batch_size`), then the notes."""
        where = {"none": f"one {self.device.upper()}", "mirrored": f"{self.replicas} {self.device.upper()} replicas",
                 "multi_worker": f"{self.workers} workers, {self.replicas} replicas in all (this is worker "
                                 f"{self.worker}{', the chief' if self.chief else ''})",
                 "tpu": f"{self.replicas} TPU cores"}[self.distribute]
        jit = {True: "on", False: "off", "auto": "Keras's choice"}[self.jit_compile]
        text = f"devices: {where}; precision {self.precision}; XLA {jit}"
        if batch_size and self.replicas > 1:
            text += f"; {batch_size // self.replicas} windows per replica and step"
        return text + "".join(f"\n  {note}" for note in self.notes)


def plan_devices(training: TrainingConfig) -> DevicePlan:
    """Resolve `training.distribute`, `precision`, `jit_compile` and `fused_kernels` for this machine.

    Call it before any other TensorFlow work in the process: a multi-worker strategy must
    configure the runtime before it starts.
    """
    notes: list[str] = []
    name = _resolve_strategy_name(training.distribute, notes)
    strategy, chief, worker, workers = _make_strategy(name, training)
    device = "tpu" if name == "tpu" else ("gpu" if tf.config.list_physical_devices("GPU") else "cpu")
    precision = _resolve_precision(training.precision, device, notes)
    jit = training.jit_compile
    if jit == "auto":
        jit = {"cpu": False, "gpu": "auto", "tpu": True}[device]
    fused = training.fused_kernels and device == "cpu"
    return DevicePlan(strategy, name, device, precision, jit, fused, chief, worker, workers, notes)


# --------------------------------------------------------------------------- strategies


def cluster_from_env() -> dict | None:
    """The TF_CONFIG cluster description, or None when it is unset."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        spec = json.loads(raw)
        cluster, task = spec["cluster"], spec.get("task", {})
        tasks = {kind: list(addresses) for kind, addresses in cluster.items()}
        return {"cluster": tasks, "type": task.get("type", "worker"), "index": int(task.get("index", 0))}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UsageError("TF_CONFIG is not a JSON object with a cluster and a task, e.g. "
                         '{"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", '
                         '"index": 0}}; see docs/scale.md') from None


def _resolve_strategy_name(requested: str, notes: list[str]) -> str:
    if requested != "auto":
        return requested
    cluster = cluster_from_env()
    if cluster and sum(len(cluster["cluster"].get(k, [])) for k in ("chief", "worker")) > 1:
        notes.append("distribute auto: TF_CONFIG describes a cluster, so multi_worker")
        return "multi_worker"
    if len(tf.config.list_physical_devices("GPU")) > 1:
        notes.append("distribute auto: several GPUs, so mirrored")
        return "mirrored"
    return "none"


def _make_strategy(name: str, training: TrainingConfig) -> tuple[tf.distribute.Strategy, bool, int, int]:
    """(strategy, chief, worker index, worker count)."""
    if name == "none":
        return tf.distribute.get_strategy(), True, 0, 1
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices]), True, 0, 1
    if name == "tpu":
        return _tpu_strategy(), True, 0, 1
    cluster = cluster_from_env()
    if cluster is None:
        raise UsageError("training.distribute=multi_worker needs TF_CONFIG describing the cluster and this "
                         "task; see docs/scale.md")
    if training.max_minutes is not None:
        raise UsageError("training.max_minutes cannot stop several workers at the same step; set it to null "
                         "under multi_worker and stop the job from outside (it resumes from its last checkpoint)")
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError, tf.errors.OpError) as exc:
        raise TextgenError(f"the multi-worker cluster in TF_CONFIG could not be joined "
                           f"({str(exc).splitlines()[0][:200]}); check the addresses and that every worker runs") from None
    tasks = cluster["cluster"]
    kinds = [k for k in ("chief", "worker") if tasks.get(k)]
    order = [(k, i) for k in kinds for i in range(len(tasks[k]))]
    me = (cluster["type"], cluster["index"])
    if me not in order:
        raise UsageError(f"TF_CONFIG task {me[0]} {me[1]} is not in its cluster; textgen runs chief and worker tasks")
    return strategy, order.index(me) == 0, order.index(me), len(order)


def _tpu_strategy() -> tf.distribute.Strategy:
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME", ""))
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as exc:
        raise UsageError(f"training.distribute=tpu found no TPU ({str(exc).splitlines()[0][:200]}); set TPU_NAME "
                         "or run on a TPU VM") from None
    return tf.distribute.TPUStrategy(resolver)


# --------------------------------------------------------------------------- precision


CPUINFO = Path("/proc/cpuinfo")  # Linux's; macOS and Windows have no /proc


def _cpuinfo(key: str) -> str | None:
    """The first `key` line's value in Linux's /proc/cpuinfo; None elsewhere or when absent."""
    try:
        with open(CPUINFO, encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> set[str]:
    """The feature flags of this CPU (x86 Linux lists them in /proc/cpuinfo).

    Empty elsewhere (macOS, Windows, ARM Linux), so precision `auto` picks float32 there:
    the bfloat16 speed-ups were measured on x86 CPUs with AMX or AVX-512 BF16 only.
    """
    return set((_cpuinfo("flags") or "").split())


def cpu_model() -> str:
    """The CPU's model name, for benchmark tables: from /proc/cpuinfo on Linux, sysctl on
    macOS, the platform module elsewhere (Windows' processor identifier)."""
    return _cpuinfo("model name") or _sysctl_brand() or platform.processor().strip() or "an unknown CPU"


def _sysctl_brand() -> str | None:
    """macOS's CPU brand string ("Apple M2", "Intel(R) Core(TM) i7-..."); None elsewhere."""
    if sys.platform != "darwin":
        return None
    try:
        done = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                              timeout=2, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def cpu_has_amx_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in AMX tiles."""
    return "amx_bf16" in cpu_flags()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 in hardware at all (AMX or AVX-512 BF16)."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def _resolve_precision(requested: str, device: str, notes: list[str]) -> str:
    if requested == "mixed_bfloat16" and device == "cpu" and not cpu_has_native_bf16():
        notes.append("precision mixed_bfloat16: this CPU has no bfloat16 units (AMX or AVX-512 BF16), so every "
                     "bfloat16 product is emulated and training runs slower than in float32; "
                     "training.precision=auto picks float32 here")
    if requested != "auto":
        return requested
    if device == "gpu":
        details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
        if tuple(details.get("compute_capability", (0, 0))) >= (7, 0):
            return "mixed_float16"
        notes.append("precision auto: this GPU predates float16 tensor cores, so float32")
        return "float32"
    if device == "tpu" or cpu_has_native_bf16():
        if device == "cpu":
            units = "AMX" if cpu_has_amx_bf16() else "AVX-512 BF16"
            notes.append(f"precision auto: this CPU has bfloat16 units ({units}), so mixed_bfloat16 "
                         "(matrix products in bfloat16, gates and loss in float32)")
        return "mixed_bfloat16"
    if device == "cpu":
        notes.append("precision auto: this CPU has no bfloat16 units (AMX or AVX-512 BF16), so float32")
    return "float32"


def check_resumable_precision(saved: str | None, now: str) -> None:
    """mixed_float16 keeps a loss scale among the optimizer's variables; it cannot come or go on resume."""
    if saved and (saved == "mixed_float16") != (now == "mixed_float16"):
        raise UsageError(f"--resume: the run trained with precision {saved} and would continue with {now}; "
                         f"mixed_float16's loss scale is part of the training state, so set "
                         f"training.precision={saved}")


# --------------------------------------------------------------------------- kernels


def kernel_report(model: keras.Model, plan: DevicePlan) -> list[str]:
    """Lines saying which recurrent kernel each layer can use on a GPU, and on this machine.

    Keras picks cuDNN only for some cells' layers, with options each cell kind names
    (textgen.models.cells); anything else runs the generic step-by-step kernel, several
    times slower on a GPU.
    """
    lines, fast, slow = [], [], []
    for layer in _recurrent_layers(model):
        reason = _why_not_cudnn(layer)
        (slow if reason else fast).append(layer.name)
        if reason:
            lines.append(f"warning: {layer.name} cannot use cuDNN ({reason}): on a GPU it runs the generic kernel, "
                         "several times slower")
    if not fast and not slow:
        return lines
    summary = "cuDNN" if not slow else ("generic" if not fast else f"cuDNN for {', '.join(fast)}, generic for "
                                                                   f"{', '.join(slow)}")
    here = {"gpu": "cuDNN where allowed", "tpu": "XLA"}.get(plan.device)
    if here is None:
        fused = [layer.name for layer in _recurrent_layers(model) if isinstance(layer, FusedRecurrent)
                 and fused_kernel_applies(layer, None, training=False)]
        here = ("textgen's fused kernel" if len(fused) == len(fast) + len(slow) else
                f"textgen's fused kernel for {', '.join(fused)}, Keras's for the others" if fused else
                "Keras's step-by-step kernel")
    lines.insert(0, f"recurrent kernels: {summary} on a GPU; here: {here}")
    return lines


def _recurrent_layers(model):
    """Every recurrent layer, also inside Bidirectional wrappers and nested models."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.Bidirectional):
            yield from (layer.forward_layer, layer.backward_layer)
        elif isinstance(layer, keras.Model):
            yield from _recurrent_layers(layer)
        elif isinstance(layer, keras.layers.RNN):
            yield layer


def _why_not_cudnn(layer) -> str | None:
    kind = cells.for_cell(layer.cell)
    problems = kind.cudnn_problems(layer) if kind is not None else None
    if problems is None:
        fast = " or ".join(kind.name for kind in cells.kinds() if kind.cudnn)
        return f"{type(layer.cell).__name__} has no cuDNN kernel; use model.cell={fast}"
    return ", ".join(problems) or None


def private_dir() -> Path:
    """Where a non-chief worker writes what the chief alone keeps."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix="textgen-worker-"))
