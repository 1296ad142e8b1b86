"""Every moekit workflow: ``nox -l`` lists them; ``nox -s ci`` is what CI runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = False
nox.options.sessions = ["ci"]

# torch versions of the conformance matrix. 2.13.0 (CPU build) and 2.14.1 lie on this project's
# machines' disk; any other version is skipped with a message if it cannot be installed.
TORCH_VERSIONS = ["2.13.0", "2.14.1"]
DEFAULT_TORCH = "2.13.0"
# The CPU build of torch brings no Triton; this one runs the kernels under the interpreter.
INTERPRETER_TRITON = "triton==3.8.0"

PACKAGES = {  # name -> (path, local moekit dependencies, needs torch)
    "reference": ("reference", [], False),
    "conformance": ("conformance", ["reference"], False),
    "align": ("packages/align", [], True),
    "routing": ("packages/routing", [], True),
    "experts": ("packages/experts", ["align", "routing"], True),
    "eplb": ("packages/eplb", [], True),
}
# Packages a package's unit tests import besides its own dependencies (the NumPy oracle).
TEST_DEPS = {"routing": ["reference"], "experts": ["reference", "eplb"],
             "eplb": ["reference", "routing"]}  # fmt: skip
# PyPI packages a package's unit tests need beyond its own dependencies (its extras).
TEST_EXTRAS = {"experts": ["safetensors"]}
CONFORMANCE_IMPLS = ["reference", "moekit[torch,cpu]", "moekit[triton,cpu]"]
INTERPRETER_ENV = {"TRITON_INTERPRET": "1"}
# Sessions that ``ci`` runs in a second nox process beside the others, so that both cores work:
# the experts' tests alone take about as long as every other session together.
CI_BACKGROUND = ["tests(package='experts')"]
_background: list[tuple[str, subprocess.Popen, Path]] = []


def _install_torch(session: nox.Session, version: str) -> None:
    """Install torch==version, or skip the session when no index or local source offers it.

    Availability is probed with a dry run first, so that a real failure of the install itself
    (a full disk, a broken wheel) fails the session instead of skipping it."""
    try:
        session.run("python", "-m", "pip", "install", "--dry-run", "--no-deps", "-q",
                    f"torch=={version}", silent=True)  # fmt: skip
    except nox.command.CommandFailed:
        session.skip(
            f"torch=={version} is not available here (not on local disk and not downloadable): "
            "skipped, not failed"
        )
    session.install(f"torch=={version}", silent=True)


def _paths(*names: str) -> list[str]:
    return [str(ROOT / PACKAGES[name][0]) for name in names]


def _pytest(session: nox.Session, *args: str, env: dict[str, str] | None = None) -> None:
    """pytest, where 'no tests collected' (exit 5) is a failure of the session's setup."""
    session.run("python", "-m", "pytest", *args, *session.posargs, env=env)


@nox.session
@nox.parametrize("package", list(PACKAGES))
def tests(session: nox.Session, package: str) -> None:
    """Unit tests of one package, in a venv holding only it and its dependencies."""
    path, local_deps, needs_torch = PACKAGES[package]
    if needs_torch or package == "conformance":
        _install_torch(session, DEFAULT_TORCH)
    extras = (
        [INTERPRETER_TRITON]
        if package in ("align", "routing", "experts", "eplb", "conformance")
        else []
    )
    to_install = _paths(*local_deps, *TEST_DEPS.get(package, []), package)
    if package == "conformance":
        to_install += _paths("align", "routing", "experts", "eplb")  # its tests load the adapter
    extras += TEST_EXTRAS.get(package, [])
    session.install(*to_install, *extras, "pytest", "hypothesis")
    _pytest(session, "-q", "-m", "not distributed", str(ROOT / path / "tests"),
            env=INTERPRETER_ENV)  # fmt: skip


@nox.session
def distributed(session: nox.Session) -> None:
    """The FusedMoE layer over torch.distributed: gloo, 2 and 4 processes on this machine
    (the batched Triton experts under the interpreter too)."""
    _install_torch(session, DEFAULT_TORCH)
    session.install(*_paths("align", "routing", "eplb", "experts"), INTERPRETER_TRITON, "pytest")
    test_file = ROOT / "packages" / "experts" / "tests" / "test_distributed.py"
    _pytest(session, "-q", "-m", "distributed", str(test_file), env=INTERPRETER_ENV)


