#!/usr/bin/env bash
# Entry point: `lab.sh setup` (see lab.sh and README.md). Run as root; LAB_ID suffixes the namespace names.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/lab.sh" setup "$@"
