#!/bin/sh
# The image's entry point: size TensorFlow's intra-op thread pool to the container's CPU
# limit, then become `captioner` with the given arguments.
#
# Why the thread count: TensorFlow sizes its pool from the host's cores, not from the
# cgroup's CPU quota, so a 2-CPU container on a 64-core node would run 64 compute threads
# and spend its time throttled. A TF_NUM_INTRAOP_THREADS set by the user wins (and so does
# CAPTIONER_INTRA_OP_THREADS, which the server applies itself).
# Why `exec`: the server replaces this shell, so it is PID 1 and receives the SIGTERM of
# `docker stop` or a pod deletion directly, and drains instead of being killed.
set -eu

# Print the CPU limit rounded up to whole CPUs (1.5 -> 2, 0.5 -> 1); fail when unlimited.
cpu_limit() {
    if [ -r /sys/fs/cgroup/cpu.max ]; then
        # cgroup v2: "<quota> <period>" in microseconds, or "max <period>".
        read -r quota period </sys/fs/cgroup/cpu.max
    elif [ -r /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
        # cgroup v1: two files; a quota of -1 means no limit.
        read -r quota </sys/fs/cgroup/cpu/cpu.cfs_quota_us
        read -r period </sys/fs/cgroup/cpu/cpu.cfs_period_us
    else
        return 1
    fi
    case "$quota" in max | -1) return 1 ;; esac
    echo $(((quota + period - 1) / period))
}

if [ -z "${TF_NUM_INTRAOP_THREADS:-}" ] && threads=$(cpu_limit); then
    export TF_NUM_INTRAOP_THREADS="$threads"
fi
exec captioner "$@"
