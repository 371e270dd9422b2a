#!/usr/bin/env bash
# Shows where each process logs, and the last lines of each log.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

lines="${1:-10}"
if [ "$lines" = "--help" ] || [ "$lines" = "-h" ]; then
  echo "Usage: scripts/logs.sh [LINES]   (list log files and print the last LINES of each; default 10)"
  exit 0
fi
shopt -s nullglob
logs=("$LOG_DIR"/*.log)
if [ "${#logs[@]}" -eq 0 ]; then
  echo "no logs yet in $LOG_DIR (start the system with 'make run')"
fi
for file in "${logs[@]}"; do
  printf '\n\033[1m%s\033[0m\n' "$file"
  tail -n "$lines" "$file"
done
echo
echo "PostgreSQL logs to /var/log/postgresql/; services log JSON lines (one object per event)."
