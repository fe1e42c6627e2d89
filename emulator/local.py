"""The emulator: the stack's own program, brought up on this machine.

``Emulator.start`` runs ``__main__.py`` under Pulumi's mocks acting as a local
provider (the stage's URL is this gateway's), builds the model of what it
declared, and materialises it: tables, parameters and queues in an embedded
moto server; each function in worker processes with exactly its declared
environment plus endpoint overrides; the API as an aiohttp gateway; each event
source mapping as a stream poller (DynamoDB) or a queue poller (SQS).
"""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from emulator import console
from emulator import model as model_module
from emulator.gateway import STATE, GatewaySettings, GatewayState, create_app
from emulator.issuer import DEFAULT_AUDIENCE, LocalIssuer
from emulator.model import FunctionModel, Model
from emulator.program import PROJECT, ROOT, RecordingMocks, run_main, stack_config
from emulator.queues import QueuePoller
from emulator.services import LocalAws, provision
from emulator.streams import StreamPoller
from emulator.workers import FunctionPool, FunctionSpec, InvokeResult

STATE_DIR = Path(os.environ.get("REALTIME_EMULATOR_STATE_DIR") or ROOT / ".emulator")
"""Where a running emulator leaves its addresses for ``python -m emulator put|delete|token``."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class PortTaken(RuntimeError):
    """The gateway's port is in use: nothing was started and no state file was touched."""

    def __init__(self, host: str, port: int, stack: str, holder: str) -> None:
        self.host, self.port = host, port
        other = port + 1 if port < 65535 else 8080
        make = "make dev" if stack == "dev" else f"make dev STACK={stack}"
        super().__init__(
            f"port {port} on {host} is already in use ({holder});"
            f" choose another: {make} PORT={other}, or python -m emulator --port {other}"
        )


class StackRefused(RuntimeError):
    """The stack's program refused its configuration (a ``ValueError`` naming the key)."""


class AlreadyRunning(RuntimeError):
    """An emulator for the same stack is running: its state file is left alone."""

    def __init__(self, stack: str, state: Mapping[str, Any]) -> None:
        self.stack, self.state = stack, state
        super().__init__(
            f"an emulator for stack {stack!r} is already running"
            f" (pid {state.get('pid')}, {state.get('url')}); stop it first (Ctrl-C in its"
            " terminal), or run another stack with --stack"
        )


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def running_state(stack: str) -> dict[str, Any] | None:
    """The state file of the emulator running for ``stack``, or None when none is running.

    A file left by a process that has exited (killed without cleanup) counts as none.
    """
    path = STATE_DIR / f"{stack}.json"
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:  # half-written or damaged: not a running emulator's
        return None
    if not isinstance(document, dict) or not _alive(document.get("pid")):
        return None
    return document


def default_sender_workers() -> int:
    """More sender workers than ``max_workers`` where the machine allows: 2 per CPU, at
    least 4."""
    return max(4, 2 * (os.cpu_count() or 1))


SENDER_RATE_LIMIT = 10_000
"""The most ``SENDER_RATE`` the sender accepts."""


