#!/usr/bin/env bash
# System packages the test suite needs (nginx and docker-compose for deployment checks, chromium for
# the web-page test). Installed only when missing; apt needs root (CI runs as root).
set -euo pipefail
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v chromium >/dev/null || need+=(chromium)
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
