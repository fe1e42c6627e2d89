"""Security properties of the GitHub Actions workflows in .github/workflows.

Each property is a function that returns the problems it finds in one workflow.
The first group of tests runs them over the real workflows and expects no problem;
the second group breaks a copy of a workflow in one way and expects the matching
property to report it, so that none of these checks can pass vacuously.

The workflows themselves are linted by `make lint-workflows` (actionlint, zizmor,
schema); these tests pin down the choices that matter for this project.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.realtime_channel import RUNTIME

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS_DIR = ROOT / ".github" / "workflows"
PR = "pr.yml"
DEPLOY = "deploy.yml"

PULUMI_ACTION = "pulumi/actions"
AWS_ACTION = "aws-actions/configure-aws-credentials"
CHECKOUT_ACTION = "actions/checkout"
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?P<rest>.*)$")
VERSION_COMMENT = re.compile(r"^\s+#\s*v?\d+(\.\d+)*\b")
LONG_LIVED_KEYS = re.compile(
    r"aws-access-key-id|aws-secret-access-key|AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY",
)
# Permissions a job may hold for writing, and which jobs may hold them.
WRITE_ALLOWED = {
    "id-token": "jobs that run Pulumi (preview or deploy) and so need AWS",
    "pull-requests": "jobs that comment a preview on the pull request",
}
ORG = "acme"  # stands in for vars.PULUMI_ORG when expressions are evaluated
_VENV_DEFAULT = re.search(
    r"^VENV \?= (\S+)", (ROOT / "Makefile").read_text(encoding="utf-8"), re.MULTILINE
)
MAKEFILE_VENV = _VENV_DEFAULT.group(1) if _VENV_DEFAULT else ".venv"

Workflow = dict[str, Any]
Problems = list[str]


# --------------------------------------------------------------------------- loading


def load(name: str) -> Workflow:
    doc = yaml.safe_load((WORKFLOWS_DIR / name).read_text(encoding="utf-8"))
    assert isinstance(doc, dict), f"{name} is not a mapping"
    return doc


def raw(name: str) -> str:
    return (WORKFLOWS_DIR / name).read_text(encoding="utf-8")


def workflow_names() -> list[str]:
    return sorted(p.name for p in WORKFLOWS_DIR.glob("*.y*ml"))


def triggers(doc: Workflow) -> dict[str, Any]:
    # YAML 1.1 reads a bare `on` key as the boolean True.
    on = doc.get("on", doc.get(True))
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    assert isinstance(on, dict), "the workflow has no triggers"
    return on


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("steps") or [])


def action(step: dict[str, Any]) -> str:
    return str(step.get("uses", "")).split("@", 1)[0]


def pulumi_steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in steps(job) if action(s) == PULUMI_ACTION]


def runs_pulumi(job: dict[str, Any]) -> bool:
    return bool(pulumi_steps(job))


def comments_on_pr(job: dict[str, Any]) -> bool:
    return any(truthy(s.get("with", {}).get("comment-on-pr")) for s in pulumi_steps(job))


def truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


# ------------------------------------------------- a small GitHub expression evaluator


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<op>==|!=|&&|\|\||!|\(|\))|(?P<name>[\w.-]+))"
)


def _tokens(expr: str) -> Iterator[str]:
    pos = 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot read the expression {expr!r} at {pos}")
        pos = m.end()
        yield m.group(0).strip()


def evaluate(expr: str, context: dict[str, Any]) -> Any:
    """Evaluate the subset of the Actions expression language the workflows use:
    string literals, context paths, ==, !=, !, &&, || and parentheses."""
    toks = list(_tokens(expr))
    pos = 0

    def peek() -> str | None:
        return toks[pos] if pos < len(toks) else None

    def take() -> str:
        nonlocal pos
        pos += 1
        return toks[pos - 1]

    def atom() -> Any:
        tok = take()
        if tok == "(":
            value = disjunction()
            assert take() == ")", f"unbalanced parentheses in {expr!r}"
            return value
        if tok == "!":
            return not atom()
        if tok.startswith("'"):
            return tok[1:-1].replace("''", "'")
        if tok in ("true", "false"):
            return tok == "true"
        value: Any = context
        for part in tok.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value

    def comparison() -> Any:
        left = atom()
        while peek() in ("==", "!="):
            op, right = take(), atom()
            same = str(left).lower() == str(right).lower()
            left = same if op == "==" else not same
        return left

    def conjunction() -> Any:
        left = comparison()
        while peek() == "&&":
            take()
            right = comparison()
            left = right if left else left
        return left

    def disjunction() -> Any:
        left = conjunction()
        while peek() == "||":
            take()
            right = conjunction()
            left = left if left else right
        return left

    value = disjunction()
    assert pos == len(toks), f"unexpected {toks[pos]!r} in {expr!r}"
    return value


def render(template: Any, context: dict[str, Any]) -> str:
    """Substitute every ${{ }} in a workflow value, as the runner would."""

    def sub(m: re.Match[str]) -> str:
        value = evaluate(m.group(1), context)
        return "" if value is None or value is False else str(value)

    return re.sub(r"\$\{\{(.*?)\}\}", sub, str(template))


def context_for(
    event: str, inputs: dict[str, str] | None = None, ref: str = "refs/heads/main"
) -> dict[str, Any]:
    return {
        "github": {"event_name": event, "ref": ref},
        "inputs": inputs or {},
        "vars": {"PULUMI_ORG": ORG},
    }


def environment_name(job: dict[str, Any], context: dict[str, Any]) -> str:
    env = job.get("environment")
    if isinstance(env, dict):
        env = env.get("name")
    return render(env, context) if env else ""


def concurrency_of(doc: Workflow, job: dict[str, Any]) -> dict[str, Any]:
    conc = job.get("concurrency", doc.get("concurrency"))
    if isinstance(conc, str):
        return {"group": conc, "cancel-in-progress": False}
    return conc or {}


def dispatch_runs(doc: Workflow) -> list[dict[str, Any]]:
    """One context per choice of every workflow_dispatch choice input."""
    dispatch = triggers(doc).get("workflow_dispatch")
    if "workflow_dispatch" not in triggers(doc):
        return []
    inputs = (dispatch or {}).get("inputs") or {}
    runs: list[dict[str, str]] = [{}]
    for name, spec in inputs.items():
        options = spec.get("options") or [spec.get("default", "")]
        runs = [{**run, name: str(option)} for run in runs for option in options]
    return [context_for("workflow_dispatch", run) for run in runs]


# ------------------------------------------------------------------------ properties


def check_top_level_permissions(doc: Workflow) -> Problems:
    perms = doc.get("permissions", "missing")
    if perms == {} or perms == "read-all":
        return []
    if isinstance(perms, dict) and all(v in ("read", "none") for v in perms.values()):
        return []
    return [f"top-level permissions must be {{}} or read-only, found {perms!r}"]


def check_job_permissions(doc: Workflow) -> Problems:
    problems = []
    for name, job in doc["jobs"].items():
        perms = job.get("permissions")
        if perms is None:
            problems.append(f"job {name} does not set its own permissions")
            continue
        if isinstance(perms, str):
            problems.append(f"job {name} uses the blanket permissions {perms!r}")
            continue
        for scope, level in perms.items():
            if level != "write":
                continue
            if scope == "id-token" and runs_pulumi(job):
                continue
            if scope == "pull-requests" and comments_on_pr(job):
                continue
            allowed = WRITE_ALLOWED.get(scope, "no job")
            problems.append(f"job {name} has {scope}: write, allowed only for {allowed}")
    return problems


def check_pins(text: str) -> Problems:
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        m = USES_LINE.match(line)
        if not m:
            continue
        ref = m.group("ref").strip("'\"")
        if ref.startswith("./") or ref.startswith("docker://"):
            continue
        if not SHA_PIN.match(ref):
            problems.append(f"line {number}: {ref} is not pinned to a full commit SHA")
        elif not VERSION_COMMENT.match(m.group("rest")):
            problems.append(f"line {number}: {ref} has no '# vX.Y.Z' comment naming its version")
    return problems


def check_checkout_credentials(doc: Workflow) -> Problems:
    return [
        f"job {name}: actions/checkout without persist-credentials: false"
        for name, job in doc["jobs"].items()
        for step in steps(job)
        if action(step) == CHECKOUT_ACTION
        and step.get("with", {}).get("persist-credentials") is not False
    ]


def check_no_expressions_in_run(doc: Workflow) -> Problems:
    return [
        f"job {name}: step {step.get('name', step['run'][:30])!r} expands ${{{{ }}}} in run:"
        for name, job in doc["jobs"].items()
        for step in steps(job)
        if "run" in step and "${{" in str(step["run"])
    ]


def check_aws_through_oidc(doc: Workflow, text: str) -> Problems:
    problems = [f"long-lived AWS key: {m.group(0)}" for m in LONG_LIVED_KEYS.finditer(text)]
    for name, job in doc["jobs"].items():
        for step in steps(job):
            if action(step) == AWS_ACTION and not step.get("with", {}).get("role-to-assume"):
                problems.append(f"job {name}: {AWS_ACTION} without role-to-assume")
        if runs_pulumi(job):
            if not any(action(s) == AWS_ACTION for s in steps(job)):
                problems.append(f"job {name} runs Pulumi without assuming an AWS role")
            if job.get("permissions", {}).get("id-token") != "write":
                problems.append(f"job {name} runs Pulumi without id-token: write for OIDC")
    return problems


def made_virtualenv(run: str) -> str | None:
    """The virtualenv a `make install` command line creates, if it is one."""
    m = re.search(r"\bmake\s+install\b(?P<args>[^\n;&|]*)", run)
    if not m:
        return None
    venv = re.search(r"\bVENV=(\S+)", m.group("args"))
    return venv.group(1) if venv else MAKEFILE_VENV


def check_pulumi_runs_in_the_virtualenv(doc: Workflow, virtualenv: str) -> Problems:
    """Every job running Pulumi first makes, with `make install`, the virtualenv that
    Pulumi.yaml names, and hands Pulumi its token from the secrets."""
    problems = []
    for name, job in doc["jobs"].items():
        if not runs_pulumi(job):
            continue
        first_pulumi = next(i for i, s in enumerate(steps(job)) if action(s) == PULUMI_ACTION)
        made = {made_virtualenv(str(s.get("run", ""))) for s in steps(job)[:first_pulumi]} - {None}
        if virtualenv not in made:
            problems.append(
                f"job {name} runs Pulumi without `make install` creating {virtualenv!r} "
                f"first (it creates {sorted(map(str, made))})"
            )
        for step in pulumi_steps(job):
            token = str(step.get("env", {}).get("PULUMI_ACCESS_TOKEN", ""))
            if not token.startswith("${{ secrets."):
                problems.append(f"job {name}: PULUMI_ACCESS_TOKEN does not come from secrets")
    return problems


def check_preview(doc: Workflow) -> Problems:
    """The pull-request workflow previews dev, comments on the PR and never updates."""
    problems = []
    if "pull_request" not in triggers(doc):
        problems.append("the preview workflow does not run on pull_request")
    if "pull_request_target" in triggers(doc):
        problems.append("pull_request_target would run the preview with the base's secrets")
    previews = [
        (name, job, step)
        for name, job in doc["jobs"].items()
        for step in pulumi_steps(job)
        if step.get("with", {}).get("command") == "preview"
    ]
    if not previews:
        problems.append("no job runs pulumi/actions with command: preview")
    for name, job in doc["jobs"].items():
        for step in pulumi_steps(job):
            if step.get("with", {}).get("command") != "preview":
                problems.append(f"job {name} runs pulumi {step.get('with', {}).get('command')}")
    ctx = context_for("pull_request")
    for name, job, step in previews:
        args = step.get("with", {})
        if not truthy(args.get("comment-on-pr")):
            problems.append(f"job {name}: the preview does not set comment-on-pr: true")
        if render(args.get("stack-name", ""), ctx) != f"{ORG}/dev":
            problems.append(f"job {name}: the preview is not of the {ORG}/dev stack")
        needs = job.get("needs", [])
        if "test" not in ([needs] if isinstance(needs, str) else needs):
            problems.append(f"job {name}: the preview does not wait for the test job")
    return problems


def check_deploy(doc: Workflow) -> Problems:
    """Pushes to main update dev; prod is reachable only through workflow_dispatch on
    main; each deploy runs in the environment named like its stack and is never
    cancelled."""
    problems = []
    on = triggers(doc)
    if set(on) != {"push", "workflow_dispatch"}:
        problems.append(f"deploy must run on push and workflow_dispatch only, not {sorted(on)}")
    if (on.get("push") or {}).get("branches") != ["main"]:
        problems.append("deploy on push must be limited to the main branch")
    dispatches = dispatch_runs(doc)
    deployers = {
        name: job
        for name, job in doc["jobs"].items()
        if any(s.get("with", {}).get("command") in ("up", "update") for s in pulumi_steps(job))
    }
    if not deployers:
        problems.append("no job runs pulumi/actions with command: up")
    reached: dict[str, set[str]] = {}
    for event_ctx in [context_for(e) for e in on if e != "workflow_dispatch"] + dispatches:
        event = event_ctx["github"]["event_name"]
        for name, job in deployers.items():
            env = environment_name(job, event_ctx)
            for step in pulumi_steps(job):
                stack = render(step["with"].get("stack-name", ""), event_ctx)
                reached.setdefault(event, set()).add(stack)
                if stack != f"{ORG}/{env}":
                    problems.append(
                        f"job {name} on {event}: stack {stack!r} runs outside its "
                        f"environment {env!r}"
                    )
            conc = concurrency_of(doc, job)
            group = render(conc.get("group", ""), event_ctx)
            if env not in group.split("-"):
                problems.append(f"job {name} on {event}: concurrency group {group!r} not per stack")
            if truthy(conc.get("cancel-in-progress")):
                problems.append(f"job {name}: a deploy must not be cancelled in progress")
    # workflow_dispatch can be started on any branch: nothing but main may deploy.
    for run in dispatches:
        branch_run = context_for("workflow_dispatch", run["inputs"], ref="refs/heads/topic")
        for name, job in deployers.items():
            condition = str(job.get("if", "true")).removeprefix("${{").removesuffix("}}")
            if evaluate(condition, branch_run):
                stack = environment_name(job, branch_run)
                problems.append(f"job {name} deploys {stack} from a branch other than main")
    for event, stacks in reached.items():
        if event != "workflow_dispatch" and stacks != {f"{ORG}/dev"}:
            problems.append(f"{event} deploys {sorted(stacks)}, it may deploy dev only")
    if reached.get("workflow_dispatch", set()) != {f"{ORG}/dev", f"{ORG}/prod"}:
        problems.append(
            f"workflow_dispatch reaches {sorted(reached.get('workflow_dispatch', set()))}, "
            "expected dev and prod"
        )
    return problems


SETUP_PYTHON_ACTION = "actions/setup-python"


def check_handler_tests_on_the_lambda_runtime(doc: Workflow, runtime: str) -> Problems:
    """Some job runs the handler tests (tests/handlers) on the Python the functions run in
    AWS: the component's RUNTIME (``python3.14``) without the ``python`` prefix."""
    version = runtime.removeprefix("python")
    found = []
    for name, job in doc["jobs"].items():
        runs_handler_tests = any(
            re.search(r"\bpytest\b.*\btests/handlers\b", str(s.get("run", ""))) for s in steps(job)
        )
        if not runs_handler_tests:
            continue
        versions = {
            str(s.get("with", {}).get("python-version"))
            for s in steps(job)
            if action(s) == SETUP_PYTHON_ACTION
        }
        found.append((name, versions))
        if versions == {version}:
            return []
    return [f"no job runs tests/handlers on Python {version} ({runtime}); found {found}"]


