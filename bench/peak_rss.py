#!/usr/bin/python3 -S
"""Runs a program and prints its peak resident memory, as `peak_rss_kib N` after its output.

usage: python3 -S peak_rss.py PROGRAM [ARGS...]   (exits with the program's status)

The peak is wait4's ru_maxrss. Linux carries the high-water mark of the memory a process held
before execve into its ru_maxrss, and a forked child holds a copy of its parent's private
memory, so the program must be forked by a small process: this one, a Python without `site`
and without imports beyond os and sys, gives a floor of about 5 MiB (bench/run.py itself
would give 15 MiB, and a vfork, as subprocess and posix_spawn do, the parent's peak).
"""

import os
import sys


def main() -> int:
    program = sys.argv[1:]
    pid = os.fork()
    if pid == 0:
        try:
            os.execv(program[0], program)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    print(f"peak_rss_kib {usage.ru_maxrss}", flush=True)  # KiB on Linux
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
