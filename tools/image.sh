#!/usr/bin/env bash
# Build the operator image from the Dockerfile with docker or podman, whichever is installed and works.
#
# Usage: tools/image.sh NAME:TAG   (`make image` passes understudy:<version>)
# Exit status: 0 built; 3 no container engine installed; 4 an engine is installed but cannot build (for
# docker: its daemon is not reachable); any other: the engine's build failed with that status.
set -euo pipefail

tag="${1:?usage: tools/image.sh NAME:TAG}"
context="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
installed=()
for engine in docker podman; do
  command -v "${engine}" >/dev/null 2>&1 || continue
  installed+=("${engine}")
  if "${engine}" info >/dev/null 2>&1; then
    echo "image: building ${tag} with ${engine} ($(command -v "${engine}"))"
    exec "${engine}" build --tag "${tag}" "${context}"
  fi
done
if ((${#installed[@]})); then
  echo "image: ${installed[*]} installed but not usable (\`${installed[0]} info\` fails: is its daemon running?); nothing was built" >&2
  exit 4
fi
echo "image: no container engine found (install docker or podman to build the image); nothing was built" >&2
exit 3
