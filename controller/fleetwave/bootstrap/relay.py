"""The scripts resident mode installs on a host (pure text; nothing here touches a host).

* The **relay** is the deploy key's forced command. It connects the SSH session to the
  resident agent's socket with ``socat`` when a daemon is alive, and otherwise starts
  the agent in the session (``fleetwave-agent --config ... rpc``), so the controller
  needs no pipeline change either way. "Alive" is read from the daemon's lock, not by
  connecting: ``serve`` holds ``flock(SOCKET.lock)`` for its whole life
  (:mod:`fleetwave_agent.rpcsocket`), so ``flock -n`` failing with status 1 means a
  daemon is serving that socket; a socket file left by a killed daemon, a missing
  socket, a missing ``socat`` or ``flock`` all mean session mode.
* The **supervisor** runs ``serve`` on hosts without systemd and restarts it when it
  exits (bounded backoff); SIGTERM stops both. Bootstrap starts it detached with
  ``setsid nohup`` as the deploy user. It is not started at boot: until it is started
  again, the relay falls back to session mode, so deployments keep working.
"""

from __future__ import annotations

import shlex

from fleetwave.bootstrap.options import BootstrapOptions


def render_relay(options: BootstrapOptions) -> str:
    """The forced-command relay for this host's socket, agent and config."""
    sock = shlex.quote(str(options.socket_path()))
    rpc = options.rpc_command()
    return (
        "#!/bin/sh\n"
        "# fleetwave deploy-key relay, written by `fleetwave agent install`; re-running it\n"
        "# overwrites this file. The resident agent when it is serving, else the agent\n"
        "# started for this session. See docs/agent.md, Resident mode.\n"
        f"sock={sock}\n"
        'if [ -S "$sock" ] && command -v socat >/dev/null 2>&1; then\n'
        '    flock -n "$sock.lock" true 2>/dev/null\n'
        "    # 1: the lock is held, by the daemon serving the socket.\n"
        '    [ "$?" -eq 1 ] && exec socat STDIO "UNIX-CONNECT:$sock"\n'
        "fi\n"
        f"exec {rpc}\n"
    )


def render_supervisor(options: BootstrapOptions) -> str:
    """A restart loop around ``serve --rpc-socket`` for hosts without systemd."""
    run_dir = shlex.quote(str(options.agent_root / "run"))
    serve = options.serve_command()
    return (
        "#!/bin/sh\n"
        "# fleetwave resident agent supervisor (hosts without systemd), written by\n"
        "# `fleetwave agent install`. Restarts `serve` when it exits; SIGTERM stops both.\n"
        f"run={run_dir}\n"
        'mkdir -p "$run" || exit 1\n'
        'echo $$ > "$run/supervise.pid"\n'
        "child=\n"
        'trap \'[ -n "$child" ] && kill "$child" 2>/dev/null; wait; rm -f "$run/supervise.pid"; '
        "exit 0' TERM INT\n"
        "delay=1\n"
        "while :; do\n"
        "    started=$(date +%s)\n"
        f"    {serve} &\n"
        "    child=$!\n"
        '    echo "$child" > "$run/serve.pid"\n'
        '    wait "$child"\n'
        "    status=$?\n"
        "    child=\n"
        '    echo "fleetwave-agent serve exited with status $status; restarting in ${delay}s" >&2\n'
        "    # A serve that ran for a minute was healthy: start the backoff over.\n"
        "    [ $(( $(date +%s) - started )) -ge 60 ] && delay=1\n"
        '    sleep "$delay"\n'
        "    [ $delay -lt 60 ] && delay=$((delay * 2))\n"
        "done\n"
    )


def supervisor_start_command(options: BootstrapOptions) -> str:
    """Start the supervisor detached as the deploy user, unless one is running already
    (idempotent). Run as root (or under sudo)."""
    q = shlex.quote
    run_dir = options.agent_root / "run"
    log = q(str(run_dir / "supervise.log"))
    script = (
        f"pid=$(cat {q(str(run_dir / 'supervise.pid'))} 2>/dev/null); "
        'if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo running; exit 0; fi; '
        f"mkdir -p {q(str(run_dir))} || exit 1; "
        f"setsid nohup /bin/sh {q(str(options.supervisor_file()))} >>{log} 2>&1 </dev/null & "
        "echo started"
    )
    return f"su -s /bin/sh {q(options.deploy_user)} -c {q(script)}"


def supervisor_restart_command(options: BootstrapOptions) -> str:
    """Make a running supervisor restart ``serve`` (new code or config): stop its child,
    the loop starts it again."""
    q = shlex.quote
    pid_file = q(str(options.agent_root / "run" / "serve.pid"))
    script = f'pid=$(cat {pid_file} 2>/dev/null); [ -n "$pid" ] && kill "$pid" 2>/dev/null; true'
    return f"sh -c {q(script)}"
