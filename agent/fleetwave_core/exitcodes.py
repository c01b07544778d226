"""Every exit status of ``fleetwave`` and ``fleetwave-agent``, in one table.

Each code means one thing in both command lines; the README's exit-code table is this
enum. Errors carry their code as ``exit_code`` (see :mod:`fleetwave_core.errors`).
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    #: An error fleetwave does not classify further.
    ERROR = 1
    #: A configuration file or the command line is invalid; nothing was changed.
    CONFIG = 2
    #: A package is malformed, unsafe, expired or over a size limit.
    PACKAGE_REFUSED = 3
    #: A signature or checksum does not match. Never retried.
    INTEGRITY = 4
    #: The release store or the file system failed (missing release, disk full).
    STORE = 5
    #: A lifecycle hook failed or timed out.
    HOOK = 6
    #: Health checks did not pass before their deadline.
    HEALTH = 7
    #: The agent RPC stream broke its framing rules.
    RPC_PROTOCOL = 8
    #: Another process holds a lock this command needs; the message names the holder.
    LOCKED = 9
    #: The agent rolled a new release back by itself (validate or health failed).
    AGENT_ROLLED_BACK = 10
    #: A load-balancer driver could not drain, return or read a server.
    LOAD_BALANCER = 11
    #: The controller's journal is missing, corrupt or does not hold what was asked.
    JOURNAL = 12
    #: The rollout engine waited with nothing in flight (a bug).
    ENGINE_STALLED = 13
    #: A host could not be reached, or its agent session broke.
    TRANSPORT = 14
    #: The agent refused to activate a release it saw fail before (give --force).
    KNOWN_BAD_RELEASE = 15
    #: Another deployment holds the host's lease; the message names it and its expiry.
    LEASE_HELD = 16
    #: The deployment was rolled back.
    ROLLED_BACK = 20
    #: The rollback could not finish; the hosts left are listed.
    ROLLBACK_INCOMPLETE = 21
    #: An unexpected internal error (a bug), reported instead of a traceback.
    INTERNAL = 70
    #: Interrupted (Ctrl-C); a deployment stays resumable.
    INTERRUPTED = 130