# --------------------------------------------------------------- the real workflows


def test_the_workflows_exist() -> None:
    assert {PR, DEPLOY} <= set(workflow_names())


@pytest.mark.parametrize("name", workflow_names())
def test_top_level_permissions_are_empty_or_read_only(name: str) -> None:
    assert check_top_level_permissions(load(name)) == []


@pytest.mark.parametrize("name", workflow_names())
def test_write_permissions_only_where_needed(name: str) -> None:
    assert check_job_permissions(load(name)) == []


@pytest.mark.parametrize("name", workflow_names())
def test_every_action_is_pinned_to_a_commit(name: str) -> None:
    assert check_pins(raw(name)) == []


@pytest.mark.parametrize("name", workflow_names())
def test_checkout_does_not_persist_credentials(name: str) -> None:
    assert check_checkout_credentials(load(name)) == []


@pytest.mark.parametrize("name", workflow_names())
def test_no_expression_is_expanded_inside_a_script(name: str) -> None:
    assert check_no_expressions_in_run(load(name)) == []


@pytest.mark.parametrize("name", workflow_names())
def test_aws_is_reached_through_oidc_only(name: str) -> None:
    assert check_aws_through_oidc(load(name), raw(name)) == []


def pulumi_virtualenv() -> str:
    """runtime.options.virtualenv of Pulumi.yaml: where the program runs."""
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text(encoding="utf-8"))
    runtime = project.get("runtime")
    options = runtime.get("options") or {} if isinstance(runtime, dict) else {}
    venv = options.get("virtualenv")
    assert venv, "Pulumi.yaml names no virtualenv, so the workflows cannot prepare it"
    return str(venv)


