"""Is a candidate just the reference? A copy of the eager model is not a kernel.

The search's seed (offline: the reference as is), or a debug "fix" that re-emits the
eager model, measures ~1.00x; counted as a kernel, timing noise alone would make it a
"win". `is_reference_copy` recognises, by the AST with comments and docstrings gone:

- a `ModelNew` whose class is the reference `Model`'s (renamed `ModelNew` -> `Model`), up
  to renamed parameters and a bare `__init__` (only `super().__init__()`) present or not;
- a `ModelNew(Model)` that adds nothing (`pass`, or only methods that call the parent);
- a `ModelNew` whose forward only calls the reference model: `Model.forward(self, ...)`,
  `super().forward(...)` (parameters positional or by keyword), `self.<attr>(...)` where `__init__` set `self.<attr> = Model(...)`,
  directly or through one level of `self.<helper>` indirection (the offline agent's
  `_stark_run = self._stark_eager` wrapper).

Only when the candidate's own `Model` (if it defines one) is the reference's, so a file
that changes `Model` and subclasses it is not a copy.

Source can say the same thing in endless ways (`F.relu` for `torch.relu`, a no-op line, a
`clone()` first); the search also labels a node by its behaviour
(`is_behavioural_copy`): outputs bit-identical to the reference's on every trial and a
speedup inside the noise of 1.0.
"""

from __future__ import annotations

import ast

from engine.artifacts.remeasured import beyond_iqr
from engine.bench.result import EvalResult

_MAX_INDIRECTIONS = 4  # self.a -> self.b -> ... bounded, a cycle cannot loop


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module)
            and isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


class _Rename(ast.NodeTransformer):
    """ModelNew -> Model, and `super(Model, self)` -> `super()` (the same call)."""

    def visit_Name(self, node: ast.Name) -> ast.Name:
        if node.id == "ModelNew":
            node.id = "Model"
        return node

    def visit_Call(self, node: ast.Call) -> ast.Call:
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id == "super":
            node.args, node.keywords = [], []
        return node


def _classes(source: str) -> dict[str, ast.ClassDef] | None:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    _strip_docstrings(tree)
    return {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}


class _RenameParams(ast.NodeTransformer):
    """A method's parameters (after `self`) -> `_p0`, `_p1`, ...: a renamed argument does
    not change what the method computes."""

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        params = node.args.posonlyargs + node.args.args
        mapping = {a.arg: f"_p{i}" for i, a in enumerate(params[1:])}
        for arg in params[1:]:
            arg.arg = mapping[arg.arg]
        for stmt in node.body:
            for name in ast.walk(stmt):
                if isinstance(name, ast.Name) and name.id in mapping:
                    name.id = mapping[name.id]
        return node


def _is_bare_init(stmt: ast.stmt) -> bool:
    """`def __init__(self): super().__init__()` (after `_Rename`): the same as no
    `__init__` at all for an nn.Module subclass."""
    if not isinstance(stmt, ast.FunctionDef) or stmt.name != "__init__" or stmt.decorator_list:
        return False
    args = stmt.args
    if args.posonlyargs or len(args.args) != 1 or args.vararg or args.kwonlyargs or args.kwarg:
        return False
    body = [s for s in stmt.body if not isinstance(s, ast.Pass)]
    return (
        len(body) == 1
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Call)
        and not body[0].value.args
        and not body[0].value.keywords
        and _is_super_call(body[0].value.func, "__init__")
    )


def _dump(cls: ast.ClassDef) -> str:
    copy = ast.parse(ast.unparse(cls)).body[0]
    assert isinstance(copy, ast.ClassDef)
    copy.name = "Model"
    _Rename().visit(copy)
    _strip_docstrings(copy)
    _RenameParams().visit(copy)
    copy.body = [s for s in copy.body if not _is_bare_init(s)] or [ast.Pass()]
    for node in ast.walk(copy):  # type hints do not change what a model computes
        if isinstance(node, ast.FunctionDef):
            node.returns = None
        elif isinstance(node, ast.arg):
            node.annotation = None
    return ast.dump(copy, annotate_fields=False, include_attributes=False)


def is_reference_copy(candidate_src: str, reference_src: str) -> bool:
    """True when the candidate's ModelNew computes with the reference Model and nothing else."""
    ours, theirs = _classes(candidate_src), _classes(reference_src)
    if not ours or not theirs or "ModelNew" not in ours or "Model" not in theirs:
        return False
    reference_model = _dump(theirs["Model"])
    if "Model" in ours and _dump(ours["Model"]) != reference_model:
        return False  # the file changed Model itself
    model_new = ours["ModelNew"]
    if _dump(model_new) == reference_model:
        return True
    return _only_delegates(model_new)


def _is_model_base(cls: ast.ClassDef) -> bool:
    return any(isinstance(b, ast.Name) and b.id == "Model" for b in cls.bases)


def _methods(cls: ast.ClassDef) -> dict[str, ast.FunctionDef] | None:
    """Its methods; None when the class body holds anything else (attributes, nested code)."""
    methods: dict[str, ast.FunctionDef] = {}
    for stmt in cls.body:
        if isinstance(stmt, ast.Pass):
            continue
        if not isinstance(stmt, ast.FunctionDef) or stmt.decorator_list:
            return None
        methods[stmt.name] = stmt
    return methods


