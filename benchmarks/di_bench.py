"""aspyx_di benchmark: ratios against hand-written baselines measured in the same process.

(a) hot singleton `get` vs a dict lookup, (b) a transient graph `A(B(D), C(D))` vs
`A(B(D()), C(D()))` written by hand, (c) building an Environment of 100 generated classes
plus resolving the last one (classes seen before; never-seen classes are printed for
information). Plain injector runs the same graphs. Every measurement is the median of
interleaved repeats, so machine noise hits baseline and subject alike; the garbage collector
is paused while a sample is timed, as `timeit` does.

Run: python benchmarks/di_bench.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import statistics
import sys
import time
import types
from collections.abc import Callable
from typing import Any

import injector

from aspyx_di import Environment, injectable, module

_counter = itertools.count()


def per_call(func: Callable[[], Any], calls: int) -> float:
    """Seconds per call of `func`, timed over `calls` calls (loop overhead included)."""
    start = time.perf_counter()
    for _ in itertools.repeat(None, calls):
        func()
    return (time.perf_counter() - start) / calls


def interleaved(subjects: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median seconds of each subject, run in turn `repeats` times.

    As `timeit` does, the garbage collector is collected before and disabled during each
    sample, so one subject's garbage is not collected inside another subject's timing.
    """
    samples: dict[str, list[float]] = {name: [] for name in subjects}
    for _ in range(repeats):
        for name, run in subjects.items():
            gc.collect()
            gc.disable()
            try:
                samples[name].append(run())
            finally:
                gc.enable()
    return {name: statistics.median(values) for name, values in samples.items()}


def synthetic_module(name: str) -> types.ModuleType:
    """A new, importable Python module to define generated classes in."""
    python_module = types.ModuleType(name)
    sys.modules[name] = python_module
    return python_module


def define(python_module: types.ModuleType, name: str, deps: list[type], **bean: Any) -> type:
    """A class in `python_module` whose constructor takes `deps` (annotated), as a bean."""
    params = ", ".join(f"d{i}: T{i}" for i in range(len(deps)))
    body = "".join(f"    self.d{i} = d{i}\n" for i in range(len(deps))) or "    pass\n"
    namespace: dict[str, Any] = {f"T{i}": dep for i, dep in enumerate(deps)}
    exec(f"def __init__(self{', ' if deps else ''}{params}):\n{body}", namespace)
    cls = type(name, (), {"__init__": namespace["__init__"], "__module__": python_module.__name__})
    setattr(python_module, name, cls)
    return injectable(**bean)(cls) if bean is not None else cls


def transient_graph() -> tuple[type, ...]:
    python_module = synthetic_module(f"bench_transient_{next(_counter)}")
    d = define(python_module, "D", [], scope="request")
    b = define(python_module, "B", [d], scope="request")
    c = define(python_module, "C", [d], scope="request")
    a = define(python_module, "A", [b, c], scope="request")
    python_module.M = module()(type("M", (), {"__module__": python_module.__name__}))
    return python_module.M, a, b, c, d


