"""Start a minedraft module's ``main(argv)`` in a fresh Python, joined to this process by a socket.

Used for the plugin's drafter (:mod:`minedraft.executor.psd.drafter`) and for a policy's engine in a process of its
own (:mod:`minedraft.executor.own_process`). The child imports minedraft as the parent sees it
(``MINEDRAFT_PACKAGE_PATH``: the parent's ``minedraft.__path__``), so a checkout mapped at run time (the GPU
benchmarks' ``import_minedraft``) works as well as an installed package. It is told ``--fd N``: its end of the
socket, whose other end only the parent holds, so either side's death is an EOF on the other.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from multiprocessing.connection import Connection

BOOT = """import os, sys
paths = [p for p in os.environ.get("MINEDRAFT_PACKAGE_PATH", "").split(os.pathsep) if p]
if paths:
    sys.path.insert(0, os.path.dirname(paths[0]))
import minedraft
minedraft.__path__.extend(p for p in paths if p not in minedraft.__path__)
from {module} import main
sys.exit(main(sys.argv[1:]))
"""


def package_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with ``MINEDRAFT_PACKAGE_PATH`` set to where this process found minedraft."""
    import minedraft

    return dict(env, MINEDRAFT_PACKAGE_PATH=os.pathsep.join(minedraft.__path__))


def start(module: str, env: dict[str, str]) -> tuple[subprocess.Popen, Connection]:
    """``module.main(["--fd", N])`` in a fresh Python with ``env``; returns the process and our end of its socket."""
    parent, child = socket.socketpair()
    conn = Connection(os.dup(parent.fileno()))
    parent.close()
    fd = child.fileno()
    proc = subprocess.Popen([sys.executable, "-c", BOOT.format(module=module), "--fd", str(fd)],
                            pass_fds=(fd,), env=package_env(env), stdin=subprocess.DEVNULL)
    child.close()  # the child holds the only other end: its death closes the socket (EOF here)
    return proc, conn


def child_connection(argv: list[str], description: str) -> Connection:
    """The child's side: parse ``--fd`` and open the socket."""
    import argparse

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--fd", type=int, required=True, help="socket to the parent (inherited)")
    return Connection(p.parse_args(argv).fd)
