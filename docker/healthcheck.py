"""Container health probe: exit 0 when ``GET /v2/health/ready`` answers 200, else 1.

Standard library only (starts in tens of milliseconds, no curl needed in the image). It asks the service
on loopback at ``MADE_PORT``, ignores any HTTP proxy variables, and sends ``X-API-Key`` when
``MADE_API_KEY`` is set, so it works whatever the deployment configures.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

READY_PATH = "/v2/health/ready"
TIMEOUT_S = 4.0  # under the HEALTHCHECK --timeout (5 s), so a slow answer reports a reason


def probe(port: int, timeout_s: float, api_key: str | None = None) -> tuple[bool, str]:
    """One readiness request to ``127.0.0.1:port``; returns (ready, reason)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{READY_PATH}")
    if api_key:
        request.add_header("X-API-Key", api_key)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    try:
        with opener.open(request, timeout=timeout_s) as response:
            return response.status == 200, f"HTTP {response.status}"
    except urllib.error.HTTPError as e:
        return False, f"HTTP {e.code}"
    except (urllib.error.URLError, OSError) as e:
        return False, str(getattr(e, "reason", e))


def main() -> int:
    """Probe using the container's own settings; the exit status is what Docker's HEALTHCHECK reads."""
    try:
        port = int(os.environ.get("MADE_PORT", "8000"))
    except ValueError:
        print(f"healthcheck: MADE_PORT={os.environ['MADE_PORT']!r} is not a port number", file=sys.stderr)
        return 1
    ready, reason = probe(port, TIMEOUT_S, os.environ.get("MADE_API_KEY") or None)
    if not ready:
        print(f"healthcheck: not ready ({reason})", file=sys.stderr)
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main())
