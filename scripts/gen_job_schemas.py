"""Write supabase/functions/_shared/job-schemas.json from executor/jobtypes.py.

    .venv/bin/python scripts/gen_job_schemas.py          # rewrite the file
    .venv/bin/python scripts/gen_job_schemas.py --check  # exit 1 if it is stale

The file holds each job type create-job takes: its params schema (from the pydantic model
in executor/jobparams.py the executor parses jobs with) and, under job_type_rules, its
risk, window rule, target kinds, handler and the planning hints create-job's planJob reads
(executor/jobtypes.py declares them). tests/unit/test_jobparams.py fails when the file
drifts from the declarations.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "supabase" / "functions" / "_shared" / "job-schemas.json"


def render() -> str:
    sys.path.insert(0, str(ROOT))
    from executor.jobtypes import json_schemas

    return json.dumps(json_schemas(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if the committed file is stale")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT.relative_to(ROOT)} is stale: run scripts/gen_job_schemas.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
