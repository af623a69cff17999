"""Time and memory of prunefw's pruning paths against raw ``torch.nn.utils.prune``.

Run from the repository root::

    python benchmarks/bench_prune.py                          # every case, small size
    python benchmarks/bench_prune.py --sizes small,medium --json results.json
    python benchmarks/bench_prune.py --smoke                  # CI: small size, checks masks
    python benchmarks/bench_prune.py --case torch_l1 --size medium --json   # one case

Methodology
-----------
*One driver, one fresh subprocess per measurement.* The driver runs
``sys.executable bench_prune.py --case NAME --size SIZE --json`` for every selected
case, size and repeat, one at a time, and reads the child's result (one JSON line on
stdout). Pruning mutates the model and ``ru_maxrss`` is a process-lifetime peak, so a
fresh process is the only clean way to measure either. A child that exits non-zero
(exception, signal, timeout) is reported as FAILED with the error's last line, and the
driver carries on.

*Model.* ``nn.Sequential`` of ``layers`` square fp32 ``Linear(width, width,
bias=False)``: ``small`` 4 x 1024 (4.2M weights, CI), ``medium`` 3 x 4096 (50.3M),
``large`` 24 x 4096 (402.7M). No bias, so "weights" is exactly what every case prunes
(all contexts prune ``weight`` only). Layers are made with ``nn.utils.skip_init``
(``torch.empty``) and filled in place with ``normal_`` from a seeded
``torch.Generator`` under ``no_grad``: no temporaries, so the process peak before the
timed call is the model itself.

*Time.* ``time.perf_counter`` around the pruning call only. Setup outside the timed
region: imports, building the model, the ``(module, "weight")`` list and the criterion
objects. Inside it: for prunefw cases the whole ``Context(...).prune()`` expression
(constructing the context selects the targets; it is part of what a user calls).
``--repeat N`` runs N fresh processes per case; the table shows the fastest run, the
JSON keeps every run. Compare ratios, not seconds: ratios against ``torch_l1`` and
``torch_floor`` come from the same invocation on the same machine. Each child records the
1-minute load average before its call; the table footer shows the range (a load above
the CPU count means other processes competed for the cores: with torch's default of one
thread per core, an op waits for its slowest thread, so contention can inflate a time
several-fold). ``--threads N`` sets ``torch.set_num_threads(N)`` in every case.

*Memory.* After the model is built and the case set up, the child reads its current
RSS from ``/proc/self/statm`` (``rss_model``); after the call it reads
``getrusage(RUSAGE_SELF).ru_maxrss``. "peak above model" is ``ru_maxrss - rss_model``
(the transient cost of pruning, including what the pruned model keeps: torch's
reparametrization adds a ``weight_mask`` buffer and a recomputed ``weight`` tensor,
2 x the weight bytes in fp32). "retained" is the RSS after the call, a
``gc.collect()`` and glibc's ``malloc_trim(0)``, minus ``rss_model``: what the pruned
model keeps (about 2 x the weights) plus anything leaked. "peak / weights" divides the
peak by the fp32 weight bytes. At the small size, allocator and interpreter noise
(a few MiB) dominates both; read memory at medium or large. The child
also reports ``ru_maxrss`` before the call; if that already exceeded ``rss_model`` by
more than 64 MiB, the peak is a lower bound and the JSON says so
(``peak_is_lower_bound``).

*Correctness.* Every pruning case counts its pruned entries (``weight_mask == 0``)
and must hit the exact count: ``round(0.5 n)`` for the 50% cases, ``round(0.25 n)``
twice for ``percentile(0.25, 0.75)``, ``ceil(n / 2)`` for the floor method,
``round(0.3 n_i) + round(0.2 (n_i - round(0.3 n_i)))`` per layer for the layer cases.
It fingerprints its masks (blake2b of ``mask.to(torch.uint8)`` per tensor). The driver
requires ``prunefw_magnitude == torch_l1``, ``*_streaming ==`` the default strategy
for magnitude and percentile, and ``layer_prunefw == layer_raw``. Magnitude cases
also check the order (largest pruned ``|w|`` <= smallest kept ``|w|``).

fp32 normal weights are *not* tie-free at these sizes: there are only 2**23 floats in
[0.5, 1), where a quarter of 50M ``|w|`` fall, so the magnitude boundary value often
occurs several times. ``L1Unstructured`` (``topk``) then picks an unspecified subset of
the tied entries, prunefw the lowest flat indices. So ``prunefw_magnitude`` vs
``torch_l1`` compares exactly first and, failing that, up to tie order: same boundary
value, same number of pruned entries at it, identical masks everywhere else ("== up
to N tied"). Every other comparison is exact.

Any mask-check failure makes the driver exit 1 after printing the tables; with
``--smoke`` a FAILED or SKIPPED case does too.

*Memory guard.* Children ask the kernel to kill them first on OOM
(``oom_score_adj=1000``). The driver polls ``MemAvailable`` every 0.1 s and kills its
child if it drops below ``--mem-reserve-gib``; before a case it skips it (SKIPPED) if
the peak/weights ratio measured at a smaller size in the same invocation predicts it
would not fit.

*Imports.* ``import_torch`` times ``import torch`` in a fresh interpreter,
``import_prunefw`` times ``import prunefw; prunefw.criterion("magnitude",
amount=0.5)`` (which builds the plugin manager and loads the entry points). The two
alternate, after one discarded warm-up of each, ``max(3, --repeat)`` times (``--smoke``:
once each, no warm-up; it only checks that they work); the difference of the fastest
runs is prunefw's import overhead (target < 0.3 s, reported, never gated).

Profile one case in a child with ``--case NAME --size SIZE --profile cprofile`` (or
``torch``, for ``torch.profiler`` with memory); the report goes to stderr.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

SCRIPT = Path(__file__).resolve()
REPO_ROOT = SCRIPT.parent.parent
GIB = 1024**3
SEED = 0
#: (layers, width) of each model size.
SIZES: dict[str, tuple[int, int]] = {
    "small": (4, 1024),
    "medium": (3, 4096),
    "large": (24, 4096),
}
SLACK_BYTES = 64 * 1024**2
IMPORT_TARGET_S = 0.3

Prepared = Callable[[], object]


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One benchmark case.

    Attributes:
        name: The case name (``--case``).
        kind: ``"prune"`` (masks are checked), ``"baseline"`` (no masks) or
            ``"import"`` (fresh-interpreter import timing, no model).
        description: One line for ``--list``.
        expected: Exact number of pruned entries, given the tensor sizes.
        same_as: A case whose masks must be identical.
        tie_aware: Magnitude case: check the order, and compare with ``same_as``
            up to the order among entries tied at the boundary value.
    """

    name: str
    kind: str
    description: str
    expected: Callable[[Sequence[int]], int] | None = None
    same_as: str | None = None
    tie_aware: bool = False