@nox.session
@nox.parametrize("torch", TORCH_VERSIONS)
def conformance(session: nox.Session, torch: str) -> None:
    """The conformance suite against reference, moekit[torch] and moekit[triton] (interpreter)."""
    _install_torch(session, torch)
    session.install(*_paths("reference", "align", "routing", "experts", "eplb", "conformance"))
    session.run(
        "python",
        "-c",
        "import importlib.util, subprocess, sys; "
        "sys.exit(0) if importlib.util.find_spec('triton') else "
        f"subprocess.check_call([sys.executable, '-m', 'pip', 'install', '-q', "
        f"'{INTERPRETER_TRITON}'])",
    )
    for impl in CONFORMANCE_IMPLS:
        session.log(f"conformance: torch {torch}, implementation {impl}")
        _pytest(
            session, "-q", "-p", "no:cacheprovider", "--pyargs", "moekit.conformance.cases",
            "--moekit-impl", impl, env=INTERPRETER_ENV,
        )  # fmt: skip


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy on the public API of the packages."""
    _install_torch(session, DEFAULT_TORCH)
    session.install(
        *_paths("reference", "align", "routing", "experts", "eplb", "conformance"),
        "mypy",
        INTERPRETER_TRITON,
    )
    session.run(
        "mypy", "--ignore-missing-imports", "--follow-imports=silent",
        "-p", "moekit.align", "-p", "moekit.routing", "-p", "moekit.experts",
        "-p", "moekit.eplb", "-p", "moekit.reference",
    )  # fmt: skip


@nox.session
def docs(session: nox.Session) -> None:
    """Run every code block of the docs, then build the site strictly into site/."""
    _install_torch(session, DEFAULT_TORCH)
    session.install(*_paths("reference", "align", "conformance", "routing", "experts", "eplb"),
                    "mkdocs-material", "mkdocstrings-python", "pytest", "safetensors")  # fmt: skip
    _pytest(session, "-q", "-p", "no:cacheprovider", str(ROOT / "docs" / "_tests"))
    session.run("mkdocs", "build", "--strict", "--site-dir", str(ROOT / "site"))


@nox.session(name="docs-check")
def docs_check(session: nox.Session) -> None:
    """Build the site, serve it on localhost and open every page in headless Chromium (Debian's,
    installed here when missing): no console errors, the search answers, and screenshots of the
    home and benchmarks pages in docs-check-out/."""
    if shutil.which("chromium") is None:
        session.log("chromium is missing: installing Debian's package")
        session.run("apt-get", "install", "-y", "-q", "chromium", external=True, silent=True)
    _install_torch(session, DEFAULT_TORCH)
    session.install(*_paths("reference", "align", "conformance", "routing", "experts", "eplb"),
                    "mkdocs-material", "mkdocstrings-python", "playwright")  # fmt: skip
    site = Path(session.create_tmp()) / "site"
    session.run("mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site))
    session.run("python", str(ROOT / "docs" / "_tests" / "check_site.py"), str(site),
                "--chromium", shutil.which("chromium") or "/usr/bin/chromium",
                "--out", str(ROOT / "docs-check-out"))  # fmt: skip


@nox.session
def demo(session: nox.Session) -> None:
    """The README's main command: a DeepSeek-style MoE layer serves a skewed stream, checked
    against the NumPy reference, then rebalanced by EPLB (plot in demo-out/)."""
    _install_torch(session, DEFAULT_TORCH)
    session.install(*_paths("reference", "align", "routing", "eplb"),
                    f"{ROOT / PACKAGES['experts'][0]}[eplb,checkpoint]", "tqdm", "matplotlib")  # fmt: skip
    session.run("python", str(ROOT / "examples" / "moe_layer_demo.py"),
                "--plot", str(ROOT / "demo-out" / "eplb_rank_load.png"), *session.posargs)  # fmt: skip


@nox.session(name="demo-align")
def demo_align(session: nox.Session) -> None:
    """The alignment demo: a skewed routed batch aligned by each backend."""
    _install_torch(session, DEFAULT_TORCH)
    session.install(*_paths("reference", "align"), INTERPRETER_TRITON)
    session.run(
        "python", str(ROOT / "examples" / "align_demo.py"), *session.posargs, env=INTERPRETER_ENV
    )


@nox.session
def bench(session: nox.Session) -> None:
    """GPU benchmarks (on a machine with CUDA, using its installed torch and triton)."""
    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    try:
        session.run("python", "-c", probe, silent=True)
    except nox.command.CommandFailed:
        session.skip("no CUDA GPU here: the benchmarks run on a GPU machine")
    session.install("--no-deps", *_paths("align", "routing", "experts", "eplb"))
    out_dir = Path(session.posargs[0]) if session.posargs else ROOT / "bench-out"
    for name, script_name in (("align", "bench_align"), ("routing", "bench_routing"),
                              ("experts", "bench_fused_moe"), ("eplb", "bench_hook")):  # fmt: skip
        script = ROOT / "benchmarks" / name / f"{script_name}.py"
        session.run("python", str(script), "--out", str(out_dir / f"{name}.json"))


@nox.session(name="bench-eplb")
def bench_eplb(session: nox.Session) -> None:
    """The EPLB policies at DeepSeek-V3 scale on this CPU (about half an hour on 2 cores):
    rewrites benchmarks/results/eplb_cpu.json and the docs' plot."""
    _install_torch(session, DEFAULT_TORCH)
    session.install(*_paths("eplb"), "matplotlib")
    session.run("python", str(ROOT / "benchmarks" / "eplb" / "bench_eplb.py"),
                "--out", str(ROOT / "benchmarks" / "results" / "eplb_cpu.json"),
                "--plot", str(ROOT / "docs" / "assets" / "eplb_balancedness.png"), *session.posargs)  # fmt: skip


