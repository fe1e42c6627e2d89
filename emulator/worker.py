"""One Lambda function's worker process (the child side of ``emulator.workers``).

Run as a script, standard library only::

    python -u /abs/path/emulator/worker.py handlers.connect.handler

It imports the handler's module once, then serves invocations one at a time
until its stdin closes. The parent (``emulator.workers.FunctionPool``) starts it
with the function's code directory as the working directory and on
``PYTHONPATH``, and with the function's environment only.

Protocol (one JSON object per line, ASCII):

* the parent writes requests to the child's stdin:
  ``{"id": n, "event": ..., "deadline_ms": <epoch ms>}`` (optional ``request_id``
  and ``arn`` feed the context object);
* the child answers on its *original* stdout, which it keeps for the protocol
  alone: first ``{"ready": true}`` (or ``{"ready": false, "errorType": ...,
  "errorMessage": ..., "stackTrace": [...]}`` followed by exit status 1 when the
  module cannot be imported), then for each request ``{"id": n, "ok": true,
  "result": ...}`` or ``{"id": n, "ok": false, "errorType": ..., "errorMessage":
  ..., "stackTrace": [...]}``.

Handlers print and log to stdout (JSON log lines, EMF metrics), so file
descriptor 1 is pointed at stderr before the module is imported: everything the
handler writes, on either stream, reaches the parent's log reader. Before each
answer the child writes an end marker (``END_MARKER`` + id) to stderr, which
lets the parent deliver an invocation's log lines before its result.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import json
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from typing import IO, Any, NoReturn

END_MARKER = "\x00emulator-end:"
"""Written to stderr, followed by the request id and a newline, before each answer."""

MAX_RESPONSE_BYTES = 6 * 1024 * 1024
"""Lambda's limit on a synchronous invocation's response payload."""

Handler = Callable[[Any, Any], Any]


class LambdaContext:
    """What the Python runtime passes as ``context``."""

    function_version = "$LATEST"
    identity: Any = None
    client_context: Any = None

    def __init__(
        self,
        *,
        aws_request_id: str,
        deadline_ms: float,
        invoked_function_arn: str,
        log_stream_name: str,
    ) -> None:
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.invoked_function_arn = invoked_function_arn
        self.aws_request_id = aws_request_id
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = log_stream_name
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self._deadline_ms - time.time() * 1000))


class InitError(Exception):
    def __init__(self, error_type: str, message: str, stack: list[str]) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.stack = stack


def _stack(exc: BaseException) -> list[str]:
    return traceback.format_list(traceback.extract_tb(exc.__traceback__))


def load_handler(name: str) -> Handler:
    """Import ``module.attribute`` the way the Lambda runtime does, or raise InitError."""
    module_name, _, attribute = name.rpartition(".")
    if not module_name or not attribute:
        raise InitError(
            "Runtime.MalformedHandlerName",
            f"Bad handler '{name}': expected <module>.<function>",
            [],
        )
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except SyntaxError as exc:
        raise InitError(
            "Runtime.UserCodeSyntaxError",
            f"Syntax error in module '{module_name}': {exc}",
            _stack(exc),
        ) from exc
    except ImportError as exc:
        raise InitError(
            "Runtime.ImportModuleError",
            f"Unable to import module '{module_name}': {exc}",
            _stack(exc),
        ) from exc
    except Exception as exc:  # e.g. a configuration error raised at import
        raise InitError(
            "Runtime.ImportModuleError",
            f"Unable to import module '{module_name}': {type(exc).__name__}: {exc}",
            _stack(exc),
        ) from exc
    handler = getattr(module, attribute, None)
    if not callable(handler):
        raise InitError(
            "Runtime.HandlerNotFound",
            f"Handler '{attribute}' missing on module '{module_name}'",
            [],
        )
    return handler  # type: ignore[no-any-return]


def _log_error(error_type: str, message: str, stack: list[str]) -> None:
    lines = [f"[ERROR] {error_type}: {message}"]
    if stack:
        lines.append("Traceback (most recent call last):")
        lines.extend(entry.rstrip("\n") for entry in stack)
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()


def _failure(request_id: Any, error_type: str, message: str, stack: list[str]) -> str:
    return json.dumps(
        {
            "id": request_id,
            "ok": False,
            "errorType": error_type,
            "errorMessage": message,
            "stackTrace": stack,
        }
    )


def answer_for(handler: Handler, request: dict[str, Any], log_stream_name: str) -> str:
    """Run one invocation; the protocol line (without newline) that answers it."""
    request_id = request.get("id")
    context = LambdaContext(
        aws_request_id=str(request.get("request_id") or uuid.uuid4()),
        deadline_ms=float(request.get("deadline_ms") or time.time() * 1000 + 3000),
        invoked_function_arn=str(request.get("arn") or ""),
        log_stream_name=log_stream_name,
    )
    try:
        result = handler(request.get("event"), context)
    except Exception as exc:
        stack = _stack(exc)
        _log_error(type(exc).__name__, str(exc), stack)
        return _failure(request_id, type(exc).__name__, str(exc), stack)
    try:
        line = json.dumps({"id": request_id, "ok": True, "result": result}, default=str)
    except (TypeError, ValueError, RecursionError) as exc:
        message = f"Unable to marshal response: {exc}"
        _log_error("Runtime.MarshalError", message, [])
        return _failure(request_id, "Runtime.MarshalError", message, [])
    if len(line) > MAX_RESPONSE_BYTES:
        message = (
            f"Response payload size ({len(line)} bytes) exceeded maximum allowed payload "
            f"size ({MAX_RESPONSE_BYTES} bytes)."
        )
        _log_error("Function.ResponseSizeTooLarge", message, [])
        return _failure(request_id, "Function.ResponseSizeTooLarge", message, [])
    return line


def _flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a handler closed or replaced it
            stream.flush()


def _exit(status: int) -> NoReturn:
    """Leave at once: threads a handler left running must not hold the process."""
    _flush_output()
    os._exit(status)


def serve(handler: Handler, requests: IO[str], proto: IO[str]) -> None:
    started = datetime.datetime.now(datetime.UTC)
    log_stream_name = f"{started:%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
    for raw in requests:
        if not raw.strip():
            continue
        try:
            request = json.loads(raw)
            if not isinstance(request, dict):
                raise ValueError("request is not a JSON object")
        except ValueError as exc:
            line = _failure(None, "Runtime.InvalidRequest", str(exc), [])
        else:
            line = answer_for(handler, request, log_stream_name)
            _flush_output()
            with contextlib.suppress(OSError):
                os.write(2, f"{END_MARKER}{request.get('id')}\n".encode())
        proto.write(line + "\n")
        proto.flush()


def main(argv: list[str]) -> NoReturn:
    if len(argv) != 2:
        sys.stderr.write("usage: worker.py <module.function>\n")
        _exit(2)
    # Keep the protocol on private copies of fds 0 and 1; the handler's stdout
    # goes to stderr and its stdin reads nothing.
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    # Running as a script put this file's directory first on sys.path: drop it
    # so emulator modules cannot shadow the function's own.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != here]

    try:
        handler = load_handler(argv[1])
    except InitError as exc:
        _log_error(exc.error_type, exc.message, exc.stack)
        proto.write(
            json.dumps(
                {
                    "ready": False,
                    "errorType": exc.error_type,
                    "errorMessage": exc.message,
                    "stackTrace": exc.stack,
                }
            )
            + "\n"
        )
        proto.flush()
        _exit(1)
    proto.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    proto.flush()
    try:
        serve(handler, requests, proto)
    except SystemExit as exc:  # sys.exit() in a handler ends the worker, as in Lambda
        code = exc.code
        if code is not None and not isinstance(code, int):
            sys.stderr.write(f"{code}\n")
            code = 1
        _exit(code or 0)
    except BaseException:
        traceback.print_exc()
        _exit(1)
    _exit(0)  # stdin closed: the parent is done with this worker


if __name__ == "__main__":
    main(sys.argv)
