"""Small KernelBench-format reference problems shared by the kernel writer's tests.

Each file defines `Model`, `get_inputs()` and `get_init_inputs()` with small shapes; the
names are stable (other tests import them by name). `untraceable` is one torch.fx cannot
trace; `op_zoo` is not a benchmark but many spellings of the same operators.
"""

from pathlib import Path

REFS_DIR = Path(__file__).resolve().parent
NAMES = tuple(sorted(p.stem for p in REFS_DIR.glob("*.py") if p.stem != "__init__"))


def ref_source(name: str) -> str:
    return (REFS_DIR / f"{name}.py").read_text()
