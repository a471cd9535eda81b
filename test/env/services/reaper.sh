#!/usr/bin/env bash
# Watchdog for the servers of one syncgov environment. Started in its own session, it waits for the
# process that started the servers to exit (normally, by Ctrl-C, or by kill -9) and then stops every
# process group listed in the pid file: SIGTERM, a grace period, then SIGKILL. A normal shutdown stops
# the servers itself and then stops this script.
#
#   reaper.sh <owner-pid> <pid-file>
set -u
owner="$1"
pidfile="$2"
while kill -0 "$owner" 2>/dev/null; do sleep 0.5; done
[[ -f "$pidfile" ]] || exit 0
mapfile -t pids < <(tac "$pidfile")
for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null; done
for _ in $(seq 1 20); do
  alive=0
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
  [[ $alive == 0 ]] && exit 0
  sleep 0.5
done
for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null; done