@nox.session
def plots(session: nox.Session) -> None:
    """Redraw the docs' plots from the committed results (no GPU, no re-measuring)."""
    _install_torch(session, DEFAULT_TORCH)
    session.install(*_paths("eplb"), "matplotlib")
    results, assets = ROOT / "benchmarks" / "results", ROOT / "docs" / "assets"
    session.run("python", str(ROOT / "benchmarks" / "experts" / "bench_fused_moe.py"),
                "--from", str(results / "experts_h100.json"), "--plot", str(assets / "experts_h100.png"))  # fmt: skip
    session.run("python", str(ROOT / "benchmarks" / "eplb" / "bench_eplb.py"), "--plot-only",
                "--out", str(results / "eplb_cpu.json"), "--plot", str(assets / "eplb_balancedness.png"))  # fmt: skip


@nox.session
def build(session: nox.Session) -> None:
    """Wheel + sdist of every package; each wheel then installed alone in a fresh venv."""
    session.install("build")
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    for name, (path, _, _) in PACKAGES.items():
        session.run("python", "-m", "build", "--outdir", str(dist / name), str(ROOT / path))
    for name, (_, local_deps, needs_torch) in PACKAGES.items():
        venv = Path(session.create_tmp()) / f"alone-{name}"
        session.run("python", "-m", "venv", "--clear", str(venv))
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        wheels = [str(next((dist / dep).glob("*.whl"))) for dep in [*local_deps, name]]
        if needs_torch:
            session.run(*pip, f"torch=={DEFAULT_TORCH}", external=True)
        session.run(*pip, *wheels, external=True)
        session.run(str(venv / "bin" / "python"), "-c", f"import moekit.{name}", external=True)


@nox.session
def ci(session: nox.Session) -> None:
    """What .ci/run runs: lint, every package's tests, conformance on every torch, docs. The
    sessions of ``CI_BACKGROUND`` run in a second nox process meanwhile; ``ci-join`` waits for
    them and fails if any failed."""
    for target in CI_BACKGROUND:
        log = ROOT / ".nox" / f"ci-background-{len(_background)}.log"
        log.parent.mkdir(exist_ok=True)
        with log.open("w") as out:
            command = [sys.executable, "-m", "nox", "-f", str(ROOT / "noxfile.py"), "-s", target]
            if session.posargs:  # pytest's extra arguments reach these sessions too
                command += ["--", *session.posargs]
            process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        session.log(f"started {target} in the background (log: {log})")
        _background.append((target, process, log))
    for target in ["lint", *(f"tests(package='{p}')" for p in PACKAGES), "distributed"]:
        if target not in CI_BACKGROUND:
            session.notify(target)
    for version in TORCH_VERSIONS:
        session.notify(f"conformance(torch='{version}')")
    session.notify("docs")
    session.notify("ci-join")
    if os.environ.get("CI"):
        session.log("CI=true: hypothesis runs its derandomised 'ci' profile")


@nox.session(name="ci-join", python=False)
def ci_join(session: nox.Session) -> None:
    """Wait for the sessions ``ci`` started in the background; show each log's end; fail if any
    failed."""
    failed = []
    for target, process, log in _background:
        code = process.wait()
        session.log(f"{target} (background) exited {code}; the end of {log}:")
        print(log.read_text()[-6000:], flush=True)
        if code:
            failed.append(target)
    if failed:
        session.error(f"failed in the background: {', '.join(failed)}")