def _half(sizes: Sequence[int]) -> int:
    return round(0.5 * sum(sizes))


def _every_other(sizes: Sequence[int]) -> int:
    return (sum(sizes) + 1) // 2


def _percentile_band(sizes: Sequence[int]) -> int:
    n = sum(sizes)
    low = round(0.25 * n)
    return low + min(round((1.0 - 0.75) * n), n - low)


def _layer_counts(sizes: Sequence[int]) -> int:
    total = 0
    for n in sizes:
        first = round(0.3 * n)
        total += first + round(0.2 * (n - first))
    return total


CASE_LIST: tuple[Case, ...] = (
    Case(
        "torch_l1",
        "prune",
        "prune.global_unstructured(L1Unstructured, amount=0.5)",
        _half,
        tie_aware=True,
    ),
    Case(
        "torch_floor",
        "prune",
        "global_unstructured with a trivial method (every other entry)",
        _every_other,
    ),
    Case("read_pass", "baseline", "one read pass: sum(float(p.detach().sum()) for p in params)"),
    Case("cat_kthvalue", "baseline", "torch.cat of |w| + kthvalue(round(0.5 n))"),
    Case(
        "prunefw_magnitude",
        "prune",
        "GlobalPruningContext([MagnitudeCriterion(amount=0.5)], strategy='global_unstructured')",
        _half,
        same_as="torch_l1",
        tie_aware=True,
    ),
    Case(
        "prunefw_percentile",
        "prune",
        "GlobalPruningContext([PercentileCriterion(0.25, 0.75)], strategy='global_unstructured')",
        _percentile_band,
    ),
    Case(
        "prunefw_random",
        "prune",
        "GlobalPruningContext([RandomCriterion(0.5, seed=0)], strategy='global_unstructured')",
        _half,
    ),
    Case(
        "prunefw_magnitude_auto",
        "prune",
        "the default call: GlobalPruningContext([MagnitudeCriterion(amount=0.5)]) "
        "(strategy='auto'; the table notes which it chose)",
        _half,
        same_as="prunefw_magnitude",
        tie_aware=True,
    ),
    Case(
        "prunefw_magnitude_streaming",
        "prune",
        "prunefw_magnitude, strategy='streaming'",
        _half,
        same_as="prunefw_magnitude",
        tie_aware=True,
    ),
    Case(
        "prunefw_percentile_streaming",
        "prune",
        "prunefw_percentile, strategy='streaming'",
        _percentile_band,
        same_as="prunefw_percentile",
    ),
    Case("prunefw_random_streaming", "prune", "prunefw_random, strategy='streaming'", _half),
    Case(
        "prunefw_magnitude_streaming_bool",
        "prune",
        "prunefw_magnitude_streaming with mask_dtype=torch.bool",
        _half,
        same_as="prunefw_magnitude",
        tie_aware=True,
    ),
    Case(
        "layer_prunefw",
        "prune",
        "LayerPruningContext: [Magnitude(amount=0.3), Random(0.2, seed=0)] per Linear",
        _layer_counts,
        same_as="layer_raw",
    ),
    Case(
        "layer_raw",
        "prune",
        "the same masks with raw torch + prune.custom_from_mask",
        _layer_counts,
    ),
    Case("import_torch", "import", "fresh interpreter: import torch"),
    Case(
        "import_prunefw",
        "import",
        "fresh interpreter: import prunefw; prunefw.criterion('magnitude', amount=0.5)",
    ),
)
CASES: dict[str, Case] = {case.name: case for case in CASE_LIST}


