#!/usr/bin/env bash
# Stops what up.sh started in DIR. SIGKILL at once: every start wipes etcd's data, so there is
# nothing to shut down gracefully, and a graceful kube-apiserver takes seconds a test would wait.
DIR=$1
alive() { # a zombie (state Z, not reaped by whoever inherited it) counts as gone
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}
for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
  f="$DIR/pids/$name"
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  kill -9 "$pid" 2>/dev/null
  for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
  rm -f "$f"
done
