"""A small mutation check: each plausible mistake at a seam is made in a copy of the installed
package, and the test named for it must then fail (tests/test_seams.py and others). A mutation
that the suite no longer notices is a test that stopped biting.

    pytest bench/test_mutations.py -q

Each case copies the installed package (compiled kernels included) to a temporary folder,
replaces one exact piece of source text, and runs the named tests against that copy
(PYTHONPATH first). The replaced text must exist: a refactoring that moves it makes the case
fail loudly here, to be updated, rather than pass without testing anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import quantrs

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

# (id, file in the package, exact source text, its mutation, tests that must fail)
MUTATIONS = [
    (
        "report prints the skipped count as the quantized count",
        "render.py",
        "{_n(report.quantized_count, 'tensor')} quantized, {report.skipped_count} left as",
        "{_n(report.skipped_count, 'tensor')} quantized, {report.skipped_count} left as",
        ["test_seams.py::test_report_counts_quantized_and_skipped_apart"],
    ),
    (
        "granularity metadata always per-tensor",
        "pipeline.py",
        '"quantrs.granularity": _granularity(config),',
        '"quantrs.granularity": "per-tensor",',
        ["test_seams.py::test_metadata_says_the_granularity"],
    ),
    (
        "threads threshold raised so production never uses threads",
        "kernels.py",
        "PARALLEL_MIN_ELEMENTS = 1 << 16",
        "PARALLEL_MIN_ELEMENTS = 1 << 40",
        ["test_seams.py::test_kernels_use_threads_on_large_tensors"],
    ),
    (
        "external-data offsets no longer page-aligned",
        "writer.py",
        "_ALIGN = 4096",
        "_ALIGN = 1",
        ["test_seams.py::test_external_data_offsets_are_page_aligned"],
    ),
    (
        "percentile picker's one-sided branch removed",
        "ranges.py",
        "if stats.lo >= 0:  # one-sided data",
        "if False:  # one-sided data",
        ["test_seams.py::test_percentile_clips_only_the_top_of_one_sided_data"],
    ),
    (
        "top-1 agreement computed with argmin",
        "compare.py",
        "hits = [np.argmax(r, axis=-1) == np.argmax(g, axis=-1)",
        "hits = [np.argmin(r, axis=-1) == np.argmin(g, axis=-1)",
        ["test_seams.py::test_top1_agreement_compares_the_largest_logits"],
    ),
    (
        "batch no longer splitting threads per job",
        "batch.py",
        "n_threads=max(1, available_cpus() // n_jobs)",
        "n_threads=None",
        ["test_seams.py::test_batch_splits_threads_between_jobs"],
    ),
    (
        "--int4-as-int8 ignored",
        "config.py",
        '"--native-int4/--int4-as-int8",',
        '"--native-int4/--int4-as-int8-ignored", "--int4-as-int8",',
        ["test_seams.py::test_int4_as_int8_flag_reaches_the_config"],
    ),
    (
        "Relu folded though a float op reads it",
        "activations.py",
        "if result in outputs or not all(self._quantizes(r) for r in readers.get(result, [])):",
        "if result in outputs:",
        ["test_static.py::test_a_relu_read_by_a_float_op_is_not_folded"],
    ),
    (
        "bodies filled after the static edit copies them",
        "pipeline.py",
        "    try:  # before any edit: rebuilding a node list copies the bodies, and the codes go in theirs\n"
        "        stream.fill_bodies()",
        "    try:\n        pass",
        ["test_static.py::test_weights_inside_if_bodies_calibrate"],
    ),
    (
        "activations with masks kept in the statistics",
        "collect.py",
        "    if excluded:\n        skipped[name]",
        "    if False:\n        skipped[name]",
        ["test_static.py::test_masked_attention_scores_are_left_float"],
    ),
    (
        "auto never refits its error model",
        "auto.py",
        "        search.refit(assignment, _output_error(outputs))",
        "        pass",
        ["test_auto.py::test_the_verification_loop"],
    ),
    (
        "8-bit layers of a blocked model keep the blocks",
        "plan.py",
        "bits == 8 != config.bits\n        and plan.block_size is not None",
        "False\n        and plan.block_size is not None",
        ["test_auto.py::test_eight_bits_are_per_channel_and_constant_weights_are_measured"],
    ),
    (
        "gptq's codes computed but the writer rounds to nearest anyway",
        "pipeline.py",
        "qt = self.ready.pop(name, None)",
        "qt = None",
        ["test_gptq.py::test_gptq_model_is_closer_to_float_on_held_out_inputs"],
    ),
    (
        "gptq quantizes rows in file order instead of the most active first",
        "gptq.py",
        'order = np.argsort(np.where(dead, np.inf, -diag), kind="stable") if act_order else np.arange(k)',
        "order = np.arange(k)",
        ["test_gptq.py::test_the_factor_is_the_upper_cholesky_factor_of_the_damped_inverse_in_act_order"],
    ),
    (
        "a Conv's patches taken with its strides swapped",
        "gptq.py",
        "axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]",
        "axis=(2, 3))[:, :, ::sw, ::sh, ::dh, ::dw]",
        ["test_gptq.py::test_conv_patches_are_the_rows_the_conv_multiplies"],
    ),
    (
        "calibrate --exclude-op-type dropped from the weight options calibrate takes",
        "config.py",
        'WEIGHT_OPTIONS: ClassVar[tuple[str, ...]] = ("rounding", "exclude", "exclude_op_types", "exclude_regex", "dynamic")',
        'WEIGHT_OPTIONS: ClassVar[tuple[str, ...]] = ("rounding", "exclude", "exclude_regex", "dynamic")',
        ["test_seam_effects.py::test_calibrate_exclude_op_type_keeps_that_op_types_weights_float"],
    ),
    (
        "auto --min-top1 not passed to the budget's thresholds",
        "config.py",
        "max_relative_error=self.max_relative_error, min_top1=self.min_top1)",
        "max_relative_error=self.max_relative_error, min_top1=None)",
        ["test_seam_effects.py::test_auto_min_top1_is_part_of_the_budget"],
    ),
    (
        "auto keeps the largest candidate that met the budget",
        "auto.py",
        "search.bytes(assignment) < search.bytes(best[1])",
        "search.bytes(assignment) > search.bytes(best[1])",
        ["test_seam_effects.py::test_auto_writes_the_smallest_of_several_candidates_that_met"],
    ),
    (
        "relative-error threshold compared the wrong way",
        "config.py",
        "out.relative_l2 <= self.max_relative_error,",
        "out.relative_l2 >= self.max_relative_error,",
        ["test_seam_effects.py::test_max_relative_error_passes_below_and_fails_above"],
    ),
    (
        "--threads ignored by QDQ weights",
        "pipeline.py",
        "name=spec.name, n_threads=config.n_threads, scratch=scratch,",
        "name=spec.name, scratch=scratch,",
        ["test_seam_effects.py::test_threads_reach_every_kernel_call[qdq]"],
    ),
    (
        "--threads ignored by MatMulNBits weights",
        "pipeline.py",
        "range=spec.range, name=spec.name, n_threads=config.n_threads,",
        "range=spec.range, name=spec.name,",
        ["test_seam_effects.py::test_threads_reach_every_kernel_call[matmulnbits]"],
    ),
    (
        "cgroup quota cap removed",
        "_cpus.py",
        "cpus = min(cpus, max(1, math.ceil(limit)))",
        "cpus = cpus",
        ["test_seam_effects.py::test_available_cpus_is_capped_by_the_cgroup_quota"],
    ),
    (
        "float16-scale zero points floored instead of rounded",
        "tensor.py",
        "np.clip(np.rint(scheme.qmin - low",
        "np.clip(np.floor(scheme.qmin - low",
        ["test_seam_effects.py::test_float16_scale_zero_points_are_the_nearest_code"],
    ),
    (
        "static 8-bit blocks made per channel along the wrong axis",
        "calibration.py",
        "axis=1 - spec.axis, block_size=None",
        "axis=spec.axis, block_size=None",
        ["test_seam_effects.py::test_static_8bit_blocks_become_per_output_channel"],
    ),
]


@pytest.mark.skipif(not TESTS.is_dir(), reason="needs the source tree's tests")
@pytest.mark.parametrize("case", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_mutation_is_caught(case, tmp_path):
    _, filename, original, mutated, tests = case
    package = Path(quantrs.__file__).parent
    copy = tmp_path / "quantrs"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    source = (copy / filename).read_text(encoding="utf-8")
    assert source.count(original) == 1, f"{filename} no longer holds the text this mutation changes: update the case"
    (copy / filename).write_text(source.replace(original, mutated), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--no-header", *(str(TESTS / t) for t in tests)],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    check = subprocess.run(
        [sys.executable, "-c", "import quantrs; print(quantrs.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert check.stdout.strip().startswith(str(copy)), "the mutated copy was not the package imported"
    assert run.returncode == 1, f"the mutation survived (exit {run.returncode}):\n{run.stdout[-2000:]}"
