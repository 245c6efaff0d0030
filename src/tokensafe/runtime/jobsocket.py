"""The job server's socket (tokensafe.runtime.jobserver): who may use it and the messages on it.

The server runs whatever script a request names, so only the user and run that started it may send one.
Its socket (0600) lives in a private directory (0700 whatever the umask, made by :func:`prepare`) beside a
per-run secret (0600; never put in the environment or a log). Before forking, the server checks the peer's
uid (``SO_PEERCRED``) against its own and the request's secret with ``hmac.compare_digest``
(:func:`refusal`); where ``SO_PEERCRED`` is missing (not Linux), the directory's permissions and the secret
guard it. Messages are length-prefixed JSON; a job's request also carries its standard streams (SCM_RIGHTS).

The other things a run starts use the same pieces: the LLM-judge servers' state folder and key
(:func:`private_dir`; tokensafe.eval.llm_judge.judge_server) and the shared vLLM engine's socket (:func:`user_dir`,
:func:`peer`, :func:`refuse`; tokensafe.eval.generation.vllm_server).
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import socket
import stat
import struct
import tempfile

SOCKET_NAME, SECRET_NAME = "jobs.sock", "secret"  # in the server's private directory


def send(conn: socket.socket, obj: dict, fds: list[int] = ()) -> None:
    data = json.dumps(obj).encode()
    msg = struct.pack("!I", len(data)) + data
    if fds:
        socket.send_fds(conn, [msg], list(fds))
    else:
        conn.sendall(msg)


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def recv(conn: socket.socket, with_fds: int = 0) -> tuple[dict, list[int]]:
    fds: list[int] = []
    try:
        if with_fds:
            msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, with_fds)
            if len(msg) < 4:
                raise ConnectionError("short request")
            (n,) = struct.unpack("!I", msg[:4])
            body = msg[4:]
            if len(body) < n:
                body += _recv_exact(conn, n - len(body))
        else:
            (n,) = struct.unpack("!I", _recv_exact(conn, 4))
            body = _recv_exact(conn, n)
        return json.loads(body), fds
    except BaseException:
        for fd in fds:  # a bad message must not leave the sender's descriptors open here
            os.close(fd)
        raise


def private_dir(name: str) -> str:
    """A fresh private directory (0700, this user's, whatever the umask) holding a new per-run secret (0600,
    :data:`SECRET_NAME`); its owner removes it when done."""
    directory = tempfile.mkdtemp(prefix=f"tokensafe-{name}-{os.getpid()}-")  # mode 0700 by construction
    fd = os.open(os.path.join(directory, SECRET_NAME), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return directory


def prepare() -> str:
    """A fresh private directory for a server with its secret (:func:`private_dir`); returns the path its socket
    will have. The server removes the directory when it stops."""
    return os.path.join(private_dir("jobs"), SOCKET_NAME)


def check_private(directory: str) -> None:
    """PermissionError unless ``directory`` is a directory (not a symlink) of this user that no one else may
    enter, list or write (no group or other permission bits)."""
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise PermissionError(
            f"{directory} is not a private directory of this user (mode {stat.filemode(st.st_mode)}, "
            f"owner uid {st.st_uid}; expected drwx------ and uid {os.geteuid()})"
        )


def user_dir() -> str:
    """This user's directory for sockets that jobs share across a run, ``{tmpdir}/tokensafe-<uid>`` (0700, made
    here if missing); PermissionError, naming it, when it is not private (another user made it first, a symlink).
    Not ``$XDG_RUNTIME_DIR``: the system removes that when the user's last login session ends, which a run left
    going under nohup outlives."""
    directory = os.path.join(tempfile.gettempdir(), f"tokensafe-{os.geteuid()}")
    try:
        os.mkdir(directory, 0o700)  # the umask can only take bits away
    except FileExistsError:
        pass
    check_private(directory)
    return directory


def secret_in(directory: str) -> str:
    """The secret in ``directory``, after :func:`check_private`."""
    check_private(directory)
    with open(os.path.join(directory, SECRET_NAME)) as f:
        return f.read().strip()


def read_secret(path: str) -> str:
    """The secret next to socket ``path``; PermissionError when its directory is not this user's alone."""
    return secret_in(os.path.dirname(os.path.abspath(path)))


def peer(conn: socket.socket) -> tuple[int, int] | None:
    """(pid, uid) of the process at the other end, or None where SO_PEERCRED is missing (not Linux)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return pid, uid


def refusal(request, fds: list[int], secret: str) -> str | None:
    """Why ``request`` must not run (never echoing what it sent), or None."""
    if not isinstance(request, dict):
        return "malformed request (not a JSON object)"
    given = request.get("secret")
    if not isinstance(given, str) or not given:
        return "no secret"
    if not hmac.compare_digest(given.encode(), secret.encode()):
        return "wrong secret"
    if request.get("stop") is True:
        return None
    fields = {"script": str, "cwd": str, "argv": list, "env": dict}
    bad = [k for k, t in fields.items() if not isinstance(request.get(k), t)]
    if bad or not all(isinstance(a, str) for a in request["argv"]):
        return f"malformed request (field(s) {', '.join(bad) or 'argv'})"
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in request["env"].items()):
        return "malformed request (env)"
    if len(fds) != 3:
        return f"malformed request ({len(fds)} standard stream(s) passed, expected 3)"
    return None


def refuse(
    conn: socket.socket,
    ids: tuple[int, int] | None,
    reason: str,
    server: str = "tokensafe job server",
    lines: bool = False,
) -> None:
    """Log why the peer with ``ids`` (pid, uid) is refused, tell it (a length-prefixed message, or a JSON line
    for a server that speaks JSON lines: tokensafe.eval.generation.vllm_server), and hang up."""
    who = f"uid {ids[1]} pid {ids[0]}" if ids else "a peer of unknown uid (no SO_PEERCRED)"
    print(f"{server}: refused a request from {who}: {reason}; nothing ran", flush=True)
    try:
        if lines:
            conn.sendall((json.dumps({"refused": reason}) + "\n").encode())
        else:
            send(conn, {"refused": reason})
    except OSError:
        pass
    conn.close()
