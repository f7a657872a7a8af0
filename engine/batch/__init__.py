"""Batch runs: many references, one task directory each, one summary with the KernelBench
metrics (`metrics`: the outcome type and the fast_p/geomean definitions; `runner`: the
loop that runs one search per reference)."""