def wide_graph(size: int) -> tuple[type, list[type]]:
    """`size` fresh singleton classes, each depending on up to two earlier ones (log depth)."""
    python_module = synthetic_module(f"bench_graph_{next(_counter)}")
    classes: list[type] = []
    for i in range(size):
        deps = list(dict.fromkeys(classes[j] for j in (i // 2, i // 3) if j < i))
        classes.append(define(python_module, f"C{i}", deps))
    python_module.M = module()(type("M", (), {"__module__": python_module.__name__}))
    return python_module.M, classes


def injector_for(classes: list[type], singleton: bool) -> injector.Injector:
    scope = injector.singleton if singleton else injector.noscope

    def configure(binder: injector.Binder) -> None:
        for cls in classes:
            binder.bind(cls, to=cls, scope=scope)

    return injector.Injector([configure], auto_bind=False)


def bench_hot_get(repeats: int) -> dict[str, float]:
    module_class, classes = wide_graph(3)
    target = classes[-1]
    environment = Environment(module_class)
    lookup = {target: environment.get(target)}
    _, plain_classes = wide_graph(3)  # injector's @inject wraps __init__: give it its own copies
    plain = injector_for([injector.inject(cls) for cls in plain_classes], singleton=True)
    plain_target = plain_classes[-1]
    calls = 200_000
    get, inj_get = environment.get, plain.get

    def loop_dict() -> float:
        start = time.perf_counter()
        for _ in itertools.repeat(None, calls):
            lookup[target]
        return (time.perf_counter() - start) / calls

    def loop_env() -> float:
        start = time.perf_counter()
        for _ in itertools.repeat(None, calls):
            get(target)
        return (time.perf_counter() - start) / calls

    return interleaved(
        {
            "dict lookup": loop_dict,
            "aspyx_di get": loop_env,
            "injector get": lambda: per_call(lambda: inj_get(plain_target), calls // 20),
        },
        repeats,
    )


def bench_transient(repeats: int) -> dict[str, float]:
    module_class, a, b, c, d = transient_graph()
    environment = Environment(module_class)
    get = environment.get
    _, *plain_classes = transient_graph()
    inject_classes = [injector.inject(cls) for cls in plain_classes]
    plain = injector_for(inject_classes, singleton=False)
    calls = 50_000
    return interleaved(
        {
            "hand-written": lambda: per_call(lambda: a(b(d()), c(d())), calls),
            "aspyx_di get": lambda: per_call(lambda: get(a), calls),
            "injector get": lambda: per_call(lambda: plain.get(inject_classes[0]), calls // 20),
        },
        repeats,
    )


def bench_build(repeats: int, size: int = 100) -> dict[str, float]:
    warm_module, warm_classes = wide_graph(size)
    Environment(warm_module)  # reads the classes' signatures once, as any second build would

    def build_warm() -> float:
        start = time.perf_counter()
        Environment(warm_module).get(warm_classes[-1])
        return time.perf_counter() - start

    def build_cold() -> float:
        module_class, classes = wide_graph(size)  # never seen: every signature read now
        start = time.perf_counter()
        Environment(module_class).get(classes[-1])
        return time.perf_counter() - start

    def build_injector() -> float:
        _, classes = wide_graph(size)
        inject_classes = [injector.inject(cls) for cls in classes]
        start = time.perf_counter()
        injector_for(inject_classes, singleton=True).get(inject_classes[-1])
        return time.perf_counter() - start

    return interleaved(
        {"aspyx_di": build_warm, "aspyx_di cold": build_cold, "injector": build_injector}, repeats
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    repeats = parser.parse_args().repeats

    hot = bench_hot_get(repeats)
    transient = bench_transient(repeats)
    build = bench_build(repeats)
    rows = [
        (
            "(a) hot singleton get",
            hot["aspyx_di get"] / hot["dict lookup"],
            3.0,
            hot["injector get"] / hot["dict lookup"],
            f"{hot['aspyx_di get'] * 1e9:.0f} ns",
        ),
        (
            "(b) transient A(B(D),C(D))",
            transient["aspyx_di get"] / transient["hand-written"],
            2.0,
            transient["injector get"] / transient["hand-written"],
            f"{transient['aspyx_di get'] * 1e6:.2f} us",
        ),
    ]
    print(f"{'measure':<30}{'aspyx_di':>12}{'target':>9}{'injector':>12}   absolute")
    for name, ratio, target, plain, absolute in rows:
        verdict = "ok" if ratio <= target else "MISSED"
        print(f"{name:<30}{ratio:>11.2f}x{target:>8.1f}x{plain:>11.1f}x   {absolute} {verdict}")
    build_ms, plain_ms = build["aspyx_di"] * 1e3, build["injector"] * 1e3
    verdict = "ok" if build_ms <= 1.0 else "MISSED"
    label = "(c) build + resolve 100"
    print(f"{label:<30}{build_ms:>10.2f}ms{1.0:>7.1f}ms{plain_ms:>10.2f}ms   {verdict}")
    cold_ms = build["aspyx_di cold"] * 1e3
    print(
        f"{'(c) same, never-seen classes':<30}{cold_ms:>10.2f}ms{'':>9}{plain_ms:>10.2f}ms   (info)"
    )


if __name__ == "__main__":
    main()
