"""Correlation across the kexec boundary: domain epochs, resource ledgers, kexec safety and findings.

One module per concept: :mod:`records` (the decoded capture as arrays), :mod:`boundaries` (kexec boundaries and
epochs), :mod:`ledgers` (grants, balloon, hypercalls, IRQ vectors, guest tracepoints), :mod:`safety` (first unsafe
operation and verdict per domain and epoch), :mod:`findings` (the one findings table and its rules) and
:mod:`report` (the JSON contract and the text/Markdown renderings). docs/analysis.md describes the semantics.
"""
