"""Many models in one run: on local processes (--jobs N) or on a Dask cluster (--scheduler).

Safe to interrupt and rerun: every output is written atomically (quantrs.writer), so an output
that exists is complete, and --skip-existing finishes the rest. A failing model is reported with
its error; with continue_on_error the others go on, without it the batch stops cleanly (models
already running finish, the rest are reported as cancelled).
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any
from pathlib import Path

from quantrs._cpus import available_cpus
from quantrs.config import QuantizeConfig
from quantrs.errors import AlreadyQuantizedError, ConfigError, QuantrsError, SchedulerError, UnknownNameError
from quantrs.report import BatchReport, ModelResult

__all__ = ["Job", "expand_inputs", "make_jobs", "run_job", "run_batch", "quantize_batch"]

logger = logging.getLogger(__name__)

PROGRESS_SECONDS = 0.25  # how often the progress of models on worker processes is read

# Called with (models done, models in all, input bytes done, input bytes in all): when the batch
# starts, as the models being quantized advance (the bytes count the share of each model's
# weights written so far; not on a Dask cluster), and after each model.
BatchProgress = Callable[[int, int, int, int], None]


@dataclass(frozen=True)
class Job:
    input: Path
    output: Path
    config: QuantizeConfig
    origin: str = ""  # where the options came from, e.g. "quantize.yaml: models.0" (prefixes option errors)


def expand_inputs(patterns: Sequence[str | os.PathLike[str]], base: Path | None = None) -> list[Path]:
    """Files, folders (their *.onnx) and glob patterns, in order, without duplicates.

    A pattern that matches no ONNX model is an error naming it: a typo should not pass as an
    empty batch. Relative patterns are taken from `base` (the current folder by default).
    """
    found: list[Path] = []
    for pattern in patterns:
        text = str(pattern)
        path = Path(text) if base is None or os.path.isabs(text) else base / text
        if path.is_dir():
            matches = sorted(p for p in path.glob("*.onnx") if p.is_file())
        elif path.is_file():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not matches:
            raise ConfigError(f"{text}: matches no ONNX model")
        found.extend(matches)
    unique: dict[Path, Path] = {}  # resolved -> as the user spelled it
    for p in found:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def make_jobs(inputs: Sequence[Path], output_dir: Path, config: QuantizeConfig) -> list[Job]:
    """One job per input, writing `output_dir/<input file name>`."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"{output_dir}: the output folder is a file")
    seen: dict[str, Path] = {}
    jobs = []
    for src in inputs:
        if src.name in seen:
            raise ConfigError(f"{src} and {seen[src.name]} would both be written to {output_dir / src.name}")
        seen[src.name] = src
        jobs.append(Job(src, output_dir / src.name, config))
    return jobs


def run_job(job: Job, progress: Callable[[float], None] | None = None) -> ModelResult:
    """Quantize one model; never raises: failures come back as a result with the error.
    `progress(share of the model's weights written, 0 to 1)` as the model advances."""
    from quantrs.pipeline import quantize

    def advanced(done: int, total: int, nbytes: int, total_bytes: int) -> None:
        assert progress is not None
        progress(nbytes / total_bytes if total_bytes else done / max(total, 1))

    started = time.perf_counter()
    base: dict[str, Any] = dict(input=str(job.input), output=str(job.output), input_bytes=_size(job.input))
    try:
        job.output.parent.mkdir(parents=True, exist_ok=True)
        report = quantize(job.input, job.output, job.config, progress=advanced if progress is not None else None)
    except AlreadyQuantizedError as exc:
        return ModelResult(**base, status="skipped", error=str(exc), seconds=_since(started))
    except UnknownNameError as exc:
        where = f"{job.origin}: " if job.origin else ""
        return ModelResult(**base, status="failed", error=f"{where}{exc.field}: {exc} ({job.input})", seconds=_since(started))
    except QuantrsError as exc:
        return ModelResult(**base, status="failed", error=str(exc), seconds=_since(started))
    except OSError as exc:
        return ModelResult(**base, status="failed", error=f"{job.output}: {exc.strerror or exc}", seconds=_since(started))
    except Exception as exc:  # a bug in quantrs: report it for this model, keep the batch going
        logger.exception("internal error on %s", job.input)
        return ModelResult(**base, status="failed", error=f"internal error: {type(exc).__name__}: {exc}", seconds=_since(started))
    return ModelResult(
        **base,
        status="ok",
        output_bytes=report.output_bytes,
        quantized_count=report.quantized_count,
        seconds=_since(started),
    )


