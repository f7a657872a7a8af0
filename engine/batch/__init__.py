"""Batch runs: many references, one task directory each, one summary with the KernelBench
metrics. `plan` (what the batch is, batch.json), `runner` (the driver: jobs to a runner,
outcomes to summary.json), `task` (one task, fresh or resumed), the runners `in_process`,
`local_workers` (+ `placement`) and `ray_runner`, `relay` (events back to the driver),
`resume`, `agent_spec`, and `metrics` (the outcome type and fast_p/geomean). docs/scale.md."""
