"""The mutant generator of tests/emu/mutants.py (pure Python: no build, no emulator)."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mutants  # noqa: E402

KERNEL = """// a comment with a < b and __syncthreads();
#pragma unroll
#define LIMIT 16
__device__ float add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
__global__ void k(const float* x, float* y, int n) {
  const char* s = "x < n";
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n && i >= 0) y[i * 2 + n] = x[i] + 2;
  __syncthreads();
  for (int j = 0; j < 4; j += 1) y[j] = fmaxf(y[j], 0.f);
}
"""


def _mutants():
    return mutants.generate("demo", "demo.cuh", KERNEL)


def test_comments_strings_preprocessor_and_host_branches_are_not_mutated():
    view = mutants.code_view(KERNEL)
    assert len(view) == len(KERNEL) and view.count("\n") == KERNEL.count("\n")
    for text in ("a comment", "#pragma", "LIMIT", '"x < n"', "return a + b"):
        assert text not in view
    assert "__fadd_rn(a, b)" in view  # the device branch stays
    lines = KERNEL.split("\n")
    touched = {m.line for m in _mutants()}
    for n, line in enumerate(lines, 1):
        if line.lstrip().startswith(("//", "#")) or "return a + b" in line or '"x < n"' in line:
            assert n not in touched, line


def test_each_operator_makes_the_documented_change():
    made = {(m.op, m.original, m.replacement) for m in _mutants()}
    for expected in [("relational", "<", "<="), ("relational", ">=", ">"), ("logical", "&&", "||"),
                     ("arithmetic", "*", "/"), ("arithmetic", "+", "-"), ("compound", "+=", "-="),
                     ("off_by_one+", "2", "3"), ("off_by_one-", "4", "3"), ("barrier", "__syncthreads();", ";"),
                     ("swap_dim", "blockIdx.x", "blockIdx.y"), ("swap_dim", "threadIdx.x", "threadIdx.y"),
                     ("swap_index", "[i * 2 + n]", "[n * 2 + i]"), ("min_max", "fmaxf", "fminf")]:
        assert expected in made, expected
    for m in _mutants():  # every mutant changes the text and keeps everything else
        mutated = m.apply(KERNEL)
        assert mutated != KERNEL
        assert mutated[:m.start] == KERNEL[:m.start] and mutated.endswith(KERNEL[m.end:])


def test_ids_are_unique_and_survive_edits_elsewhere():
    ids = [m.id for m in _mutants()]
    assert len(ids) == len(set(ids))
    edited = "// one more line on top\n" + KERNEL.replace("y[j], 0.f", "y[j], 1.f")
    moved = {m.id for m in mutants.generate("demo", "demo.cuh", edited)}
    unchanged_lines = [m for m in _mutants() if "fmaxf" not in m.source_line]
    assert {m.id for m in unchanged_lines} <= moved


def test_sample_is_deterministic_and_covers_every_operator():
    all_mutants = _mutants()
    ops = {m.op for m in all_mutants}
    first = mutants.sample(list(all_mutants), len(ops), seed=3)
    assert [m.id for m in first] == [m.id for m in mutants.sample(list(all_mutants), len(ops), seed=3)]
    assert {m.op for m in first} == ops  # round-robin over the operators
    assert [m.id for m in first] != [m.id for m in mutants.sample(list(all_mutants), len(ops), seed=4)]


def test_equivalent_list_parses_and_names_real_mutants():
    equivalents = mutants.load_equivalents()
    assert all(reason for reason in equivalents.values())
    known = {m.id for family, (files, _) in mutants.FAMILIES.items() for rel in files
             for m in mutants.generate(family, rel, open(os.path.join(mutants.ROOT, rel)).read())}
    assert set(equivalents) <= known, set(equivalents) - known


def test_every_family_selects_sanitizer_cases():
    """The sanitizer check runs the driver's cases named by SANITIZER_CASES: each substring must select a
    case of tests/emu/sanitize/quick_cases.cpp (a renamed case would silently check nothing)."""
    import re
    driver = open(os.path.join(mutants.ROOT, "tests", "emu", "sanitize", "quick_cases.cpp")).read()
    cases = re.findall(r'^\s*\{"(\w+)", \w+\},$', driver, re.M)
    assert len(cases) > 20, cases
    assert set(mutants.SANITIZER_CASES) == set(mutants.FAMILIES)
    for family, substrings in mutants.SANITIZER_CASES.items():
        for sub in substrings:
            assert any(sub in case for case in cases), (family, sub)
