"""Run generated Triton sources under Triton's CPU interpreter, in a process of their own.

TRITON_INTERPRET=1 only takes effect when it is set before `triton` is first imported
(`triton.language`'s own `@jit` helpers such as `tl.max` are decorated at import), so the
tests cannot switch it on inside a pytest process that has already imported Triton. They
generate the sources, then run this script once:

    TRITON_INTERPRET=1 python tests/gpu/interpret_generated.py < jobs.json > results.json

Each job names a case of `kernel_graphs`, the source file and the `call`; "compare" jobs
evaluate the call on the case's inputs and report, per output, whether it is within 1e-4
of torch; "reject" jobs call the launcher with the given bad inputs and report the error.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
import warnings
from pathlib import Path
from typing import Any

if os.environ.get("TRITON_INTERPRET") != "1":
    raise SystemExit("run with TRITON_INTERPRET=1 (it must be set before triton is imported)")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_graphs import all_cases, formula_inputs, self_with  # noqa: E402


def load(path: str) -> types.ModuleType:
    name = Path(path).stem
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compare(job: dict[str, Any]) -> dict[str, Any]:
    case = all_cases()[job["case"]]
    feeds, params = (formula_inputs(), {}) if case.name == "formulas" else case.inputs()
    module = load(job["source"])
    scope = {**vars(module), **feeds, "self": self_with(params)}
    got = eval(job["call"], scope)  # noqa: S307 - the generated call expression
    expected = case.reference(feeds, params)
    got = got if isinstance(got, tuple) else (got,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    outputs = []
    for g, e in zip(got, expected, strict=True):
        close = torch.isclose(g, e, atol=1e-4, rtol=1e-4, equal_nan=True)
        worst = (g - e).abs().nan_to_num(nan=0.0).max().item() if g.numel() else 0.0
        outputs.append({
            "same_shape": g.shape == e.shape and g.dtype == e.dtype,
            "ok": bool(close.all()),
            "max_abs_err": worst,
            "first_bad": [] if close.all() else [feeds["x"].flatten()[~close.flatten()][:4].tolist(),
                                                 g.flatten()[~close.flatten()][:4].tolist(),
                                                 e.flatten()[~close.flatten()][:4].tolist()],
        })  # fmt: skip
    return {"outputs": outputs, "count": [len(got), len(expected)]}


def reject(job: dict[str, Any]) -> dict[str, Any]:
    module = load(job["source"])
    launch = getattr(module, job["launch"])
    tensor = torch.randn(*job["shape"], dtype=getattr(torch, job["dtype"]))
    if job.get("transpose"):
        tensor = tensor.t()
    try:
        launch(tensor)
    except Exception as error:  # noqa: BLE001 - the error is the result
        return {"error": type(error).__name__, "message": str(error)}
    return {"error": None, "message": ""}


def main() -> None:
    jobs = json.load(sys.stdin)
    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's log(0) on masked-off rows
        for job in jobs:
            try:
                results[job["id"]] = compare(job) if job["kind"] == "compare" else reject(job)
            except Exception as error:  # noqa: BLE001 - reported per job
                results[job["id"]] = {"crash": f"{type(error).__name__}: {error}"}
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