def budget_share(environment: Mapping[str, str], concurrency: int, workers: int) -> int | None:
    """``SENDER_RATE`` for each of ``workers`` processes standing in for ``concurrency``
    senders, or None to keep the stack's.

    On AWS the mapping runs up to ``concurrency`` senders, each at ``SENDER_RATE``: together
    the delivery budget. The emulator runs fewer processes (a couple of cores cannot use
    18), so each gets its share of the same budget, ``SENDER_RATE x concurrency / workers``
    (at most 10,000/s): the emulator neither delivers above the budget nor, by running fewer
    processes, far below it.
    """
    rate = environment.get("SENDER_RATE")
    if rate is None or not rate.isdigit() or workers >= concurrency:
        return None
    return min(SENDER_RATE_LIMIT, int(rate) * concurrency // max(1, workers))


@dataclass
class EmulatorOptions:
    stack: str = "dev"
    host: str = "127.0.0.1"
    port: int = 0
    """Gateway port; 0 picks a free one."""
    secret: str | None = None
    """Token signing secret; default: a fresh random one per run."""
    overrides: Mapping[str, str] = field(default_factory=dict)
    """Config values over Pulumi.yaml's defaults and Pulumi.<stack>.yaml (key or ns:key)."""
    idle_timeout: float = 600.0
    max_connection: float = 7200.0
    max_workers: int = 4
    """Worker processes per function, at most."""
    sender_workers: int = field(default_factory=lambda: default_sender_workers())
    """Worker processes, at most, of a function an SQS queue mapping invokes (the sender):
    its pool gets min(the mapping's maximumConcurrency, this)."""
    poll_interval: float = 0.025
    """Seconds between stream reads when a shard is idle."""
    schedule_every: float = 5.0
    """Scheduled functions (EventBridge ``rate(...)`` rules, e.g. the sweeper's every minute)
    run this often, or at their rate when that is more often, so their effect shows by hand."""
    root: Path = ROOT
    log: Callable[[str], None] = print
    write_state: bool = True
    """Write .emulator/<stack>.json so `python -m emulator put|delete|token` find this run."""


class Emulator:
    _running: Emulator | None = None

    def __init__(self, options: EmulatorOptions | None = None) -> None:
        self.options = options or EmulatorOptions()
        self.port = self.options.port
        """The gateway's port; with ``options.port`` 0, the one ``start`` bound."""
        self.secret = self.options.secret or secrets.token_hex(32)
        self.aws = LocalAws(self.options.host)
        self.model: Model | None = None
        self.pools: dict[str, FunctionPool] = {}
        self.pollers: list[StreamPoller] = []
        self.queue_pollers: list[QueuePoller] = []
        self.schedules: list[asyncio.Task[None]] = []
        self.declared: RecordingMocks | None = None
        self._runner: web.AppRunner | None = None
        self._code_dir: Path | None = None
        self._app: web.Application | None = None
        self._listener: socket.socket | None = None
        self._run_id = secrets.token_hex(8)
        self._state_written = False
        self.issuer: LocalIssuer | None = None
        """JWT mode without a ``jwtIssuer``: the emulator is the identity provider."""
        self.console_token = console.new_token()
        """This run's console token: what the console URL carries and its API requires."""

    # -- addresses --------------------------------------------------------------------------

    @property
    def stage(self) -> str:
        assert self.model is not None
        return self.model.stage

    @property
    def url(self) -> str:
        return f"ws://{self.options.host}:{self.port}/{self.stage}"

    @property
    def management_endpoint(self) -> str:
        return f"http://{self.options.host}:{self.port}/{self.stage}"

    @property
    def console_url(self) -> str:
        """The console page, with this run's console token (see ``emulator.console``)."""
        return console.console_url(self.options.host, self.port, self.console_token)

    @property
    def gateway(self) -> GatewayState:
        assert self._app is not None
        return self._app[STATE]

    def table_names(self) -> dict[str, str]:
        """logical name -> physical name of every declared table."""
        assert self.model is not None
        return {t.logical: t.name for t in self.model.tables.values()}

    def custom_domain_url(self) -> str | None:
        """``wss://{domain}[/{path}]``: what clients would use in AWS when the stack declares
        a custom domain (``customDomain``); None without one. Locally they use ``url``."""
        if self.declared is None:
            return None
        domains = self.declared.of_type("aws:apigatewayv2/domainName:DomainName")
        if not domains:
            return None
        mappings = self.declared.of_type("aws:apigatewayv2/apiMapping:ApiMapping")
        path = next((m.inputs.get("apiMappingKey") for m in mappings), None)
        return f"wss://{domains[0].inputs['domainName']}" + (f"/{path}" if path else "")

    def connections_table(self) -> str:
        assert self.model is not None
        for function in self.model.functions.values():
            if "CONNECTIONS_TABLE" in function.environment:
                return function.environment["CONNECTIONS_TABLE"]
        raise LookupError("no function declares CONNECTIONS_TABLE")

    def token_max_lifetime(self) -> int:
        """The longest token the stack's authorizer accepts (its TOKEN_MAX_LIFETIME_SECONDS)."""
        from handlers.tokens import DEFAULT_MAX_LIFETIME_SECONDS

        assert self.model is not None
        for function in self.model.functions.values():
            value = function.environment.get("TOKEN_MAX_LIFETIME_SECONDS")
            if value is not None:
                return int(value)
        return DEFAULT_MAX_LIFETIME_SECONDS

    def auth_mode(self) -> str:
        """``hmac`` or ``jwt``, as the stack's authorizer is configured (``hmac`` without)."""
        assert self.model is not None
        for function in self.model.functions.values():
            if "AUTH_MODE" in function.environment:
                return function.environment["AUTH_MODE"]
        return "hmac"

    def jwt_issuer(self) -> str | None:
        assert self.model is not None
        for function in self.model.functions.values():
            if "JWT_ISSUER" in function.environment:
                return function.environment["JWT_ISSUER"]
        return None

    def token(
        self, user_id: str, ttl_seconds: int = 3600, claims: Mapping[str, Any] | None = None
    ) -> str:
        """A token the running stack accepts: an HMAC token, or in JWT mode a JWT from the
        emulator's own issuer. ``LookupError`` in JWT mode with another issuer (its tokens
        come from it)."""
        from handlers.tokens import mint_token

        if self.issuer is not None:
            return self.issuer.mint(user_id, ttl_seconds, claims=claims)
        if self.auth_mode() == "jwt":
            raise LookupError(
                f"the stack verifies JWTs of {self.jwt_issuer()}: get tokens from that issuer"
            )
        return mint_token(
            user_id, self.secret, ttl_seconds, claims=claims, max_lifetime=self.token_max_lifetime()
        )

    def _local_issuer(self, overrides: Mapping[str, str]) -> dict[str, str]:
        """With ``authMode=jwt`` and no ``jwtIssuer``: make this run's issuer, and the
        overrides that point the stack at it (issuer = this gateway's address; audience
        ``realtime-channel-local`` unless ``jwtAudiences`` names one)."""
        options = self.options
        values = stack_config(options.stack, overrides, with_defaults=True, root=options.root)
        if values.get(f"{PROJECT}:authMode") != "jwt" or values.get(f"{PROJECT}:jwtIssuer"):
            return {}
        algorithms = values.get(f"{PROJECT}:jwtAlgorithms") or '["ES256"]'
        if "ES256" not in algorithms:
            raise StackRefused(
                f"stack {options.stack!r}: the emulator's own issuer signs ES256, which"
                f" jwtAlgorithms ({algorithms}) leaves out; add it, or set jwtIssuer"
            )
        try:
            audiences = json.loads(values.get(f"{PROJECT}:jwtAudiences") or "[]")
        except ValueError:
            audiences = [a.strip() for a in values[f"{PROJECT}:jwtAudiences"].split(",")]
        audience = next((a for a in audiences if isinstance(a, str) and a), DEFAULT_AUDIENCE)
        host = options.host if ":" not in options.host else f"[{options.host}]"
        self.issuer = LocalIssuer.generate(f"http://{host}:{self.port}", audience)
        return {"jwtIssuer": self.issuer.url, "jwtAudiences": json.dumps(audiences or [audience])}

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> Emulator:
        options = self.options
        if Emulator._running is not None:
            raise RuntimeError(
                "an emulator is already running in this process; moto's state is"
                " process-wide, so run one at a time (stop the other first)"
            )
        # Bind before building anything: a taken port fails in milliseconds, and a run that
        # never bound never writes (or removes) a state file.
        self._listener = self._listen()
        if options.write_state:
            other = running_state(options.stack)
            if other is not None:  # on another port: its put/delete/token would find this one
                self._listener.close()
                self._listener = None
                raise AlreadyRunning(options.stack, other)
        Emulator._running = self
        self.aws.start()
        await asyncio.to_thread(self.aws.reset)  # a clean slate, whatever ran here before
        mocks = RecordingMocks(
            gateway=(options.host, self.port), lookup_table=self.aws.describe_table
        )
        try:
            overrides = {**options.overrides}
            overrides.update(self._local_issuer(overrides))
            self.declared = await asyncio.to_thread(
                run_main,
                options.stack,
                secret=self.secret,
                overrides=overrides,
                mocks=mocks,
                with_defaults=True,
                root=options.root,
            )
        except ValueError as refused:  # ConfigError, SourceError, the component's checks
            raise StackRefused(f"stack {options.stack!r}: {refused}") from refused
        self.model = model_module.build(self.declared.resources)
        await asyncio.to_thread(provision, self.aws, self.model)
        self._code_dir = Path(tempfile.mkdtemp(prefix="realtime-emulator-code-"))
        worker_env = self.aws.environment()
        worker_env["AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI"] = self.management_endpoint
        workers = self.pool_sizes()
        concurrency = self.queued_concurrency()
        for function in self.model.functions.values():
            environment = {**function.environment, **worker_env}
            most = concurrency.get(function.name)
            share = (
                None if most is None else budget_share(environment, most, workers[function.name])
            )
            if share is not None:  # documented (README, the emulator); the banner stays as is
                environment["SENDER_RATE"] = str(share)
            spec = FunctionSpec(
                name=function.name,
                handler=function.handler,
                code_dir=self._materialise(function),
                environment=environment,
                timeout=function.timeout,
                memory_mb=function.memory_mb,
                arn=function.arn,
            )
            self.pools[function.name] = FunctionPool(
                spec, max_workers=workers[function.name], log=options.log
            )
        await asyncio.gather(*(pool.start() for pool in self.pools.values()))
        settings = GatewaySettings(
            host=options.host,
            port=self.port,
            idle_timeout=options.idle_timeout,
            max_connection=options.max_connection,
        )
        self._app = create_app(self.model, self.invoke, settings, options.log, self.issuer)
        console.register(self._app, self, self.console_token)
        self._runner = web.AppRunner(self._app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, self._listener).start()
        for mapping in self.model.mappings:
            if not mapping.enabled:
                continue
            poller = StreamPoller(
                mapping,
                aws=self.aws,
                invoke=self.invoke,
                function_arn=self.model.functions[mapping.function].arn,
                log=options.log,
                poll_interval=options.poll_interval,
            )
            await poller.start()
            self.pollers.append(poller)
        for queue_mapping in self.model.queue_mappings:
            if not queue_mapping.enabled:
                continue
            function = self.model.functions[queue_mapping.function]
            queue_poller = QueuePoller(
                queue_mapping,
                aws=self.aws,
                invoke=self.invoke,
                log=options.log,
                concurrency=workers[function.name],
                function_timeout=function.timeout,
            )
            await queue_poller.start()
            self.queue_pollers.append(queue_poller)
        for schedule in self.model.schedules:
            every = min(schedule.seconds, options.schedule_every)
            self.schedules.append(
                asyncio.create_task(self._run_schedule(schedule.function, schedule.logical, every))
            )
        if options.write_state:
            self._write_state()
        # What start-up built lives as long as the emulator: keep it out of the collector's
        # full passes, which otherwise pause the gateway for a quarter of a second.
        gc.collect()
        gc.freeze()
        return self

    def queued_concurrency(self) -> dict[str, int]:
        """The most invocations at once of each function an enabled SQS mapping invokes."""
        assert self.model is not None
        concurrency: dict[str, int] = {}
        for mapping in self.model.queue_mappings:
            if mapping.enabled:
                concurrency[mapping.function] = max(
                    mapping.maximum_concurrency, concurrency.get(mapping.function, 0)
                )
        return concurrency

    def pool_sizes(self) -> dict[str, int]:
        """Worker processes, at most, per function: ``max_workers``, or for a function an
        enabled SQS mapping invokes, min(its maximumConcurrency, ``sender_workers``)."""
        assert self.model is not None
        queued = {
            name: max(1, min(concurrency, self.options.sender_workers))
            for name, concurrency in self.queued_concurrency().items()
        }
        return {name: queued.get(name, self.options.max_workers) for name in self.model.functions}

    def _listen(self) -> socket.socket:
        """The gateway's listening socket (port 0: any free one), or ``PortTaken``."""
        host = self.options.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            # as asyncio's create_server does: a port in TIME_WAIT is free, a listener is not
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, self.port))
            listener.listen(128)
        except OSError as bad:
            listener.close()
            if bad.errno == errno.EADDRINUSE:
                raise PortTaken(host, self.port, self.options.stack, self._holder()) from None
            raise
        listener.setblocking(False)
        self.port = int(listener.getsockname()[1])
        return listener

    def _holder(self) -> str:
        """Who holds our port, when it is the emulator of this stack."""
        state = running_state(self.options.stack)
        if state is not None and str(state.get("url", "")).startswith(
            f"ws://{self.options.host}:{self.port}/"
        ):
            return f"by the emulator for stack {self.options.stack!r}, pid {state.get('pid')}"
        return "another emulator?"

    def _materialise(self, function: FunctionModel) -> Path:
        """Extract the function's archive (the same one Lambda would get) into a directory."""
        assert self._code_dir is not None
        digest = model_module.archive_digest(function.archive)
        target = self._code_dir / digest
        if not target.exists():
            for inside, source in function.archive.items():
                destination = target / inside
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, destination)
        return target

    async def invoke(self, function: str, event: Any) -> InvokeResult:
        return await self.pools[function].invoke(event)

    async def _run_schedule(self, function: str, rule: str, every: float) -> None:
        """Invoke ``function`` every ``every`` seconds with a scheduled event, as EventBridge
        does; a failed run is logged and the next one comes."""
        while True:
            await asyncio.sleep(every)
            event = {
                "version": "0",
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "resources": [rule],
                "detail": {},
            }
            try:
                result = await self.invoke(function, event)
            except Exception as bad:
                self.options.log(f"schedule {rule}: {function} failed: {bad}")
                continue
            if not result.ok:
                why = f"{result.error_type}: {result.error_message}"
                self.options.log(f"schedule {rule}: {function} failed: {why}")

    async def stop(self) -> None:
        """Stop everything; each step runs even if an earlier one failed."""
        try:
            for task in self.schedules:
                task.cancel()
            await asyncio.gather(*self.schedules, return_exceptions=True)
            for poller in self.pollers:
                await poller.stop()
            for queue_poller in self.queue_pollers:
                await queue_poller.stop()
            if self._runner is not None:
                await self._runner.cleanup()
        finally:
            if self._listener is not None:
                self._listener.close()  # already closed when the gateway served on it
                self._listener = None
            try:
                await asyncio.gather(
                    *(pool.close() for pool in self.pools.values()), return_exceptions=True
                )
            finally:
                if self.aws.endpoint:
                    self.aws.stop()
                if self._code_dir is not None:
                    shutil.rmtree(self._code_dir, ignore_errors=True)
                self._remove_state()
                if Emulator._running is self:
                    Emulator._running = None

    # -- state file for the CLI's put/delete/token ------------------------------------------

    def state_file(self) -> Path:
        return STATE_DIR / f"{self.options.stack}.json"

    def _write_state(self) -> None:
        """Write the state file atomically (a reader never sees half of it), mode 0600."""
        path = self.state_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "stack": self.options.stack,
            "url": self.url,
            "managementEndpoint": self.management_endpoint,
            "dynamodb": self.aws.endpoint,
            "tables": self.table_names(),
            "connectionsTable": self.connections_table(),
            "secret": self.secret,
            "tokenMaxLifetimeSeconds": self.token_max_lifetime(),
            "authMode": self.auth_mode(),
            "jwtIssuer": self.jwt_issuer(),
            "issuer": self.issuer.state() if self.issuer is not None else None,
            "pid": os.getpid(),
            "runId": self._run_id,
        }
        partial = path.with_name(f".{path.name}.{self._run_id}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, indent=2)
        os.replace(partial, path)
        self._state_written = True

    def _remove_state(self) -> None:
        """Remove the state file only if this run wrote it and it is still this run's."""
        if not self._state_written:
            return
        self._state_written = False
        path = self.state_file()
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        if isinstance(document, dict) and document.get("runId") == self._run_id:
            path.unlink(missing_ok=True)
