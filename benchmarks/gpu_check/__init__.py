"""``make gpu-check``: one call on a bare GPU machine builds var_fast for the present GPU, runs the
CUDA tests, the compute-sanitizer tools over every kernel, the benchmarks, and writes a report.

One module per stage (build, cuda_tests, sanitizer, run_benchmarks) and per job (clock: budgets and
deadlines; arch: TORCH_CUDA_ARCH_LIST; flops: the analytic FLOP floor; report: markdown and JSON).
``--cpu-smoke`` runs the same code on tiny shapes without a GPU, so CI keeps it alive; ``--rehearse
VARIANT`` (package ``rehearsal``) runs every stage's control flow on the CPU with the GPU-only tools
played back from recorded outputs, a failing sanitizer among the variants.
"""
