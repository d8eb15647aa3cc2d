#!/usr/bin/env python3
"""Audit the installed distributions against PyPI's advisories, using only `/pypi/<name>/json`.

Why this exists: `pip-audit` looks every package up at the version-specific endpoint
`https://pypi.org/pypi/<name>/<version>/json`, which answers 404 on some machines (this project's
build machine among them); pip-audit then skips every package and still reports "No known
vulnerabilities found". Where that endpoint is reachable, use `pip-audit`: it is the real audit.

What this can tell: the unversioned endpoint gives the latest release, all release numbers, and
the advisories (OSV/PYSEC/GHSA) affecting *the latest release only*. So a package is `clean` when
it is installed at the latest release and that release has no advisory; `vulnerable-latest` when
the latest release itself has advisories (listed with their `fixed_in`); `behind` when an older
release is installed: its own advisories cannot be read from this endpoint (the count of newer
releases says how far behind it is); `not-on-pypi` for local/file installs or failed look-ups.

Usage: python scripts/audit_dependencies.py [--json FILE] [--markdown FILE]. Exit status 1 if a
`vulnerable-latest` package is installed at a possibly affected version, 2 if PyPI is unreachable.
"""
from __future__ import annotations

import argparse, json, os, re, sys, tempfile, time, urllib.error, urllib.request
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Any, Iterable

try:
    from packaging.version import InvalidVersion, Version
except ImportError:  # fallback: numeric release tuple, pre-releases not recognised
    class InvalidVersion(ValueError): ...  # type: ignore[no-redef]

    class Version(tuple):  # type: ignore[no-redef]
        is_prerelease, release = False, property(tuple)

        def __new__(cls, s: str) -> "Version":
            if not (m := re.match(r"v?(\d+(?:\.\d+)*)", s.strip())):
                raise InvalidVersion(s)
            return super().__new__(cls, ([int(p) for p in m.group(1).split(".")] + [0] * 6)[:6])

PYPI = "https://pypi.org/pypi/{}/json"
Record = dict[str, Any]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def ver(s: str) -> Version | None:
    try:
        return Version(s)
    except InvalidVersion:
        return None


def installed() -> dict[str, tuple[str, str, str | None]]:
    """normalised name -> (name, version, local install URL or None); first on sys.path wins."""
    found: dict[str, tuple[str, str, str | None]] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name or norm(name) in found:
            continue
        url = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
        found[norm(name)] = (name, dist.version, url if url.startswith("file:") else None)
    return found


def fetch(name: str, retries: int = 2) -> dict[str, Any]:
    for attempt in range(retries + 1):
        try:
            with urllib.request.urlopen(PYPI.format(name), timeout=20) as resp:
                return json.load(resp)
        except (urllib.error.URLError, OSError, ValueError) as e:  # HTTPError is a URLError
            if attempt == retries or getattr(e, "code", None) == 404:
                raise
        time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def newer_releases(data: dict[str, Any], current: Version) -> int:
    """Final releases newer than `current` that have at least one non-yanked file."""
    return sum(1 for v, files in data.get("releases", {}).items()
               if (pv := ver(v)) and not pv.is_prerelease and pv > current
               and any(not f.get("yanked") for f in files))


def maybe_affected(inst: Version | None, latest: Version | None, fixed: Iterable[str]) -> bool:
    """The latest is affected; an older install is assumed affected unless it is at or past a fix
    on its own release line (same major.minor), e.g. a backport."""
    if inst is None or latest is None or inst == latest:
        return True
    if inst > latest:  # a pre-release newer than the latest final
        return False
    return not any((fv := ver(f)) and fv.release[:2] == inst.release[:2] and inst >= fv
                   for f in fixed)


def classify(key: str, name: str, version: str, local: str | None) -> Record:
    rec: Record = {"name": name, "installed": version}
    if local:
        return rec | {"status": "not-on-pypi", "error": f"installed from {local}; not looked up"}
    try:
        data = fetch(key)
    except Exception as e:  # noqa: BLE001 - every failure is reported, not raised
        return rec | {"status": "not-on-pypi", "error": f"{type(e).__name__}: {e}"}
    latest = data["info"]["version"]
    inst_v, latest_v = ver(version), ver(latest)
    same = version == latest or (inst_v is not None and inst_v == latest_v)
    vulns = [{"id": v.get("id"), "aliases": v.get("aliases") or [],
              "fixed_in": v.get("fixed_in") or [], "link": v.get("link"),
              "summary": (v.get("summary") or v.get("details") or "")[:200]}
             for v in data.get("vulnerabilities") or [] if not v.get("withdrawn")]
    rec |= {"latest": latest, "installed_is_latest": same}
    if vulns:
        fixed = [f for v in vulns for f in v["fixed_in"]]
        return rec | {"status": "vulnerable-latest", "vulnerabilities": vulns,
                      "maybe_affected": maybe_affected(inst_v, latest_v, fixed)}
    if same:
        return rec | {"status": "clean"}
    newer = newer_releases(data, inst_v) if inst_v else None
    return rec | {"status": "behind", "newer_releases": newer}


def note(r: Record) -> str:
    if r["status"] == "vulnerable-latest":
        ids = "; ".join(f"{v['id']} ({', '.join(v['aliases']) or '-'}) "
                        f"fixed in {', '.join(v['fixed_in']) or '-'}" for v in r["vulnerabilities"])
        if r["installed_is_latest"]:
            return "AFFECTED: " + ids
        return ("maybe affected: " if r["maybe_affected"] else "") + ids
    if r["status"] == "behind":
        return f"{r['newer_releases']} newer release(s); installed version not checkable here"
    return r.get("error", "")


def markdown(records: list[Record], summary: dict[str, int]) -> str:
    lines = ["| package | installed | latest | status | note |", "|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['installed']} | {r.get('latest', '-')} | {r['status']} "
              f"| {note(r)} |" for r in records]
    return "\n".join(lines + ["", ", ".join(f"{k}: {v}" for k, v in summary.items())]) + "\n"


def write_atomic(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default="build/audit/dependencies.json", help="JSON report path")
    ap.add_argument("--markdown", help="write the Markdown table here instead of stdout")
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args()
    try:
        fetch("pip")
    except Exception as e:  # noqa: BLE001
        print(f"error: cannot reach pypi.org ({PYPI.format('pip')}): {e}", file=sys.stderr)
        return 2
    dists = installed()
    print(f"looking up {len(dists)} distributions on PyPI ...", file=sys.stderr)
    with ThreadPoolExecutor(args.workers) as pool:
        results: Iterable[Record] = pool.map(lambda kv: classify(kv[0], *kv[1]),
                                             sorted(dists.items()))
        try:
            from tqdm import tqdm
            results = tqdm(results, total=len(dists), unit="pkg", file=sys.stderr)
        except ImportError:
            pass
        records = list(results)
    order = ["vulnerable-latest", "behind", "not-on-pypi", "clean"]
    records.sort(key=lambda r: (order.index(r["status"]), norm(r["name"])))
    summary = {k: sum(r["status"] == k for r in records) for k in order}
    report = {"python": sys.executable, "date": time.strftime("%Y-%m-%d"), "source": PYPI,
              "summary": summary, "packages": records}
    write_atomic(args.json, json.dumps(report, indent=2) + "\n")
    table = markdown(records, summary)
    if args.markdown:
        write_atomic(args.markdown, table)
    else:
        print(table, end="")
    print(f"{summary} -> {args.json}", file=sys.stderr)
    return int(any(r.get("maybe_affected") for r in records))


if __name__ == "__main__":
    sys.exit(main())