@pytest.mark.parametrize("name", workflow_names())
def test_pulumi_runs_in_the_virtualenv_pulumi_yaml_names(name: str) -> None:
    assert check_pulumi_runs_in_the_virtualenv(load(name), pulumi_virtualenv()) == []


def test_pull_requests_get_a_commented_preview_of_dev() -> None:
    assert check_preview(load(PR)) == []


def test_prod_is_deployed_only_by_hand() -> None:
    assert check_deploy(load(DEPLOY)) == []


def test_pull_requests_run_the_handler_tests_on_the_lambda_runtime() -> None:
    assert RUNTIME.startswith("python3.")
    assert check_handler_tests_on_the_lambda_runtime(load(PR), RUNTIME) == []


# -------------------------------------------------- each property can fail


def _mutate(name: str, change: Callable[[Workflow], None]) -> Workflow:
    doc = copy.deepcopy(load(name))
    change(doc)
    return doc


def _job_running(doc: Workflow, command: str) -> dict[str, Any]:
    return next(
        job
        for job in doc["jobs"].values()
        if any(s.get("with", {}).get("command") == command for s in pulumi_steps(job))
    )


def _step(job: dict[str, Any], uses: str) -> dict[str, Any]:
    return next(s for s in steps(job) if action(s) == uses)