def run_batch(
    jobs: Sequence[Job],
    *,
    n_jobs: int = 1,
    skip_existing: bool = False,
    continue_on_error: bool = False,
    scheduler: str | None = None,
    progress: BatchProgress | None = None,
) -> BatchReport:
    """Run every job and return one result per job, in the jobs' order."""
    if n_jobs < 1:
        raise ConfigError(f"jobs must be at least 1, not {n_jobs}")
    refuse_overwrites(jobs)
    started = time.perf_counter()
    results: dict[int, ModelResult] = {}
    todo: list[int] = []
    for i, job in enumerate(jobs):
        if skip_existing and job.output.exists():
            results[i] = ModelResult(
                str(job.input), str(job.output), "skipped", input_bytes=_size(job.input), output_bytes=_size(job.output)
            )
        else:
            todo.append(i)
    tracker = _Tracker(jobs, todo, progress)
    tracker.report()  # the totals, before any model is done
    if scheduler is not None:
        _run_on_dask(jobs, todo, results, scheduler, continue_on_error, tracker)
    elif n_jobs == 1 or len(todo) <= 1:
        _run_here(jobs, todo, results, continue_on_error, tracker)
    else:
        _run_on_processes(jobs, todo, results, n_jobs, continue_on_error, tracker)
    for i in todo:
        if i not in results:
            results[i] = ModelResult(str(jobs[i].input), str(jobs[i].output), "cancelled", input_bytes=_size(jobs[i].input))
    return BatchReport(
        results=[results[i] for i in range(len(jobs))],
        jobs=n_jobs,
        scheduler=scheduler,
        seconds=_since(started),
    )


def refuse_overwrites(jobs: Sequence[Job]) -> None:
    """Refuse, before any model runs, a batch in which a job would write over a file another
    job reads (its model or external data, by path, symbolic or hard link), or two jobs would
    write the same file. Each job's own input is checked again when it runs (pipeline)."""
    from quantrs.pipeline import output_files

    writers: dict[tuple[int, int], Job] = {}
    seen: dict[Path, Job] = {}
    for job in jobs:
        target = job.output.resolve()
        if target in seen:
            raise ConfigError(f"{seen[target].input} and {job.input} would both be written to {job.output}")
        seen[target] = job
        for out in output_files(job.output):
            identity = _identity(out)
            if identity is not None:
                writers[identity] = job
    if not writers:  # no output exists yet, so none can be a file some job reads
        return
    for reader in jobs:
        for read in _files_read(reader.input):
            writer = writers.get(_identity(read) or (-1, -1))
            if writer is not None and writer is not reader:
                raise ConfigError(
                    f"{writer.output}: writing it would replace {read}, which {reader.input} reads; choose another output folder"
                )


def _files_read(path: Path) -> list[Path]:
    from quantrs.model import load_model
    from quantrs.pipeline import input_files

    try:
        return input_files(load_model(path))
    except QuantrsError:  # not loadable: its own job reports why; only the file itself is read
        return [path]


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


@dataclass
class _Tracker:
    """Models done and input bytes done, those of the models under way counted by the share of
    their weights written."""

    jobs: Sequence[Job]
    todo: list[int]
    progress: BatchProgress | None
    done: int = 0
    done_bytes: int = 0

    def __post_init__(self) -> None:
        self.sizes = {i: _size(self.jobs[i].input) for i in self.todo}
        self.total_bytes = sum(self.sizes.values())
        self.under_way: dict[int, int] = {}  # job -> its input bytes counted so far

    def advanced(self, i: int, share: float) -> None:
        counted = int(self.sizes.get(i, 0) * min(max(share, 0.0), 1.0))
        if counted != self.under_way.get(i):
            self.under_way[i] = counted
            self.report()

    def finished(self, i: int, result: ModelResult) -> None:
        self.under_way.pop(i, None)
        self.done += 1
        self.done_bytes += result.input_bytes
        self.report()

    def report(self) -> None:
        if self.progress is not None:
            self.progress(self.done, len(self.todo), self.done_bytes + sum(self.under_way.values()), self.total_bytes)


def _run_here(
    jobs: Sequence[Job], todo: list[int], results: dict[int, ModelResult], continue_on_error: bool, tracker: _Tracker
) -> None:
    for i in todo:
        results[i] = run_job(jobs[i], functools.partial(tracker.advanced, i))
        tracker.finished(i, results[i])
        if results[i].status == "failed" and not continue_on_error:
            return