def _single_call(func: ast.FunctionDef) -> ast.Call | None:
    """The call a one-statement method makes (`return f(...)`, `out = f(...); return out`)."""
    body = [s for s in func.body if not isinstance(s, ast.Pass)]
    if len(body) == 1 and isinstance(body[0], ast.Return | ast.Expr):
        value = body[0].value
        return value if isinstance(value, ast.Call) else None
    if (
        len(body) == 2
        and isinstance(body[0], ast.Assign)
        and len(body[0].targets) == 1
        and isinstance(body[0].targets[0], ast.Name)
        and isinstance(body[1], ast.Return)
        and isinstance(body[1].value, ast.Name)
        and body[1].value.id == body[0].targets[0].id
        and isinstance(body[0].value, ast.Call)
    ):
        return body[0].value
    return None


def _passes_through(call: ast.Call, func: ast.FunctionDef) -> bool:
    """The call hands on the method's own parameters unchanged, in order (`self` first
    allowed for an unbound `Model.forward(self, ...)`)."""
    params = [a.arg for a in func.args.posonlyargs + func.args.args][1:]
    if func.args.vararg is not None:
        params.append(func.args.vararg.arg)
    given: list[str] = []
    for arg in call.args:
        inner = arg.value if isinstance(arg, ast.Starred) else arg
        if not isinstance(inner, ast.Name):
            return False
        given.append(inner.id)
    if given[:1] == ["self"]:
        given = given[1:]
    named: list[str] = []  # `forward(x=x)`: a parameter handed on by its own name
    kwargs_ok = True
    for k in call.keywords:
        if not isinstance(k.value, ast.Name):
            return False
        if k.arg is None:
            kwargs_ok &= func.args.kwarg is not None and k.value.id == func.args.kwarg.arg
        elif k.arg == k.value.id:
            named.append(k.arg)
        else:
            return False
    rest = params[len(given) :]
    return given == params[: len(given)] and sorted(named) == sorted(rest) and kwargs_ok


def _self_attr(node: ast.AST) -> str | None:
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    ):
        return node.attr
    return None


def _is_super_call(node: ast.AST, method: str) -> bool:
    """`super().method` or `super(ModelNew, self).method` / `Model.method`."""
    if not isinstance(node, ast.Attribute) or node.attr != method:
        return False
    target = node.value
    if isinstance(target, ast.Call) and isinstance(target.func, ast.Name):
        return target.func.id == "super"
    return isinstance(target, ast.Name) and target.id == "Model"


def _init_assignments(init: ast.FunctionDef | None) -> dict[str, ast.expr] | None:
    """`self.x = value` of a constructor made only of those and a super().__init__ call."""
    if init is None:
        return {}
    assigned: dict[str, ast.expr] = {}
    for stmt in init.body:
        if isinstance(stmt, ast.Pass):
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            if _is_super_call(stmt.value.func, "__init__"):
                continue
            return None
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            name = _self_attr(stmt.targets[0])
            if name is None:
                return None
            assigned[name] = stmt.value
            continue
        return None
    return assigned


def _only_delegates(cls: ast.ClassDef) -> bool:
    methods = _methods(cls)
    if methods is None:
        return False
    assigned = _init_assignments(methods.get("__init__"))
    if assigned is None:
        return False
    models = {
        name
        for name, value in assigned.items()
        if isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id == "Model"
    }
    subclass = _is_model_base(cls)
    if not models and not subclass:
        return False
    forward = methods.get("forward")
    if forward is None:
        return subclass  # `class ModelNew(Model): pass` and friends
    return _delegates(forward, methods, assigned, models, subclass)


def _delegates(
    func: ast.FunctionDef,
    methods: dict[str, ast.FunctionDef],
    assigned: dict[str, ast.expr],
    models: set[str],
    subclass: bool,
) -> bool:
    """Whether `func` ends in the reference model's forward, following self.* indirections."""
    current = func
    for _ in range(_MAX_INDIRECTIONS):
        call = _single_call(current)
        if call is None or not _passes_through(call, current):
            return False
        if subclass and _is_super_call(call.func, "forward"):
            return True
        attr = _self_attr(call.func)
        if attr is None:
            return False
        if attr in models:
            return True
        target = assigned.get(attr)
        method_name = _self_attr(target) if target is not None else attr
        if method_name is None or method_name not in methods or method_name == "__init__":
            return False
        current = methods[method_name]
    return False


def is_behavioural_copy(result: EvalResult | None) -> bool:
    """The verdict of a copy in all but source: correct, outputs bit-identical to the
    reference on every trial (max_abs_err == 0.0), and neither side faster beyond the
    other's IQR (speedup within noise of 1.0). A real kernel that rounds differently, or
    wins beyond the noise, is not caught by this."""
    if result is None or not result.runnable or result.max_abs_err != 0.0:
        return False
    ref, new = result.ref_ms, result.new_ms
    if ref is None or new is None:
        return False
    faster = beyond_iqr(ref.median, ref.iqr, new.median, new.iqr)
    slower = beyond_iqr(new.median, new.iqr, ref.median, ref.iqr)
    return not faster and not slower
