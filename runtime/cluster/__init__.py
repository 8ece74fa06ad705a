"""cluster — picompile's runtimes scaled out on Ray (the optional extra ``picompile[cluster]``).

Reads: a full plan (FHE or hybrid), a Ray cluster's address (or none: a local Ray), TCP
connections from clients.
Writes: nothing on disk; Ray actors (one per client session, and per session its giant-step
workers) that end with the session.

Ray is imported only here, lazily (:func:`load_ray`): without ``--ray`` no module of picompile
imports it. The pieces:

* :mod:`.relay` — the TCP front end (``picompile serve --ray``): admission by memory, one
  session actor per client, bytes relayed between the socket and the actor;
* :mod:`.session_actor` — :class:`SessionHost`, the actor that runs the protocols' existing
  server sessions (``FheServer``, ``HybridServer``) on a channel fed by the front end;
* :mod:`.workers` — :class:`StepWorker` actors holding a session's keys and the
  :class:`DistributedProgram` that splits a CKKS linear step's giant steps over them.
"""

from __future__ import annotations

from typing import Any

from picompile.errors import BackendError

#: How to install what ``--ray`` needs (named in the error when Ray is missing).
EXTRA_HINT = "pip install 'picompile[cluster]'"


def load_ray() -> Any:
    """The ``ray`` module; a :class:`BackendError` naming the extra when it is not installed."""
    try:
        import ray
    except ImportError as exc:
        raise BackendError(f"--ray needs Ray, which is not installed ({exc}): {EXTRA_HINT}"
                           ) from None
    return ray


def ray_reason(exc: BaseException) -> str:
    """The first line of a Ray error (its full text can be a many-line memory report)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
