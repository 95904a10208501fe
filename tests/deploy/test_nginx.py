"""The scale-out nginx config: ``nginx -t`` passes, and its limits match the service's own defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.config import Settings

from . import nginx
from .conftest import free_port

pytestmark = pytest.mark.skipif(
    nginx.NGINX is None, reason="nginx not installed (.ci/system-deps.sh installs it)"
)

SITE = nginx.SHIPPED.read_text()


def directive(name: str) -> list[str]:
    """Arguments of every ``name ...;`` line in the shipped site config."""
    return [m.group(1).strip() for m in re.finditer(rf"^\s*{name}\s+([^;]*);", SITE, flags=re.M)]


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", value)
    assert m, value
    return int(m.group(1)) * units[m.group(2) or "s"]


def test_config_passes_nginx_t(tmp_path: Path) -> None:
    nginx.render(tmp_path, ["127.0.0.1:18001", "127.0.0.1:18002"], free_port())
    out = nginx.check(tmp_path)
    assert out.returncode == 0, out.stderr


def test_nginx_t_rejects_a_broken_config(tmp_path: Path) -> None:
    nginx.render(tmp_path, ["127.0.0.1:18001"], free_port())
    site = tmp_path / "conf/made.conf"
    site.write_text(site.read_text().replace("least_conn;", "least_conn 3;"))
    out = nginx.check(tmp_path)
    assert out.returncode != 0 and "least_conn" in out.stderr


def test_limits_match_the_service_defaults() -> None:
    defaults = Settings.model_fields
    (body,) = directive("client_max_body_size")
    assert body.lower() == f"{defaults['max_body_bytes'].default // (1024 * 1024)}m"
    assert "8388608" in SITE and str(defaults["max_body_bytes"].default) == "8388608"
    deadline = defaults["request_timeout_s"].default
    (read,) = directive("proxy_read_timeout")
    (send,) = directive("proxy_send_timeout")
    assert deadline < seconds(read) <= deadline + 30, (
        "the service's own 504 must arrive before nginx gives up"
    )
    assert seconds(send) >= deadline


def test_balancing_and_failover_directives() -> None:
    upstream = re.search(r"upstream\s+made_backends\s*\{(.*?)\}", SITE, flags=re.S)
    assert upstream and "least_conn;" in upstream.group(1) and "zone " in upstream.group(1)
    (retry,) = directive("proxy_next_upstream")
    assert {"error", "timeout", "http_503"} <= set(retry.split())
    servers = [ln for ln in nginx.UPSTREAM.read_text().splitlines() if ln.startswith("server ")]
    assert servers and all("max_fails=" in s and "fail_timeout=" in s for s in servers)
    assert directive("proxy_pass") == ["http://made_backends"]