def _linears(model: nn.Module) -> list[nn.Linear]:
    from torch import nn

    return [module for module in model.modules() if isinstance(module, nn.Linear)]


def _prepare_torch_l1(model: nn.Module) -> Prepared:
    from torch.nn.utils import prune

    pairs = [(layer, "weight") for layer in _linears(model)]
    return lambda: prune.global_unstructured(pairs, prune.L1Unstructured, amount=0.5)


def _prepare_torch_floor(model: nn.Module) -> Prepared:
    import torch
    from torch.nn.utils import prune

    class EveryOther(prune.BasePruningMethod):
        """Prune every other entry of the vector it is given: torch's dispatch cost only."""

        PRUNING_TYPE = "unstructured"

        def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
            mask = torch.ones_like(default_mask)
            mask.view(-1)[::2] = 0
            return mask

    pairs = [(layer, "weight") for layer in _linears(model)]
    return lambda: prune.global_unstructured(pairs, EveryOther)


def _prepare_read_pass(model: nn.Module) -> Prepared:
    params = [layer.weight for layer in _linears(model)]

    def run() -> float:
        return sum(float(p.detach().sum()) for p in params)

    return run


def _prepare_cat_kthvalue(model: nn.Module) -> Prepared:
    import torch

    params = [layer.weight for layer in _linears(model)]

    def run() -> float:
        with torch.no_grad():
            flat = torch.cat([p.detach().abs().reshape(-1) for p in params])
            return float(torch.kthvalue(flat, round(0.5 * flat.numel())).values)

    return run


def _global_prunefw(
    kind: str, strategy: str | None, bool_masks: bool = False
) -> Callable[[nn.Module], Prepared]:
    def prepare(model: nn.Module) -> Prepared:
        import torch

        import prunefw

        crit: prunefw.PruningCriterion
        if kind == "magnitude":
            crit = prunefw.MagnitudeCriterion(amount=0.5)
        elif kind == "percentile":
            crit = prunefw.PercentileCriterion(0.25, 0.75)
        else:
            crit = prunefw.RandomCriterion(0.5, seed=SEED)
        options: dict[str, Any] = {} if strategy is None else {"strategy": strategy}
        if bool_masks:
            options["mask_dtype"] = torch.bool

        def run() -> str | None:
            ctx = prunefw.GlobalPruningContext(model, [crit], **options)
            ctx.prune()
            return getattr(ctx, "strategy_used", None)

        return run

    return prepare


def _prepare_layer_prunefw(model: nn.Module) -> Prepared:
    import prunefw

    # One list shared by all layers: one RandomCriterion, whose generator advances
    # from layer to layer (layer_raw does the same with one generator).
    criteria = [prunefw.MagnitudeCriterion(amount=0.3), prunefw.RandomCriterion(0.2, seed=SEED)]
    layers = _linears(model)
    return lambda: prunefw.LayerPruningContext(
        {layer: criteria for layer in layers}, model=model
    ).prune()


def _smallest_k(flat: torch.Tensor, k: int) -> torch.Tensor:
    """The k smallest entries of a 1-D tensor, ties to the lower index (prunefw's rule)."""
    import torch

    if k == 0:
        return torch.zeros_like(flat, dtype=torch.bool)
    if k == flat.numel():
        return torch.ones_like(flat, dtype=torch.bool)
    boundary = torch.kthvalue(flat, k).values
    selected = flat < boundary
    missing = k - int(selected.sum())
    if missing:
        selected[(flat == boundary).nonzero().squeeze(1)[:missing]] = True
    return selected


def _prepare_layer_raw(model: nn.Module) -> Prepared:
    """Raw torch producing layer_prunefw's masks; mask computation is timed too."""
    import torch
    from torch.nn.utils import prune

    layers = _linears(model)

    def run() -> None:
        generator = torch.Generator()
        generator.manual_seed(SEED)
        for layer in layers:
            weight = layer.weight.detach()
            n = weight.numel()
            keep = ~_smallest_k(weight.abs().reshape(-1), round(0.3 * n))
            prune.custom_from_mask(layer, "weight", keep.view_as(weight))
            alive = layer.weight_mask.reshape(-1) == 1
            remaining = int(alive.sum())
            draws = torch.rand(remaining, generator=generator)
            keep = torch.ones(n, dtype=torch.bool)
            keep[alive] = ~_smallest_k(draws, round(0.2 * remaining))
            prune.custom_from_mask(layer, "weight", keep.view_as(weight))

    return run


