"""Where the time of a model call goes: ``torch.profiler`` with per-module scopes.

Every module up to ``depth`` levels below the model (and every module of the classes named in
``by_class``, summed over their instances) gets a ``record_function`` scope around its forward,
so the profile gives each one's inclusive time next to the top operators. Backward time is not
attributed to modules (autograd runs outside the forward scopes): it appears as one phase.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

__all__ = ["format_profile", "module_scopes", "profile_call"]

_PREFIX = "module::"


@contextlib.contextmanager
def module_scopes(model: nn.Module, depth: int = 2, by_class: Iterable[str] = ()):
    """Profiler scopes ``module::<qualified name>`` (``module::<ClassName>`` for ``by_class``)
    around the forward of the model's modules, removed on exit."""
    by_class = set(by_class)
    handles, stack = [], []

    def hooks(label: str):
        def enter(*_: Any) -> None:
            scope = record_function(_PREFIX + label)
            scope.__enter__()
            stack.append(scope)

        def leave(*_: Any) -> None:
            stack.pop().__exit__(None, None, None)

        return enter, leave

    for name, module in model.named_modules():
        level = 0 if not name else name.count(".") + 1
        label = None
        if type(module).__name__ in by_class:
            label = type(module).__name__
        elif level <= depth:
            label = name or "(model)"
        if label is not None:
            enter, leave = hooks(label)
            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(leave))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def profile_call(
    fn: Callable[[], Any],
    model: nn.Module,
    *,
    depth: int = 2,
    by_class: Iterable[str] = (),
    top: int = 25,
) -> dict[str, Any]:
    """Profile one call of ``fn`` (CPU activity).

    Returns:
        ``total_ms`` (self CPU time of all events), ``modules``: ``[name, ms, share]`` rows of
        the module scopes by inclusive time (forward only), ``operators``: the ``top`` operators
        ``[name, self ms, share, calls]`` by self time, and ``table``: profiler's text table.
    """
    with module_scopes(model, depth, by_class), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    modules = sorted(
        (e for e in events if e.key.startswith(_PREFIX)), key=lambda e: -e.cpu_time_total
    )
    operators = sorted(
        (e for e in events if not e.key.startswith(_PREFIX)), key=lambda e: -e.self_cpu_time_total
    )[:top]
    return {
        "total_ms": total / 1000,
        "modules": [
            [e.key[len(_PREFIX) :], e.cpu_time_total / 1000, e.cpu_time_total / total]
            for e in modules
        ],
        "operators": [
            [e.key, e.self_cpu_time_total / 1000, e.self_cpu_time_total / total, e.count]
            for e in operators
        ],
        "table": events.table(sort_by="self_cpu_time_total", row_limit=top),
    }


def format_profile(title: str, result: dict[str, Any], rows: int = 15) -> str:
    """The module shares and the top operators of :func:`profile_call` as text."""
    lines = [f"{title}: {result['total_ms']:.0f} ms of CPU time in the profiled call"]
    lines.append("  module (forward, inclusive)                         ms   share")
    for name, ms, share in result["modules"]:
        lines.append(f"  {name[:48]:48s} {ms:9.1f}  {100 * share:5.1f}%")
    lines.append("  operator (self time)                                ms   share   calls")
    for name, ms, share, calls in result["operators"][:rows]:
        lines.append(f"  {name[:48]:48s} {ms:9.1f}  {100 * share:5.1f}%  {calls:6d}")
    return "\n".join(lines)
