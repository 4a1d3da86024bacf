"""`a3e standards validate FILE…`: check catalog files before importing them into a workspace.

Prints one line per problem, each naming the line (CSV) or the item (JSON, YAML) and what is
wrong; exits 0 when every file is valid and 1 otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from a3e.standards.validator import MAX_FILE_BYTES, CatalogInvalid, Problem, parse_catalog


def check_file(path: str, fmt: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"file": path, "valid": False, "problems": []}
    file = Path(path)
    try:
        with file.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        result["problems"] = [Problem("file", f"cannot read it: {exc.strerror or exc}").as_dict()]
        return result
    try:
        parsed = parse_catalog(data, fmt, filename=file.name)
    except CatalogInvalid as exc:
        result["problems"] = [problem.as_dict() for problem in exc.problems]
        if exc.more:
            result["more_problems"] = exc.more
        return result
    result.update(
        valid=True,
        format=parsed.format,
        items=len(parsed.items),
        top_level=parsed.roots,
        depth=parsed.depth,
        name=parsed.name,
        version=parsed.version,
    )
    return result


def validate_files(paths: list[str], *, fmt: str | None = None, as_json: bool = False) -> int:
    results = [check_file(path, fmt) for path in paths]
    if as_json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2, ensure_ascii=False))
    else:
        for result in results:
            _print_result(result)
    return 0 if all(result["valid"] for result in results) else 1


def _print_result(result: dict[str, Any]) -> None:
    if result["valid"]:
        named = f" ({result['name']}{' ' + result['version'] if result.get('version') else ''})" if result.get("name") else ""
        print(
            f"{result['file']}: valid {result['format'].upper()} catalog{named}: {result['items']} items, "
            f"{result['top_level']} at the top level, {result['depth']} level{'s' if result['depth'] != 1 else ''} deep"
        )
        return
    problems = result["problems"]
    total = len(problems) + result.get("more_problems", 0)
    print(f"{result['file']}: invalid: {total} problem{'s' if total != 1 else ''}", file=sys.stdout)
    for problem in problems:
        print(f"  {problem['location']}: {problem['message']}")
    if result.get("more_problems"):
        print(f"  … and {result['more_problems']} more")