PREPARE: dict[str, Callable[[nn.Module], Prepared]] = {
    "torch_l1": _prepare_torch_l1,
    "torch_floor": _prepare_torch_floor,
    "read_pass": _prepare_read_pass,
    "cat_kthvalue": _prepare_cat_kthvalue,
    "prunefw_magnitude": _global_prunefw("magnitude", "global_unstructured"),
    "prunefw_percentile": _global_prunefw("percentile", "global_unstructured"),
    "prunefw_random": _global_prunefw("random", "global_unstructured"),
    "prunefw_magnitude_auto": _global_prunefw("magnitude", None),
    "prunefw_magnitude_streaming": _global_prunefw("magnitude", "streaming"),
    "prunefw_percentile_streaming": _global_prunefw("percentile", "streaming"),
    "prunefw_random_streaming": _global_prunefw("random", "streaming"),
    "prunefw_magnitude_streaming_bool": _global_prunefw("magnitude", "streaming", True),
    "layer_prunefw": _prepare_layer_prunefw,
    "layer_raw": _prepare_layer_raw,
}


# --------------------------------------------------------------------------- child


def _current_rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _malloc_trim() -> None:
    """Return glibc's cached free heap memory to the OS, so RSS shows what is referenced."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _prefer_oom_kill() -> None:
    try:
        with open("/proc/self/oom_score_adj", "w") as adj:
            adj.write("1000")
    except OSError:
        pass


def build_model(size: str) -> nn.Sequential:
    """The benchmark model, filled in place from a seeded generator (no temporaries)."""
    import torch
    from torch import nn

    layers, width = SIZES[size]
    generator = torch.Generator()
    generator.manual_seed(SEED)
    model = nn.Sequential(
        *(nn.utils.skip_init(nn.Linear, width, width, bias=False) for _ in range(layers))
    )
    with torch.no_grad():
        for layer in _linears(model):
            layer.weight.normal_(generator=generator)
    return model


def _digest(parts: Sequence[str]) -> str:
    return hashlib.blake2b("".join(parts).encode(), digest_size=8).hexdigest()


def _tensor_digest(mask: torch.Tensor) -> str:
    import torch

    data = mask.detach().to(torch.uint8).contiguous().numpy().tobytes()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def check_masks(model: nn.Module, case: Case) -> dict[str, Any]:
    """Count, fingerprint and (for magnitude cases) order-check the masks."""
    import torch

    layers = _linears(model)
    missing = [i for i, layer in enumerate(layers) if not hasattr(layer, "weight_mask")]
    if missing:
        return {"mask_error": f"layers {missing} have no weight_mask"}
    masks = [layer.weight_mask.detach() for layer in layers]
    sizes = [mask.numel() for mask in masks]
    digests = [_tensor_digest(mask) for mask in masks]
    result: dict[str, Any] = {
        "pruned": sum(int((mask == 0).sum()) for mask in masks),
        "expected": case.expected(sizes) if case.expected else None,
        "fingerprint": _digest(digests),
        "tensor_fingerprints": digests,
    }
    if case.tie_aware:
        magnitudes = [layer.weight_orig.detach().abs() for layer in layers]
        pruned_max = max(
            (
                float(a[m == 0].max())
                for a, m in zip(magnitudes, masks, strict=True)
                if bool((m == 0).any())
            ),
            default=-math.inf,
        )
        kept_min = min(
            (
                float(a[m != 0].min())
                for a, m in zip(magnitudes, masks, strict=True)
                if bool((m != 0).any())
            ),
            default=math.inf,
        )
        tie_digests = []
        tied = tied_pruned = 0
        for a, m in zip(magnitudes, masks, strict=True):
            at_boundary = a == pruned_max
            tied += int(at_boundary.sum())
            tied_pruned += int((at_boundary & (m == 0)).sum())
            tie_digests.append(_tensor_digest((m != 0) | at_boundary))
        result.update(
            boundary=pruned_max,
            order_ok=pruned_max <= kept_min,
            tied=tied,
            tied_pruned=tied_pruned,
            tie_fingerprint=_digest([repr(pruned_max), str(tied_pruned), *tie_digests]),
        )
        del magnitudes
    del masks
    result["is_pruned"] = torch.nn.utils.prune.is_pruned(model)
    return result


def run_model_case(
    name: str, size: str, profile: str | None, threads: int | None
) -> dict[str, Any]:
    """Build the model, set the case up, time the call, measure memory, check masks."""
    _prefer_oom_kill()
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    case = CASES[name]
    model = build_model(size)
    run = PREPARE[name](model)
    gc.collect()
    rss_model = _current_rss()
    peak_before = _peak_rss()
    load = os.getloadavg()[0]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    chosen = None
    if profile is None:
        start = time.perf_counter()
        chosen = run()
        elapsed = time.perf_counter() - start
    else:
        elapsed = _profiled(run, profile)
    after = resource.getrusage(resource.RUSAGE_SELF)
    peak_after = _peak_rss()
    gc.collect()
    _malloc_trim()
    rss_after = _current_rss()
    weight_bytes = (
        sum(
            layer.weight_orig.numel() if hasattr(layer, "weight_orig") else layer.weight.numel()
            for layer in _linears(model)
        )
        * 4
    )
    result: dict[str, Any] = {
        "case": name,
        "size": size,
        "time_s": elapsed,
        "weight_bytes": weight_bytes,
        "rss_model_bytes": rss_model,
        "peak_above_model_bytes": peak_after - rss_model,
        "retained_bytes": rss_after - rss_model,
        "peak_before_call_bytes": peak_before,
        "peak_is_lower_bound": peak_before > rss_model + SLACK_BYTES,
        "torch_threads": torch.get_num_threads(),
        "loadavg_1min": load,
        "profiled": profile,
        "user_s": after.ru_utime - usage.ru_utime,
        "system_s": after.ru_stime - usage.ru_stime,
        "minor_faults": after.ru_minflt - usage.ru_minflt,
        "strategy_used": chosen if isinstance(chosen, str) else None,
    }
    if case.kind == "prune":
        result.update(check_masks(model, case))
    return result


def _profiled(run: Prepared, profile: str) -> float:
    if profile == "cprofile":
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.runcall(run)
        elapsed = time.perf_counter() - start
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("cumulative").print_stats(30)
        stats.sort_stats("tottime").print_stats(15)
        return elapsed
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        start = time.perf_counter()
        run()
        elapsed = time.perf_counter() - start
    averages = prof.key_averages()
    print(averages.table(sort_by="self_cpu_time_total", row_limit=20), file=sys.stderr)
    print(averages.table(sort_by="self_cpu_memory_usage", row_limit=15), file=sys.stderr)
    return elapsed


def run_import_case(name: str) -> dict[str, Any]:
    """Time the imports in this (fresh) interpreter; torch must not be imported yet."""
    if "torch" in sys.modules:
        raise RuntimeError("torch is already imported; the import timing would be wrong")
    if name == "import_torch":
        start = time.perf_counter()
        import torch  # noqa: F401

        return {"case": name, "time_s": time.perf_counter() - start}
    start = time.perf_counter()
    import prunefw

    imported = time.perf_counter()
    prunefw.criterion("magnitude", amount=0.5)
    done = time.perf_counter()
    return {
        "case": name,
        "time_s": done - start,
        "import_s": imported - start,
        "discovery_s": done - imported,
    }


def child_main(args: argparse.Namespace) -> int:
    """Run one case in this process and print its result as one JSON line."""
    if importlib.util.find_spec("prunefw") is None:
        sys.path.insert(0, str(REPO_ROOT))  # not installed: benchmark the checkout
    try:
        if CASES[args.case].kind == "import":
            result = run_import_case(args.case)
        else:
            result = run_model_case(args.case, args.size, args.profile, args.threads)
        status = 0
    except Exception as exc:
        traceback.print_exc()
        lines = str(exc).strip().splitlines() or [""]
        result = {"case": args.case, "error": f"{type(exc).__name__}: {lines[-1]}".strip()}
        status = 1
    line = json.dumps(result)
    if args.json in (None, "-"):
        print(line, flush=True)
    else:
        Path(args.json).write_text(line + "\n")
    return status


# --------------------------------------------------------------------------- driver


def _mem_available() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _settled_mem_available(limit_s: float = 10.0) -> int:
    """``MemAvailable`` once it stops rising (the previous child's memory is freed lazily)."""
    deadline = time.monotonic() + limit_s
    current = _mem_available()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        previous, current = current, _mem_available()
        if current - previous < SLACK_BYTES:
            break
    return current


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def spawn(
    case: str, size: str, timeout: float | None, reserve: int, threads: int | None = None
) -> dict[str, Any]:
    """Run one case in a fresh interpreter, guarding memory and time."""
    cmd = [sys.executable, str(SCRIPT), "--case", case, "--size", size, "--json"]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = ""
    while True:
        try:
            stdout, stderr = proc.communicate(timeout=0.1)
            break
        except subprocess.TimeoutExpired:
            if timeout is not None and time.monotonic() - start > timeout:
                killed = f"timed out after {timeout:.0f} s (killed by the driver)"
            elif _mem_available() < reserve:
                killed = (
                    f"killed by the driver: MemAvailable fell below {reserve / GIB:.1f} GiB "
                    "(--mem-reserve-gib)"
                )
            if killed:
                proc.kill()
                stdout, stderr = proc.communicate()
                break
    result: dict[str, Any] = {}
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                result = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    if proc.returncode == 0 and "error" not in result and result:
        return result
    if killed:
        error = killed
    elif result.get("error"):
        error = result["error"]
    elif proc.returncode < 0:
        error = f"killed by {signal.Signals(-proc.returncode).name}" + (
            " (out of memory?)" if proc.returncode == -signal.SIGKILL else ""
        )
    else:
        error = _last_line(stderr) or f"exit status {proc.returncode}"
    return {"case": case, "size": size, "error": error, "stderr_tail": stderr[-4000:]}


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine the repeats of one case: fastest time, largest peak, fingerprints agree."""
    failed = [run for run in runs if "error" in run]
    if failed:
        return {"status": "FAILED", "error": failed[0]["error"], "runs": runs}
    times = [run["time_s"] for run in runs]
    merged = dict(min(runs, key=lambda run: run["time_s"]))  # user/sys/faults of the fastest
    merged.update(
        status="ok",
        runs=runs,
        time_s=min(times),
        time_median_s=statistics.median(times),
        peak_above_model_bytes=max(run["peak_above_model_bytes"] for run in runs),
        retained_bytes=max(run["retained_bytes"] for run in runs),
        peak_is_lower_bound=any(run["peak_is_lower_bound"] for run in runs),
        deterministic=len({run.get("fingerprint") for run in runs}) == 1,
    )
    return merged


def check_case(name: str, results: dict[str, dict[str, Any]]) -> tuple[str, bool]:
    """The mask-check cell of one case and whether it passed."""
    case, result = CASES[name], results[name]
    if case.kind != "prune" or result["status"] != "ok":
        return "-", True
    if "mask_error" in result:
        return f"FAIL: {result['mask_error']}", False
    problems, notes = [], []
    if result["pruned"] != result["expected"]:
        problems.append(f"count {result['pruned']} != {result['expected']}")
    if case.tie_aware and not result["order_ok"]:
        problems.append("a pruned |w| > a kept |w|")
    if not result["deterministic"]:
        problems.append("masks differ between repeats")
    other = results.get(case.same_as or "")
    if case.same_as and other and other["status"] == "ok" and "fingerprint" in other:
        if result["fingerprint"] == other["fingerprint"]:
            notes.append(f"== {case.same_as}")
        elif case.tie_aware and result["tie_fingerprint"] == other.get("tie_fingerprint"):
            notes.append(f"== {case.same_as} up to tie order ({result['tied']:,} tied)")
        else:
            problems.append(f"masks != {case.same_as}")
    elif case.same_as:
        notes.append(f"{case.same_as} n/a")
    if result.get("strategy_used") and CASES[name].description.startswith("the default"):
        notes.append(f"ran {result['strategy_used']}")
    if problems:
        return "FAIL: " + "; ".join(problems), False
    return "; ".join(["ok", *notes]), True


def _ratio(value: float, base: dict[str, Any] | None) -> str:
    if not base or base.get("status") != "ok" or not base["time_s"]:
        return "-"
    return f"{value / base['time_s']:.2f}"


def _seconds(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


HEADERS = (
    "case",
    "time (s)",
    "user + sys (s)",
    "minor faults",
    "vs torch_l1 (x)",
    "vs torch_floor (x)",
    "peak above model (GiB)",
    "peak / weights (x)",
    "retained (GiB)",
    "pruned",
    "mask check",
)


def size_table(size: str, results: dict[str, dict[str, Any]]) -> tuple[str, bool]:
    """The table of one size and whether every mask check passed."""
    layers, width = SIZES[size]
    n = layers * width * width
    title = (
        f"size {size}: {layers} x Linear({width}, {width}, bias=False), {n:,} weights "
        f"({n * 4 / GIB:.3f} GiB fp32)"
    )
    rows: list[list[str]] = []
    ok = True
    for name, result in results.items():
        if result["status"] != "ok":
            rows.append([name, f"{result['status']}: {result['error']}"])
            continue
        check, passed = check_case(name, results)
        ok &= passed
        weights = result["weight_bytes"]
        peak = result["peak_above_model_bytes"]
        pruned = f"{result['pruned']:,}" if "pruned" in result else "-"
        rows.append(
            [
                name,
                _seconds(result["time_s"]),
                f"{result.get('user_s', 0):.1f} + {result.get('system_s', 0):.1f}",
                f"{result.get('minor_faults', 0):,}",
                _ratio(result["time_s"], results.get("torch_l1")),
                _ratio(result["time_s"], results.get("torch_floor")),
                f"{peak / GIB:.3f}" + ("+" if result["peak_is_lower_bound"] else ""),
                f"{peak / weights:.2f}",
                f"{result['retained_bytes'] / GIB:.3f}",
                pruned,
                check,
            ]
        )
    table = title + "\n" + format_table(HEADERS, rows)
    prunefw_layer, raw_layer = results.get("layer_prunefw"), results.get("layer_raw")
    if prunefw_layer and raw_layer and prunefw_layer["status"] == raw_layer["status"] == "ok":
        table += (
            f"\nlayer_prunefw / layer_raw: time "
            f"{prunefw_layer['time_s'] / raw_layer['time_s']:.2f}x, peak above model "
            f"{prunefw_layer['peak_above_model_bytes'] / raw_layer['peak_above_model_bytes']:.2f}x"
        )
    loads = [
        run["loadavg_1min"]
        for result in results.values()
        for run in result.get("runs", [])
        if "loadavg_1min" in run
    ]
    if loads:
        threads = {
            run["torch_threads"]
            for r in results.values()
            for run in r.get("runs", [])
            if "torch_threads" in run
        }
        table += (
            f"\n1-min load average seen by the cases: {min(loads):.1f} to {max(loads):.1f} "
            f"(torch threads: {', '.join(map(str, sorted(threads)))}; "
            f"{os.cpu_count()} CPUs); a load above the CPU count means contended timings"
        )
    return table, ok


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; a short row (a failure) puts its cells after the first as is."""
    widths = [len(header) for header in headers]
    for row in rows:
        for i, cell in enumerate(row if len(row) == len(headers) else row[:1]):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)) + " |"

    lines = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [
        line(row) if len(row) == len(headers) else line(row[:1]) + " " + " | ".join(row[1:]) + " |"
        for row in rows
    ]
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, versions and the checkout being benchmarked."""
    cpu = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        total = int(meminfo.readline().split()[1]) * 1024

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    spec = importlib.util.find_spec("prunefw")
    git = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "mem_total_gib": round(total / GIB, 1),
        "python": platform.python_version(),
        "torch": version("torch"),
        "prunefw": version("prunefw"),
        "checkout": git.stdout.strip() or "unknown",
        "prunefw_path": str(Path(spec.origin).parent) if spec and spec.origin else "not found",
        "platform": platform.platform(),
    }


def run_imports(repeat: int, warm_up: bool, timeout: float | None, reserve: int) -> dict[str, Any]:
    """Alternate import_torch and import_prunefw runs ``repeat`` times.

    With ``warm_up``, one discarded run of each comes first (cold page cache).
    """
    if warm_up:
        for name in ("import_torch", "import_prunefw"):
            spawn(name, "small", timeout, reserve)
    runs: dict[str, list[dict[str, Any]]] = {"import_torch": [], "import_prunefw": []}
    for _ in range(repeat):
        for name in runs:
            runs[name].append(spawn(name, "small", timeout, reserve))
    result: dict[str, Any] = {"runs": runs}
    for name, items in runs.items():
        failed = [item for item in items if "error" in item]
        if failed:
            result[name] = {"status": "FAILED", "error": failed[0]["error"]}
            continue
        best = min(items, key=lambda item: item["time_s"])
        result[name] = {
            "status": "ok",
            "time_s": best["time_s"],
            "time_median_s": statistics.median(item["time_s"] for item in items),
            **{k: v for k, v in best.items() if k.endswith("_s") and k != "time_s"},
        }
    torch_run, prunefw_run = result["import_torch"], result["import_prunefw"]
    if torch_run["status"] == prunefw_run["status"] == "ok":
        result["overhead_s"] = prunefw_run["time_s"] - torch_run["time_s"]
        result["overhead_median_s"] = prunefw_run["time_median_s"] - torch_run["time_median_s"]
    return result


def import_line(result: dict[str, Any]) -> str:
    """One line summarizing the import timings."""
    torch_run, prunefw_run = result["import_torch"], result["import_prunefw"]
    if "overhead_s" not in result:
        errors = [
            f"{k}: {v['error']}"
            for k, v in result.items()
            if k.startswith("import_") and v.get("status") != "ok"
        ]
        return "imports: FAILED: " + "; ".join(errors)
    overhead = result["overhead_s"]
    verdict = "ok" if overhead < IMPORT_TARGET_S else "OVER TARGET"
    return (
        f"imports (fastest of {len(result['runs']['import_torch'])}): import torch "
        f"{torch_run['time_s']:.3f} s; import prunefw + criterion('magnitude') "
        f"{prunefw_run['time_s']:.3f} s (import {prunefw_run['import_s']:.3f} s + discovery "
        f"{prunefw_run['discovery_s']:.3f} s); overhead {overhead:+.3f} s (median "
        f"{result['overhead_median_s']:+.3f} s), target < {IMPORT_TARGET_S} s: {verdict}"
    )


def _predicted_skip(
    name: str, size: str, measured: dict[str, dict[str, dict[str, Any]]], reserve: int
) -> str | None:
    layers, width = SIZES[size]
    weights = layers * width * width * 4
    ratios = [
        results[name]["peak_above_model_bytes"] / results[name]["weight_bytes"]
        for results in measured.values()
        if results.get(name, {}).get("status") == "ok"
    ]
    if not ratios:
        return None
    need = weights * (1 + max(ratios)) + 0.5 * GIB  # model + peak + interpreter and torch
    available = _settled_mem_available() - reserve
    if need > available:
        return (
            f"predicted {need / GIB:.1f} GiB (peak/weights {max(ratios):.2f} at a smaller "
            f"size) > {available / GIB:.1f} GiB available above the reserve"
        )
    return None


def driver_main(args: argparse.Namespace) -> int:
    """Run every selected case in fresh subprocesses and print the tables."""
    out = sys.stderr if args.json == "-" else sys.stdout
    sizes = ["small"] if args.smoke else args.sizes
    names = args.cases or [case.name for case in CASE_LIST]
    model_cases = [name for name in names if CASES[name].kind != "import"]
    timeout = args.timeout if args.timeout is not None else (300.0 if args.smoke else None)
    reserve = int(args.mem_reserve_gib * GIB)
    machine = machine_info()
    print(
        f"machine: {machine['cpu']}, {machine['usable_cores']} cores, "
        f"{machine['mem_total_gib']} GiB; Python {machine['python']}, torch {machine['torch']}, "
        f"prunefw {machine['prunefw']} from {machine['prunefw_path']} ({machine['checkout']})",
        file=out,
        flush=True,
    )
    report: dict[str, Any] = {"machine": machine, "settings": vars(args) | {"sizes": sizes}}
    measured: dict[str, dict[str, dict[str, Any]]] = {}
    all_ok = True
    incomplete = False
    tables = []
    for size in sizes:
        results: dict[str, dict[str, Any]] = {}
        for name in model_cases:
            skip = _predicted_skip(name, size, measured, reserve)
            if skip:
                results[name] = {"status": "SKIPPED", "error": skip}
            else:
                runs = [
                    spawn(name, size, timeout, reserve, args.threads) for _ in range(args.repeat)
                ]
                results[name] = aggregate(runs)
            result = results[name]
            status = (
                f"{_seconds(result['time_s'])} s, peak +"
                f"{result['peak_above_model_bytes'] / GIB:.3f} GiB"
                if result["status"] == "ok"
                else f"{result['status']}: {result['error']}"
            )
            print(f"  [{size}] {name}: {status}", file=sys.stderr, flush=True)
            incomplete |= result["status"] != "ok"
        measured[size] = results
        table, ok = size_table(size, results)
        all_ok &= ok
        tables.append(table)
        print("\n" + table, file=out, flush=True)
    report["sizes"] = {
        size: {"layers": SIZES[size][0], "width": SIZES[size][1], "cases": results}
        for size, results in measured.items()
    }
    if any(CASES[name].kind == "import" for name in names):
        # --smoke: one run each (it checks that they work; timings are not gated).
        repeat = 1 if args.smoke else max(3, args.repeat)
        imports = run_imports(repeat, not args.smoke, timeout, reserve)
        report["imports"] = imports
        incomplete |= "overhead_s" not in imports
        print("\n" + import_line(imports), file=out, flush=True)
    failed = not all_ok or (args.smoke and incomplete)
    report["ok"] = not failed
    if args.json:
        text = json.dumps(report, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    if not all_ok:
        print("\nmask check FAILED (see the 'mask check' column)", file=out)
    elif args.smoke and incomplete:
        print("\nsmoke run FAILED: some cases did not run", file=out)
    elif incomplete:
        print("\nsome cases did not run (FAILED/SKIPPED rows); mask checks passed", file=out)
    return 1 if failed else 0


def _names(value: str, known: Sequence[str], what: str) -> list[str]:
    names = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in names if item not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none)'}; choose from {', '.join(known)}"
        )
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (driver mode, or child mode with ``--case``)."""
    parser = argparse.ArgumentParser(
        description="Benchmark prunefw against torch.nn.utils.prune (see the module docstring).",
    )
    parser.add_argument(
        "--sizes",
        type=lambda v: _names(v, list(SIZES), "size"),
        default=["small"],
        help="comma-separated sizes to run: small (default), medium, large",
    )
    parser.add_argument(
        "--cases",
        type=lambda v: _names(v, list(CASES), "case"),
        help="comma-separated cases (default: all)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="fresh runs per case (best shown)")
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="write all results as JSON to PATH ('-' or no value: stdout)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="CI: small size, all cases; exit 1 if a case fails or a mask check fails",
    )
    parser.add_argument(
        "--timeout", type=float, help="seconds per child (default: none; 300 with --smoke)"
    )
    parser.add_argument(
        "--mem-reserve-gib",
        type=float,
        default=1.5,
        help="kill a child when MemAvailable falls below this (default 1.5)",
    )
    parser.add_argument(
        "--threads", type=int, help="torch.set_num_threads in each case (default: torch's)"
    )
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    child = parser.add_argument_group("one case in this process (what the driver runs)")
    child.add_argument("--case", choices=list(CASES))
    child.add_argument("--size", choices=list(SIZES), default="small")
    child.add_argument(
        "--profile", choices=["cprofile", "torch"], help="profile the timed call (stderr)"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.smoke and args.sizes != ["small"]:
        parser.error("--smoke runs the small size only; drop --sizes")
    if args.profile and not args.case:
        parser.error("--profile needs --case")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    if args.list:
        for case in CASE_LIST:
            print(f"{case.name:30} {case.kind:9} {case.description}")
        return 0
    if args.case:
        return child_main(args)
    return driver_main(args)


if __name__ == "__main__":
    sys.exit(main())