def _set(target: dict[str, Any], key: str, value: Any) -> None:
    target[key] = value


def _handler_test_job(doc: Workflow) -> dict[str, Any]:
    return next(
        job
        for job in doc["jobs"].values()
        if any("tests/handlers" in str(s.get("run", "")) for s in steps(job))
    )


BREAKAGES: dict[str, Callable[[], Problems]] = {
    "handler tests on another Python than the runtime": lambda: (
        check_handler_tests_on_the_lambda_runtime(load(PR), "python3.15")
    ),
    "handler tests job on the local Python": lambda: check_handler_tests_on_the_lambda_runtime(
        _mutate(
            PR,
            lambda d: _set(
                _step(_handler_test_job(d), SETUP_PYTHON_ACTION)["with"], "python-version", "3.11"
            ),
        ),
        RUNTIME,
    ),
    "no handler tests job": lambda: check_handler_tests_on_the_lambda_runtime(
        _mutate(PR, lambda d: d["jobs"].pop("handlers-on-lambda-python")), RUNTIME
    ),
    "top-level write": lambda: check_top_level_permissions(
        _mutate(PR, lambda d: _set(d, "permissions", {"contents": "write"}))
    ),
    "top-level default": lambda: check_top_level_permissions(
        _mutate(DEPLOY, lambda d: d.pop("permissions"))
    ),
    "id-token on the test job": lambda: check_job_permissions(
        _mutate(PR, lambda d: _set(d["jobs"]["test"]["permissions"], "id-token", "write"))
    ),
    "pull-requests write on the deploy job": lambda: check_job_permissions(
        _mutate(
            DEPLOY,
            lambda d: _set(_job_running(d, "up")["permissions"], "pull-requests", "write"),
        )
    ),
    "contents write": lambda: check_job_permissions(
        _mutate(DEPLOY, lambda d: _set(d["jobs"]["test"]["permissions"], "contents", "write"))
    ),
    "job without permissions": lambda: check_job_permissions(
        _mutate(PR, lambda d: d["jobs"]["test"].pop("permissions"))
    ),
    "action on a tag": lambda: check_pins(
        re.sub(r"(pulumi/actions@)[0-9a-f]{40}", r"\1v7", raw(PR))
    ),
    "action on a short SHA": lambda: check_pins(
        re.sub(r"(actions/checkout@[0-9a-f]{7})[0-9a-f]{33}", r"\1", raw(PR))
    ),
    "SHA without its version comment": lambda: check_pins(
        re.sub(r"(actions/checkout@[0-9a-f]{40}) #[^\n]*", r"\1", raw(DEPLOY))
    ),
    "checkout keeps the token": lambda: check_checkout_credentials(
        _mutate(
            PR,
            lambda d: _step(d["jobs"]["test"], CHECKOUT_ACTION)["with"].pop("persist-credentials"),
        )
    ),
    "expression in a script": lambda: check_no_expressions_in_run(
        _mutate(
            PR,
            lambda d: d["jobs"]["test"]["steps"].append(
                {"run": "echo ${{ github.event.pull_request.title }}"}
            ),
        )
    ),
    "long-lived AWS key": lambda: check_aws_through_oidc(
        load(DEPLOY),
        raw(DEPLOY) + "\n# aws-access-key-id: ${{ secrets.AWS_ACCESS_KEY_ID }}\n",
    ),
    "AWS step without a role": lambda: check_aws_through_oidc(
        _mutate(DEPLOY, lambda d: _step(_job_running(d, "up"), AWS_ACTION)["with"].clear()),
        raw(DEPLOY),
    ),
    "Pulumi without id-token": lambda: check_aws_through_oidc(
        _mutate(PR, lambda d: _job_running(d, "preview")["permissions"].pop("id-token")),
        raw(PR),
    ),
    "Pulumi before make install": lambda: check_pulumi_runs_in_the_virtualenv(
        _mutate(
            DEPLOY,
            lambda d: _set(
                _job_running(d, "up"),
                "steps",
                [s for s in steps(_job_running(d, "up")) if "run" not in s],
            ),
        ),
        pulumi_virtualenv(),
    ),
    "Pulumi.yaml naming another virtualenv": lambda: check_pulumi_runs_in_the_virtualenv(
        load(PR), "some-other-venv"
    ),
    "make install of another virtualenv in the workflow": (
        lambda: check_pulumi_runs_in_the_virtualenv(
            _mutate(
                PR,
                lambda d: [
                    _set(s, "run", "make install VENV=elsewhere")
                    for s in steps(_job_running(d, "preview"))
                    if made_virtualenv(str(s.get("run", "")))
                ],
            ),
            pulumi_virtualenv(),
        )
    ),
    "Pulumi token from a literal": lambda: check_pulumi_runs_in_the_virtualenv(
        _mutate(
            PR,
            lambda d: _set(
                _step(_job_running(d, "preview"), PULUMI_ACTION)["env"],
                "PULUMI_ACCESS_TOKEN",
                "pul-0123",
            ),
        ),
        pulumi_virtualenv(),
    ),
    "preview runs up": lambda: check_preview(
        _mutate(
            PR,
            lambda d: _set(
                _step(_job_running(d, "preview"), PULUMI_ACTION)["with"], "command", "up"
            ),
        )
    ),
    "preview without a PR comment": lambda: check_preview(
        _mutate(
            PR,
            lambda d: _set(
                _step(_job_running(d, "preview"), PULUMI_ACTION)["with"],
                "comment-on-pr",
                False,
            ),
        )
    ),
    "preview of prod": lambda: check_preview(
        _mutate(
            PR,
            lambda d: _set(
                _step(_job_running(d, "preview"), PULUMI_ACTION)["with"],
                "stack-name",
                "${{ vars.PULUMI_ORG }}/prod",
            ),
        )
    ),
    "preview not waiting for the tests": lambda: check_preview(
        _mutate(PR, lambda d: _job_running(d, "preview").pop("needs"))
    ),
    "preview on pull_request_target": lambda: check_preview(
        _mutate(PR, lambda d: _set(d, True, {"pull_request_target": {"branches": ["main"]}}))
    ),
    "push deploys prod": lambda: check_deploy(
        _mutate(
            DEPLOY,
            lambda d: _set(
                _step(_job_running(d, "up"), PULUMI_ACTION)["with"],
                "stack-name",
                "${{ vars.PULUMI_ORG }}/${{ inputs.stack || 'prod' }}",
            ),
        )
    ),
    "push reaches the prod environment": lambda: check_deploy(
        _mutate(
            DEPLOY,
            lambda d: _set(_job_running(d, "up"), "environment", "${{ inputs.stack || 'prod' }}"),
        )
    ),
    "stack outside its environment": lambda: check_deploy(
        _mutate(DEPLOY, lambda d: _set(_job_running(d, "up"), "environment", "dev"))
    ),
    "deploy on pull requests": lambda: check_deploy(
        _mutate(DEPLOY, lambda d: _set(triggers(d), "pull_request", {"branches": ["main"]}))
    ),
    "deploy from any branch": lambda: check_deploy(
        _mutate(DEPLOY, lambda d: triggers(d)["push"].pop("branches"))
    ),
    "dispatch cannot reach prod": lambda: check_deploy(
        _mutate(
            DEPLOY,
            lambda d: _set(triggers(d)["workflow_dispatch"]["inputs"]["stack"], "options", ["dev"]),
        )
    ),
    "deploy from a branch by hand": lambda: check_deploy(
        _mutate(DEPLOY, lambda d: _job_running(d, "up").pop("if"))
    ),
    "deploy cancelled in progress": lambda: check_deploy(
        _mutate(
            DEPLOY,
            lambda d: _set(
                _job_running(d, "up"),
                "concurrency",
                {"group": "deploy-${{ inputs.stack || 'dev' }}", "cancel-in-progress": True},
            ),
        )
    ),
    "one concurrency group for every stack": lambda: check_deploy(
        _mutate(
            DEPLOY,
            lambda d: _set(_job_running(d, "up"), "concurrency", {"group": "deploy"}),
        )
    ),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_each_property_catches_its_breakage(breakage: str) -> None:
    assert BREAKAGES[breakage](), f"{breakage!r} went unnoticed"


def test_the_helpers() -> None:
    assert made_virtualenv("make install") == MAKEFILE_VENV
    assert made_virtualenv("make install VENV=venv") == "venv"
    assert made_virtualenv("make test VENV=venv") is None
    expr = "github.event_name == 'workflow_dispatch' && inputs.stack || 'dev'"
    assert evaluate(expr, context_for("push")) == "dev"
    assert evaluate(expr, context_for("workflow_dispatch", {"stack": "prod"})) == "prod"
    assert evaluate("!(inputs.x == 'a')", context_for("push", {"x": "a"})) is False
    assert render("${{ vars.PULUMI_ORG }}/x", context_for("push")) == f"{ORG}/x"
    with pytest.raises(ValueError):
        evaluate("inputs.stack | 'dev'", context_for("push"))
