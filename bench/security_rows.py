"""Issue 13, rows 16, 17 and 19 in full: their suite tests already enumerate every route,
caller, state-changing form and page (there is nothing larger to run), so the full run is
those tests with their figures printed, one line per matrix, and the totals.

    .venv/bin/python -m bench.security_rows
"""

from __future__ import annotations

import subprocess
import sys

TESTS = ["tests/security/test_route_matrix.py", "tests/security/test_edge_page.py",
         "tests/security/test_portal_sessions.py", "tests/security/test_xss.py"]


def main() -> int:
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:warnings", *TESTS],
                          capture_output=True, text=True, check=False)
    lines = done.stdout.splitlines()
    for line in lines:
        if line.lstrip(".FEs").startswith("row "):
            print(line.lstrip(".FEs"))
    print(lines[-1] if lines else done.stderr[-2000:])
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
