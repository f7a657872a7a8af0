"""`stark/jobUpdated`: the one notification the VS Code tree view is built on.
Its schema is documented in docs/lsp.md; keep the two in step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stark_lsp.job import Job

JOB_UPDATED = "stark/jobUpdated"
NODE_ERROR_CHARS = 300


def _uri(path: Path | None) -> str | None:
    return path.resolve().as_uri() if path is not None else None


def job_payload(job: Job) -> dict[str, Any]:
    """The wire form of a job: camelCase, file URIs, a compact node list."""
    tree = []
    for node in job.tree:
        code = job.resolve(node.code_path)
        tree.append(
            {
                "id": node.id,
                "parent": node.parent,
                "phase": node.phase,
                "runnable": node.runnable,
                "buggy": node.buggy,
                "speedup": node.speedup,
                "round": node.round,
                "best": node.id == job.best_node,
                "kernelUri": _uri(code),
                "error": (node.error or "")[:NODE_ERROR_CHARS] or None,
            }
        )
    verdict = None
    if job.verdict is not None:
        verdict = {
            "compiled": job.verdict.compiled,
            "correct": job.verdict.correct,
            "speedup": job.verdict.speedup,
            "error": job.verdict.error,
            "flags": list(job.verdict.flags),
        }
    best = job.best
    return {
        "jobId": job.id,
        "kind": str(job.kind),
        "uri": job.uri,
        "referenceUri": _uri(job.reference),
        "kernelUri": _uri(job.kernel),
        "state": str(job.state),
        "round": job.round,
        "rounds": job.rounds,
        "bestSpeedup": best.speedup if best is not None else None,
        "bestSource": str(best.source) if best is not None else None,
        "bestLabel": best.short() if best is not None else None,
        "bestFaster": best.faster if best is not None else False,
        "searchBestSpeedup": job.search_best_speedup,
        "remeasured": job.remeasured.to_dict() if job.remeasured is not None else None,
        "bestNode": job.best_node,
        "bestKernelUri": _uri(job.best_kernel),
        "buggy": job.buggy,
        "taskDir": str(job.task_dir) if job.task_dir else None,
        "error": job.error,
        "verdict": verdict,
        "fixAvailable": bool(job.debug and job.debug.fixed_code),
        "origin": job.origin,
        "pid": job.pid,
        "tree": tree,
    }
