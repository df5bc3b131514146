"""Mutation check: put each hand-written formula bug into a copy of gradtx and run its tests.

Run from the repository root: ``.venv/bin/python scripts/mutation.py`` (``make mutation``).
The bugs are listed in ``scripts/mutations.py``. For each one the package is copied to a
temporary directory, the ``old`` snippet (which must occur exactly once in its file) is replaced
by ``new``, and the mutation's tests run against the copy (``PYTHONPATH=<copy>``, ``python -P``
so the checkout's own ``gradtx`` is not imported). A mutation is *killed* when a test fails and
*survives* when all pass; the script exits non-zero when any survives, when a snippet is missing
or ambiguous, or when a run fails for another reason (no tests selected, a usage error).

Options: ``--list`` (check the snippets and print the mutations), ``--only NAME...``,
``--jobs N`` (mutations run in parallel, default 2), ``--extra FILE`` (run the ``MUTATIONS`` list
of another file instead, e.g. a draft list for a new module before it joins ``mutations.py``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gradtx"
PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "--no-header"]


def _load_mutations(path: pathlib.Path | None = None) -> list:
    sys.path.insert(0, str(ROOT / "scripts"))  # so a draft list can ``from mutations import M``
    spec = importlib.util.spec_from_file_location(
        "_mutations", path or ROOT / "scripts" / "mutations.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["_mutations"] = module  # NamedTuple needs the module importable by name
    spec.loader.exec_module(module)
    return module.MUTATIONS


def check_snippets(mutations: list) -> list[str]:
    """Problems: a snippet missing or ambiguous in its file, an unknown file, a duplicate name."""
    problems, seen = [], set()
    for m in mutations:
        if m.name in seen:
            problems.append(f"{m.name}: duplicate name")
        seen.add(m.name)
        path = PACKAGE / m.file
        if not path.is_file():
            problems.append(f"{m.name}: gradtx/{m.file} does not exist")
            continue
        n = path.read_text().count(m.old)
        if n != 1:
            what = "missing" if n == 0 else f"ambiguous ({n} occurrences)"
            problems.append(f"{m.name}: snippet {what} in gradtx/{m.file}: {m.old!r}")
        if m.old == m.new:
            problems.append(f"{m.name}: new equals old")
        if not m.tests:
            problems.append(f"{m.name}: no tests listed")
    return problems


def _env(copy_root: pathlib.Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy_root), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def _copy_package(dest: pathlib.Path) -> pathlib.Path:
    shutil.copytree(PACKAGE, dest / "gradtx", ignore=shutil.ignore_patterns("__pycache__"))
    return dest / "gradtx"


def check_isolation() -> None:
    """Fail loudly unless ``gradtx`` imports from the copy under the settings used for tests."""
    with tempfile.TemporaryDirectory(prefix="gradtx-mut-") as tmp:
        copy = _copy_package(pathlib.Path(tmp))
        out = subprocess.run(
            [sys.executable, "-P", "-c", "import gradtx; print(gradtx.__file__)"],
            cwd=ROOT,
            env=_env(pathlib.Path(tmp)),
            capture_output=True,
            text=True,
        )
        got = out.stdout.strip()
        want = str(copy / "__init__.py")
        if out.returncode != 0 or pathlib.Path(got).resolve() != pathlib.Path(want).resolve():
            sys.exit(
                f"mutation.py: gradtx must import from the copy {want}, got {got!r}\n{out.stderr}"
            )


def run_one(m) -> tuple[str, str, float]:
    """``(status, detail, seconds)``; status is killed, survived or error."""
    start = time.monotonic()
    runs = [r for r in m.tests if (ROOT / r.target.split("::")[0]).exists()]
    missing = [r.target for r in m.tests if r not in runs]
    note = f" (missing, not run: {', '.join(missing)})" if missing else ""
    if not runs:
        return "error", "none of the listed tests exist" + note, time.monotonic() - start
    with tempfile.TemporaryDirectory(prefix="gradtx-mut-") as tmp:
        copy = _copy_package(pathlib.Path(tmp))
        path = copy / m.file
        text = path.read_text()
        if text.count(m.old) != 1:
            return "error", "snippet missing or ambiguous", time.monotonic() - start
        path.write_text(text.replace(m.old, m.new))
        for r in runs:
            cmd = [sys.executable, "-P", "-m", "pytest", *PYTEST_ARGS, r.target]
            if r.k:
                cmd += ["-k", r.k]
            out = subprocess.run(
                cmd, cwd=ROOT, env=_env(pathlib.Path(tmp)), capture_output=True, text=True
            )
            what = r.target + (f" -k '{r.k}'" if r.k else "")
            if out.returncode == 1:
                failed = [ln for ln in out.stdout.splitlines() if ln.startswith("FAILED")]
                detail = failed[0][len("FAILED ") :] if failed else what
                return "killed", detail[:100] + note, time.monotonic() - start
            if out.returncode != 0:  # 2: interrupted/collection error, 4: usage, 5: no tests
                tail = (out.stdout + out.stderr).strip().splitlines()[-1:] or [""]
                return (
                    "error",
                    f"pytest exit {out.returncode} on {what}: {tail[0][:80]}",
                    time.monotonic() - start,
                )
    ran = "; ".join(r.target + (f" -k '{r.k}'" if r.k else "") for r in runs)
    return "survived", ran + note, time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutations")
    parser.add_argument("--list", action="store_true", help="check snippets and list mutations")
    parser.add_argument("--jobs", type=int, default=2, help="mutations run in parallel")
    parser.add_argument("--extra", type=pathlib.Path, help="run the MUTATIONS of this file")
    args = parser.parse_args(argv)

    mutations = _load_mutations(args.extra)
    problems = check_snippets(mutations)
    if problems:
        print("mutation.py: the mutations do not fit the code any more:", file=sys.stderr)
        for p in problems:
            print("  " + p, file=sys.stderr)
        return 2
    if args.only:
        known = {m.name for m in mutations}
        unknown = [n for n in args.only if n not in known]
        if unknown:
            print(f"mutation.py: unknown mutation(s): {', '.join(unknown)}", file=sys.stderr)
            return 2
        mutations = [m for m in mutations if m.name in set(args.only)]
    if args.list:
        width = max(len(m.name) for m in mutations)
        for m in mutations:
            tests = "; ".join(r.target + (f" -k '{r.k}'" if r.k else "") for r in m.tests)
            print(f"{m.name:<{width}}  gradtx/{m.file:<30}  {tests}")
        print(f"{len(mutations)} mutations, all snippets found exactly once")
        return 0

    check_isolation()
    width = max(len(m.name) for m in mutations)
    results = {}
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {m.name: pool.submit(run_one, m) for m in mutations}
        for m in mutations:
            status, detail, secs = futures[m.name].result()
            results[m.name] = status
            print(f"{m.name:<{width}}  {status:<8}  {secs:5.1f}s  {detail}", flush=True)
    counts = {s: sum(v == s for v in results.values()) for s in ("killed", "survived", "error")}
    line = f"{len(results)} mutations, {counts['killed']} killed, {counts['survived']} survived"
    if counts["error"]:
        line += f", {counts['error']} errors"
    print(f"{line} ({time.monotonic() - start:.0f}s)")
    return 1 if counts["survived"] or counts["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