def _threads_per_job(job: Job, n_jobs: int) -> Job:
    # n processes each starting an OpenMP team as large as the machine would oversubscribe it.
    if job.config.n_threads is not None:
        return job
    return dataclasses.replace(job, config=dataclasses.replace(job.config, n_threads=max(1, available_cpus() // n_jobs)))


def _process_context() -> multiprocessing.context.BaseContext:
    """Not plain fork: a forked child of a process that already ran OpenMP code can deadlock in
    libgomp. A fork server is a fresh process that imports quantrs once (no OpenMP team yet) and
    forks every worker from there, so workers start in milliseconds instead of re-importing numpy
    and onnx as spawned ones do (~0.3 s each)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["quantrs.pipeline"])
    # Python 3.11's fork server ignores the parent's sys.path and puts the current folder first,
    # so a quantrs source checkout there would shadow the installed package. PYTHONSAFEPATH
    # keeps the current folder off its path (it is read once, when the server starts).
    saved = os.environ.get("PYTHONSAFEPATH")
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        forkserver.ensure_running()
    finally:
        if saved is None:
            del os.environ["PYTHONSAFEPATH"]
        else:
            os.environ["PYTHONSAFEPATH"] = saved
    return context


# In a worker process: each job's share of its weights written, by job (see _run_on_processes).
_SHARES: Any = None


def _share_into(shares: Any) -> None:
    global _SHARES
    _SHARES = shares


def _run_job_sharing(job: Job, i: int) -> ModelResult:
    return run_job(job, functools.partial(_SHARES.__setitem__, i))


def _run_on_processes(
    jobs: Sequence[Job],
    todo: list[int],
    results: dict[int, ModelResult],
    n_jobs: int,
    continue_on_error: bool,
    tracker: _Tracker,
) -> None:
    """Jobs on local worker processes, which write how far each model is into shared memory;
    the tracker reads it while waiting for the next model to finish."""
    context = _process_context()
    shares = context.Array("d", len(jobs), lock=False)
    with ProcessPoolExecutor(
        max_workers=min(n_jobs, len(todo)), mp_context=context, initializer=_share_into, initargs=(shares,)
    ) as pool:
        pending: dict[Future, int] = {pool.submit(_run_job_sharing, _threads_per_job(jobs[i], n_jobs), i): i for i in todo}
        stop = False
        while pending:
            done, _ = wait(pending, timeout=PROGRESS_SECONDS, return_when=FIRST_COMPLETED)
            for i in pending.values():
                if shares[i]:
                    tracker.advanced(i, shares[i])
            for future in done:
                i = pending.pop(future)
                if future.cancelled():
                    continue
                try:
                    results[i] = future.result()
                except Exception as exc:  # the worker process died (killed, out of memory)
                    results[i] = ModelResult(str(jobs[i].input), str(jobs[i].output), "failed", error=f"worker died: {exc}")
                tracker.finished(i, results[i])
                if results[i].status == "failed" and not continue_on_error and not stop:
                    stop = True
                    for other in pending:
                        other.cancel()  # not started yet: cancelled; running: left to finish


def _run_on_dask(
    jobs: Sequence[Job],
    todo: list[int],
    results: dict[int, ModelResult],
    address: str,
    continue_on_error: bool,
    tracker: _Tracker,
) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ConfigError("--scheduler needs Dask: pip install 'quantrs[dask]'") from None
    try:
        client = Client(address, timeout="10s")
    except Exception as exc:  # OSError, TimeoutError, ValueError for a malformed address
        raise SchedulerError(f"cannot reach the Dask scheduler at {address} ({exc})") from None
    with client:
        futures = {client.submit(run_job, jobs[i], key=f"quantrs-{i}-{jobs[i].input.name}", pure=False): i for i in todo}
        stream = as_completed(list(futures))
        for future in stream:
            i = futures[future]
            try:
                results[i] = future.result()
            except Exception as exc:  # the task itself failed on the worker (it died, lost data)
                results[i] = ModelResult(str(jobs[i].input), str(jobs[i].output), "failed", error=f"worker error: {exc}")
            tracker.finished(i, results[i])
            if results[i].status == "failed" and not continue_on_error:
                remaining = [f for f in futures if futures[f] not in results]
                client.cancel(remaining)
                break


def quantize_batch(
    inputs: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    config: QuantizeConfig | None = None,
    *,
    jobs: int = 1,
    skip_existing: bool = False,
    continue_on_error: bool = False,
    scheduler: str | None = None,
    progress: BatchProgress | None = None,
) -> BatchReport:
    """Quantize every model that `inputs` (files, folders, globs) name into `output_dir`.

    `jobs` local processes, or the Dask cluster at `scheduler` (one task per model).
    """
    work = make_jobs(expand_inputs(inputs), Path(output_dir), config or QuantizeConfig())
    return run_batch(
        work,
        n_jobs=jobs,
        skip_existing=skip_existing,
        continue_on_error=continue_on_error,
        scheduler=scheduler,
        progress=progress,
    )


def _size(path: Path) -> int:
    try:
        size = path.stat().st_size
        data = path.with_name(path.name + ".data")
        return size + (data.stat().st_size if data.exists() else 0)
    except OSError:
        return 0


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 4)
