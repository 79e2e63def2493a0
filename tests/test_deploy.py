"""The deployment files of chapters 5 and 6 (solutions/*/deploy/), validated offline.

No cluster and no Docker engine here, so nothing is applied or started:

- every Kubernetes manifest validates against the schema of a pinned Kubernetes version, in
  strict mode (an unknown field, a misspelled probe for instance, is an error: a test below
  proves it on a modified copy), and keeps the invariants the chapters teach (replicas, both
  probes, a rolling update that never drops below the replica count, a preStop sleep shorter
  than the grace period, every secret from a Secret, pool arithmetic);
- the compose files pass `docker-compose config -q` (Debian's docker-compose, as
  tests/test_compose.py) and their backend can be scaled;
- nginx.conf passes `nginx -t` (Debian's nginx, on a copy whose upstream host resolves here,
  run from a temporary prefix: the system's nginx is never touched) and follows the same
  rules as the balancer the grader starts (grader/toolkit/balancer.py).

Chapter 6 adds the migration as a step of its own: a one-shot `migrate` service in compose that
the backends wait for, a Job in Kubernetes, and a release order (in k8s/kustomization.yaml)
that runs it before the backends' rollout; the backends never run Alembic. SECRET_KEY comes
from a Secret (Kubernetes) or from the environment (compose, which refuses to start without
it), never from a value written in the files, and only the backends get it.

The learner's copy, chapters/<chapter>/deploy/, is given code: the starter generator copies
it unchanged, and a test checks that it did.
"""

from __future__ import annotations

import ast
import copy
import filecmp
import functools
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import kubernetes_validate
import pytest
import yaml
from sqlalchemy.engine import make_url

from grader.toolkit import balancer

ROOT = Path(__file__).resolve().parent.parent
# The oldest Kubernetes the manifests promise to run on (the preStop `sleep` action is 1.30+).
K8S_VERSION = "1.31.0"
WORKLOADS = ("Deployment", "StatefulSet", "Job")
# Environment variables whose value is a secret: never written in a manifest.
SECRET_ENV = ("DATABASE_URL", "POSTGRES_PASSWORD", "SECRET_KEY", "LEGACY_OWNER_PASSWORD")
# What the tests give compose for `${SECRET_KEY:?...}` (chapter 5's file does not use it).
TEST_KEY = "a-key-of-the-deploy-tests-32-bytes-or-more"
# The container's copy of the repository (the Dockerfile's WORKDIR, compose's mount).
WORKBOOK = "/workbook"


@dataclass(frozen=True)
class Chapter:
    number: int
    slug: str

    @property
    def id(self) -> str:
        return f"ch{self.number:02d}"

    @property
    def solution(self) -> Path:
        return ROOT / "solutions" / self.slug / "deploy"

    @property
    def starter(self) -> Path:
        return ROOT / "chapters" / self.slug / "deploy"

    @property
    def copies(self) -> tuple[Path, Path]:
        return (self.solution, self.starter)

    @property
    def k8s(self) -> Path:
        return self.solution / "k8s"

    @property
    def image(self) -> str:
        return f"make-it-scale-{self.id}"

    @property
    def migrates(self) -> bool:
        """From chapter 6 the schema is Alembic's: a step of its own before the backends."""
        return self.number >= 6


CH05 = Chapter(5, "05-scale-out")
CH06 = Chapter(6, "06-users-and-migrations")
CHAPTERS = [CH05, CH06]
BY_CHAPTER = pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.id)


def _copies(*chapters: Chapter) -> list[Any]:
    """(chapter, folder) for each copy (solutions/, chapters/) of each chapter's deploy/ folder,
    as the params of a fixture or of a test's single argument."""
    return [
        pytest.param((chapter, folder), id=f"{chapter.id}-{folder.parts[-3]}")
        for chapter in chapters
        for folder in chapter.copies
    ]


def _missing(tool: str, package: str) -> None:
    """Skip on a developer's machine without the tool; fail in CI, which must have it."""
    if os.environ.get("CI"):
        pytest.fail(
            f"{tool} is not installed; CI must have it (.ci/run installs Debian's {package} "
            "package)",
            pytrace=False,
        )
    pytest.skip(f"{tool} is not installed (apt-get install {package})")


# --- the learner's copy ---------------------------------------------------------------------


@BY_CHAPTER
def test_the_starter_copy_is_the_solution_unchanged(chapter: Chapter) -> None:
    solution, starter = chapter.copies
    want = sorted(p.relative_to(solution) for p in solution.rglob("*") if p.is_file())
    have = sorted(p.relative_to(starter) for p in starter.rglob("*") if p.is_file())
    assert want, f"{solution} holds no file"
    assert have == want, "chapters/ is out of date: run `grader dev starters`"
    for rel in want:
        assert filecmp.cmp(solution / rel, starter / rel, shallow=False), (
            f"chapters/{chapter.slug}/deploy/{rel} differs from the solution's: run "
            "`grader dev starters`"
        )


# --- Kubernetes -----------------------------------------------------------------------------


def _kustomization(chapter: Chapter) -> dict[str, Any]:
    return yaml.safe_load((chapter.k8s / "kustomization.yaml").read_text(encoding="utf-8"))


@functools.cache
def _resources(chapter: Chapter) -> list[tuple[str, dict[str, Any]]]:
    """(file, document) for every resource kustomization.yaml applies (read once: never
    modify one, deepcopy it)."""
    out = []
    for name in _kustomization(chapter)["resources"]:
        text = (chapter.k8s / name).read_text(encoding="utf-8")
        out += [(name, doc) for doc in yaml.safe_load_all(text) if doc is not None]
    return out


def _workloads(chapter: Chapter) -> list[dict[str, Any]]:
    return [d for _, d in _resources(chapter) if d["kind"] in WORKLOADS]


def _one(chapter: Chapter, kind: str, name: str) -> dict[str, Any]:
    found = [
        d for _, d in _resources(chapter) if d["kind"] == kind and d["metadata"]["name"] == name
    ]
    assert len(found) == 1, f"{chapter.id}: expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def _pod(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _backend(chapter: Chapter) -> dict[str, Any]:
    return _one(chapter, "Deployment", "backend")


def _backend_container(chapter: Chapter) -> dict[str, Any]:
    (container,) = [c for c in _pod(_backend(chapter))["containers"] if c["name"] == "backend"]
    return container


def _strict_errors(doc: dict[str, Any]) -> str | None:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path) or "(top)"
        return f"{where}: {exc.message}"
    return None


@BY_CHAPTER
def test_kustomization_applies_every_manifest(chapter: Chapter) -> None:
    kustomization = _kustomization(chapter)
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    # kustomize's own schema is not among Kubernetes': at least no misspelled top-level key.
    assert set(kustomization) <= {"apiVersion", "kind", "resources", "images", "namespace"}
    files = {p.name for p in chapter.k8s.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files, "kustomization.yaml must list every file"
    assert len(kustomization["resources"]) == len(files), "a file listed twice"
    assert [i["name"] for i in kustomization["images"]] == [chapter.image]


@pytest.mark.parametrize(
    ("chapter", "resource"),
    [
        pytest.param(
            chapter,
            resource,
            id=f"{chapter.id}-{resource[0]}:{resource[1]['kind']}/{resource[1]['metadata']['name']}",
        )
        for chapter in CHAPTERS
        for resource in _resources(chapter)
    ],
)
def test_manifest_validates_strictly(
    chapter: Chapter, resource: tuple[str, dict[str, Any]]
) -> None:
    _, doc = resource
    problem = _strict_errors(doc)
    assert problem is None, f"not a valid {doc['kind']} for Kubernetes {K8S_VERSION}: {problem}"


def test_strict_validation_rejects_a_misspelled_field() -> None:
    """The validation above can fail: a misspelled probe is exactly what non-strict accepts."""
    doc = copy.deepcopy(_backend(CH06))
    container = next(c for c in _pod(doc)["containers"] if c["name"] == "backend")
    container["readynessProbe"] = container.pop("readinessProbe")
    # Kubernetes' schemas allow unknown fields unless told not to: this typo would be applied,
    # and the pod would simply have no readiness probe.
    assert kubernetes_validate.validate(doc, K8S_VERSION, strict=False)
    problem = _strict_errors(doc)
    assert problem is not None and "readynessProbe" in problem, problem
    # A wrong type fails too, strict or not.
    doc = copy.deepcopy(_backend(CH06))
    doc["spec"]["replicas"] = "three"
    assert _strict_errors(doc) is not None


@BY_CHAPTER
def test_backend_runs_three_replicas_with_a_rolling_update_that_keeps_them(
    chapter: Chapter,
) -> None:
    spec = _backend(chapter)["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["strategy"]["rollingUpdate"]["maxSurge"] == 1


@BY_CHAPTER
def test_backend_probes(chapter: Chapter) -> None:
    container = _backend_container(chapter)
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    # Readiness answers within 1 s (READY_TIMEOUT_SECONDS); the probe must wait longer.
    assert container["readinessProbe"].get("timeoutSeconds", 1) >= 2
    startup = container.get("startupProbe")
    if startup is not None:
        assert startup["httpGet"]["path"] == "/health"


@BY_CHAPTER
def test_every_container_has_resource_requests(chapter: Chapter) -> None:
    for doc in _workloads(chapter):
        for container in _containers(_pod(doc)):
            where = f"{doc['kind']}/{doc['metadata']['name']} container {container['name']}"
            requests = container.get("resources", {}).get("requests", {})
            assert {"cpu", "memory"} <= set(requests), f"{where}: no cpu and memory requests"
            assert "memory" in container["resources"].get("limits", {}), f"{where}: no memory limit"


def _port_names(container: dict[str, Any]) -> dict[str | int, int]:
    ports: dict[str | int, int] = {}
    for port in container.get("ports", []):
        ports[port["containerPort"]] = port["containerPort"]
        if "name" in port:
            ports[port["name"]] = port["containerPort"]
    return ports


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.id)
@pytest.mark.parametrize(
    ("service", "workload"),
    [("backend", "Deployment"), ("frontend", "Deployment"), ("postgres", "StatefulSet")],
)
def test_service_selects_its_pods_and_their_port(
    chapter: Chapter, service: str, workload: str
) -> None:
    svc, owner = _one(chapter, "Service", service), _one(chapter, workload, service)
    selector = svc["spec"]["selector"]
    labels = owner["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items(), f"{service}: the selector matches no pod"
    assert owner["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports: dict[str | int, int] = {}
    for container in owner["spec"]["template"]["spec"]["containers"]:
        ports |= _port_names(container)
    for port in svc["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        assert target in ports, f"{service}: targetPort {target!r} is no container port"


def _dockerfile(chapter: Chapter) -> str:
    return (chapter.solution / "Dockerfile").read_text(encoding="utf-8")


def _dockerfile_cmd(chapter: Chapter) -> list[str]:
    cmd = re.search(r"^CMD (\[.*\])$", _dockerfile(chapter), re.M)
    assert cmd, "the Dockerfile has no CMD [...]"
    return ast.literal_eval(cmd[1])


@BY_CHAPTER
def test_backend_listens_on_its_container_port_and_runs_the_chapter(chapter: Chapter) -> None:
    container = _backend_container(chapter)
    command = container["command"]
    port = int(command[command.index("--port") + 1])
    assert port in _port_names(container).values()
    app_dir = command[command.index("--app-dir") + 1]
    assert app_dir == f"chapters/{chapter.slug}"
    assert (ROOT / app_dir / "backend" / "main.py").is_file()
    # The same command the image runs by default.
    assert _dockerfile_cmd(chapter) == command


@BY_CHAPTER
def test_the_grace_period_outlasts_the_prestop_sleep(chapter: Chapter) -> None:
    pod = _pod(_backend(chapter))
    pre_stop = _backend_container(chapter)["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        sleep = int(pre_stop["sleep"]["seconds"])
    else:  # exec: ["sleep", "N"]
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep", command
        sleep = int(command[1])
    assert sleep >= 5, "the sleep must outlast the endpoint removal (a few seconds)"
    # What is left after the sleep is uvicorn's drain: at least the database deadline (5 s).
    assert pod["terminationGracePeriodSeconds"] >= sleep + 10


def _secrets(chapter: Chapter) -> dict[str, dict[str, str]]:
    """Every shipped Secret: name -> {key: value} (stringData; data is base64 and unused)."""
    return {
        d["metadata"]["name"]: {**d.get("data", {}), **d.get("stringData", {})}
        for _, d in _resources(chapter)
        if d["kind"] == "Secret"
    }


@BY_CHAPTER
def test_secrets_come_from_a_secret_never_inline(chapter: Chapter) -> None:
    secrets = _secrets(chapter)
    for doc in _workloads(chapter):
        for container in _containers(_pod(doc)):
            where = f"{doc['kind']}/{doc['metadata']['name']} container {container['name']}"
            assert "envFrom" not in container, f"{where}: every variable it gets is named"
            for name, env in _env(container).items():
                if name in SECRET_ENV:
                    assert "value" not in env, f"{where}: {name} written inline"
                    assert "secretKeyRef" in env.get("valueFrom", {}), f"{where}: {name}"
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref is None or ref.get("optional"):
                    continue
                # A missing Secret or key would keep the pod from starting at all.
                assert ref["key"] in secrets.get(ref["name"], {}), f"{where}: {ref} is not shipped"
    assert "DATABASE_URL" in _env(_backend_container(chapter))


@BY_CHAPTER
def test_the_secret_url_matches_the_postgres_it_ships(chapter: Chapter) -> None:
    secret = _secrets(chapter)["database"]
    url = make_url(secret["DATABASE_URL"])
    env = _env(_pod(_one(chapter, "StatefulSet", "postgres"))["containers"][0])
    assert url.password == secret["POSTGRES_PASSWORD"], "percent-encoding: decoded, they match"
    assert url.username == env["POSTGRES_USER"]["value"]
    assert url.database == env["POSTGRES_DB"]["value"]
    assert (url.host, url.port) == ("postgres", 5432)
    assert url.drivername == "postgresql+psycopg"


def _pool_per_instance(chapter: Chapter) -> int:
    """POOL_SIZE + MAX_OVERFLOW of the chapter's backend/db.py (read, not imported)."""
    source = (ROOT / "solutions" / chapter.slug / "backend" / "db.py").read_text("utf-8")
    values = {
        node.targets[0].id: node.value.value
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
    }
    return values["POOL_SIZE"] + values["MAX_OVERFLOW"]


def _max_connections(args: list[str]) -> int:
    joined = " ".join(args)
    m = re.search(r"max_connections=(\d+)", joined)
    assert m, f"max_connections is not set: {joined}"
    return int(m[1])


@BY_CHAPTER
def test_pool_arithmetic_fits_postgres(chapter: Chapter) -> None:
    spec = _backend(chapter)["spec"]
    during_rollout = spec["replicas"] + spec["strategy"]["rollingUpdate"]["maxSurge"]
    # A migration holds one connection (migrations/env.py: no pool) per pod the Job runs at once.
    jobs = sum(d["spec"].get("parallelism", 1) for d in _workloads(chapter) if d["kind"] == "Job")
    postgres = _pod(_one(chapter, "StatefulSet", "postgres"))["containers"][0]
    needed = during_rollout * _pool_per_instance(chapter) + jobs
    assert needed < _max_connections(postgres["args"])


@BY_CHAPTER
def test_images_are_the_placeholder_or_pinned(chapter: Chapter) -> None:
    for doc in _workloads(chapter):
        for container in _containers(_pod(doc)):
            image = container["image"]
            if image.startswith(f"{chapter.image}:"):
                # A loaded image (kind) runs only if Kubernetes does not insist on pulling it.
                assert not image.endswith(":latest")
                assert container.get("imagePullPolicy") == "IfNotPresent"
            else:
                assert re.fullmatch(r"[\w./-]+:\d[\w.-]*", image), f"unpinned image {image}"


@BY_CHAPTER
def test_the_dockerfile_copies_what_exists(chapter: Chapter) -> None:
    dockerfile = _dockerfile(chapter)
    assert re.search(r"^FROM python:3\.11", dockerfile, re.M)
    assert re.search(rf"^WORKDIR {WORKBOOK}$", dockerfile, re.M)
    ignore = (chapter.solution / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    assert {".venv", ".git"} <= set(ignore), "the build context would carry .venv/ and .git/"


# --- Kubernetes, chapter 6: the migration Job and the signing key ----------------------------


def _job() -> dict[str, Any]:
    return _one(CH06, "Job", "migrate")


def _job_container() -> dict[str, Any]:
    (container,) = _pod(_job())["containers"]
    return container


def test_the_job_runs_alembic_upgrade_head_from_the_chapter() -> None:
    job, container = _job(), _job_container()
    assert container["command"] == ["alembic", "upgrade", "head"]
    # From the chapter folder, where alembic.ini is, inside the image's copy of the repository.
    assert container["workingDir"] == f"{WORKBOOK}/chapters/{CH06.slug}"
    assert (ROOT / "chapters" / CH06.slug / "alembic.ini").is_file()
    # The same code as the backends it migrates for.
    assert container["image"] == _backend_container(CH06)["image"]
    pod = _pod(job)
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    # A few retries for what a retry fixes; a migration that fails alike each time must not
    # go on for Kubernetes' default of 6 (with back-offs of up to minutes between them).
    assert 0 <= job["spec"]["backoffLimit"] <= 3
    ref = _env(container)["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == _env(_backend_container(CH06))["DATABASE_URL"]["valueFrom"]["secretKeyRef"]


def test_the_job_waits_for_the_database_like_the_backends() -> None:
    (job_wait,) = _pod(_job())["initContainers"]
    (backend_wait,) = _pod(_backend(CH06))["initContainers"]
    assert job_wait == backend_wait
    assert " ".join(job_wait["command"]).startswith("grader db wait")


def test_the_job_gets_no_signing_key() -> None:
    for container in _containers(_pod(_job())):
        assert "SECRET_KEY" not in _env(container), f"{container['name']} needs no SECRET_KEY"
    # The Secrets the Job reads hold no signing key either (access is granted per Secret).
    read = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for c in _containers(_pod(_job()))
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    secrets = _secrets(CH06)
    for name in read & set(secrets):
        assert "SECRET_KEY" not in secrets[name], f"the Job reads Secret {name}, which holds it"


def test_every_backend_gets_the_signing_key_from_a_secret() -> None:
    secrets = _secrets(CH06)
    for container in _pod(_backend(CH06))["containers"]:
        env = _env(container).get("SECRET_KEY")
        assert env is not None, f"{container['name']} has no SECRET_KEY"
        assert "value" not in env, "SECRET_KEY written in the manifest"
        ref = env["valueFrom"]["secretKeyRef"]
        assert not ref.get("optional"), "without the key the backend does not start"
        # The placeholder has the size the backend requires (settings.MIN_SECRET_KEY_BYTES).
        assert len(secrets[ref["name"]][ref["key"]].encode()) >= 32
    # Nothing else gets it: not the page, not Postgres.
    for doc in _workloads(CH06):
        if doc["metadata"]["name"] == "backend":
            continue
        for container in _containers(_pod(doc)):
            assert "SECRET_KEY" not in _env(container), f"{doc['metadata']['name']} has it"


def test_the_backends_never_migrate() -> None:
    for container in _containers(_pod(_backend(CH06))):
        run = " ".join(container.get("command", []) + container.get("args", []))
        assert "alembic" not in run, f"{container['name']} runs {run}"
    assert "alembic" not in " ".join(_dockerfile_cmd(CH06))


def _selected(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_no_service_or_budget_selects_the_job() -> None:
    labels = _job()["spec"]["template"]["metadata"]["labels"]
    for _, doc in _resources(CH06):
        if doc["kind"] == "Service":
            selector = doc["spec"]["selector"]
        elif doc["kind"] == "PodDisruptionBudget":
            selector = doc["spec"]["selector"]["matchLabels"]
        else:
            continue
        assert not _selected(selector, labels), f"{doc['kind']}/{doc['metadata']['name']}"


def _commented_commands(path: Path) -> list[list[str]]:
    """The `kubectl ...` commands in a file's comments (indented as examples), words split."""
    commands: list[list[str]] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"#   (\S.*)", line) or (
            re.fullmatch(r"#\s+(\S.*)", line) if pending else None
        )
        if not m or m[1].startswith("#"):
            continue
        pending += m[1]
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        if pending.startswith("kubectl "):
            commands.append(shlex.split(pending))
        pending = ""
    return commands


def _label_query(query: str, labels: dict[str, str]) -> bool:
    """kubectl's `-l` with `=`, `==` and `!=` (`!=` also matches a missing label)."""
    for requirement in query.split(","):
        m = re.fullmatch(r"\s*([\w./-]+)\s*(!=|==|=)\s*([\w.-]*)\s*", requirement)
        assert m, f"not a requirement kubectl's -l knows: {requirement!r}"
        key, op, value = m.groups()
        if (labels.get(key) == value) == (op == "!="):
            return False
    return True


def test_a_release_migrates_before_the_backends_roll_out() -> None:
    """kustomization.yaml's commands: the Job alone first, waited for, then the rest."""
    commands = _commented_commands(CH06.k8s / "kustomization.yaml")
    where = f"chapters/{CH06.slug}/deploy/k8s"
    steps = [c for c in commands if c[1] in ("apply", "delete", "wait")]
    assert [c[1] for c in steps] == ["delete", "apply", "wait", "apply"], steps
    delete, first, wait, last = steps
    # A finished Job cannot take a new image: each release replaces it (it has no TTL).
    assert delete[2:4] == ["job", "migrate"] and "--ignore-not-found" in delete
    assert "ttlSecondsAfterFinished" not in _job()["spec"]
    assert first[2:4] == ["-k", where] and last[2:] == ["-k", where]
    assert (ROOT / where / "kustomization.yaml").is_file()
    assert "--for=condition=complete" in wait and "job/migrate" in wait
    assert any(w.startswith("--timeout=") for w in wait), "a wait that never ends"
    # The first apply: the Job and what it needs, not the code that serves.
    query = first[first.index("-l") + 1]
    chosen = {
        (d["kind"], d["metadata"]["name"])
        for _, d in _resources(CH06)
        if _label_query(query, d["metadata"].get("labels", {}))
    }
    assert {("Job", "migrate"), ("StatefulSet", "postgres"), ("Secret", "database")} <= chosen
    for _, doc in _resources(CH06):
        component = doc["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        if component in ("backend", "frontend") or doc["kind"] == "Deployment":
            assert (doc["kind"], doc["metadata"]["name"]) not in chosen, doc["metadata"]


# --- compose --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_exe() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        _missing("docker-compose", "docker-compose")
    return exe


def _compose(
    exe: str, folder: Path, *args: str, env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    """docker-compose on `folder`/compose.yaml, with SECRET_KEY=TEST_KEY unless `env` says
    otherwise (None: unset)."""
    # A developer's shell may set these; the file's defaults are what is under test.
    mine = ("ASSISTANT_PROVIDER", "DATABASE_URL", "LEGACY_OWNER", "LEGACY_OWNER_PASSWORD")
    run_env = {k: v for k, v in os.environ.items() if k not in mine}
    for key, value in {"SECRET_KEY": TEST_KEY, **(env or {})}.items():
        if value is None:
            run_env.pop(key, None)
        else:
            run_env[key] = value
    return subprocess.run(
        [exe, "-f", str(folder / "compose.yaml"), *args],
        cwd=ROOT,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@functools.cache
def _config(exe: str, folder: Path) -> dict[str, Any]:
    """`docker-compose config` of one copy: validated, interpolated, paths made absolute."""
    quiet = _compose(exe, folder, "config", "-q")
    assert quiet.returncode == 0, f"docker-compose config -q failed:\n{quiet.stderr}"
    proc = _compose(exe, folder, "config")
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


@pytest.fixture(params=_copies(*CHAPTERS))
def compose(request: pytest.FixtureRequest, compose_exe: str) -> tuple[Chapter, Path, dict]:
    """(chapter, folder, its interpolated services) for each copy of each chapter."""
    chapter, folder = request.param
    return chapter, folder, _config(compose_exe, folder)["services"]


@pytest.fixture(params=_copies(CH06))
def compose06(request: pytest.FixtureRequest, compose_exe: str) -> tuple[Path, dict]:
    _, folder = request.param
    return folder, _config(compose_exe, folder)["services"]


def _workbook_services(services: dict[str, Any]) -> list[str]:
    """The services that run the repository's code (the `x-workbook` ones)."""
    return [n for n, s in services.items() if s.get("working_dir") == WORKBOOK]


def test_compose_has_its_services(compose: tuple[Chapter, Path, dict]) -> None:
    chapter, _, services = compose
    want = {"postgres", "backend", "nginx", "frontend"} | (
        {"migrate"} if chapter.migrates else set()
    )
    assert set(services) == want


def test_compose_backend_can_be_scaled(compose: tuple[Chapter, Path, dict]) -> None:
    chapter, _, services = compose
    backend = services["backend"]
    # A fixed host port or a container name exists once per host: `--scale backend=3` fails.
    assert "ports" not in backend
    assert "container_name" not in backend
    assert "/health/ready" in " ".join(backend["healthcheck"]["test"])
    command = " ".join(backend["command"])
    assert f"--app-dir chapters/{chapter.slug}" in command and "grader db wait" in command


def test_compose_publishes_on_loopback_only(compose: tuple[Chapter, Path, dict]) -> None:
    _, _, services = compose
    for name, service in services.items():
        for port in service.get("ports", []):
            text = port if isinstance(port, str) else f"{port.get('host_ip')}:{port}"
            assert text.startswith("127.0.0.1:"), f"{name} publishes {port} beyond 127.0.0.1"
    assert [p.split(":")[:3] for p in services["nginx"]["ports"]] == [
        ["127.0.0.1", "8000", "80/tcp"]
    ]
    assert services["frontend"]["environment"]["BACKEND_URL"] == "http://nginx"
    assert services["nginx"]["depends_on"]["backend"]["condition"] == "service_healthy"


def test_compose_mounts_the_repository_and_its_nginx_conf(
    compose: tuple[Chapter, Path, dict],
) -> None:
    chapter, folder, services = compose
    code = _workbook_services(services)
    assert {"backend", "frontend"} | ({"migrate"} if chapter.migrates else set()) <= set(code)
    for name in code:
        mounts = {v.split(":")[1]: v.split(":")[0] for v in services[name]["volumes"]}
        assert Path(mounts[WORKBOOK]) == ROOT, f"{name} mounts {mounts[WORKBOOK]}"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["nginx"]["volumes"]}
    assert Path(mounts["/etc/nginx/nginx.conf"]) == folder / "nginx.conf"


def test_compose_url_matches_its_postgres(compose: tuple[Chapter, Path, dict]) -> None:
    chapter, _, services = compose
    url = make_url(services["backend"]["environment"]["DATABASE_URL"])
    env = services["postgres"]["environment"]
    assert url.password == env["POSTGRES_PASSWORD"] == unquote("p%40ss%3Aw%2Frd%2542")
    assert (url.username, url.database, url.host) == (
        env["POSTGRES_USER"],
        env["POSTGRES_DB"],
        "postgres",
    )
    for name in _workbook_services(services):
        if "DATABASE_URL" in services[name]["environment"]:
            assert make_url(services[name]["environment"]["DATABASE_URL"]) == url, name
    # The arithmetic the header comment states: 3 backends fit with room to spare.
    assert 3 * _pool_per_instance(chapter) < _max_connections(services["postgres"]["command"])


# --- compose, chapter 6: the migrate service and SECRET_KEY ----------------------------------


def test_compose_migrates_once_before_the_backends(compose06: tuple[Path, dict]) -> None:
    _, services = compose06
    migrate = services["migrate"]
    command = " ".join(migrate["command"])
    # Waits for the database, then migrates from the chapter folder, where alembic.ini is.
    assert re.search(
        rf"grader db wait .*&& cd chapters/{CH06.slug} && exec alembic upgrade head$", command
    ), command
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    # One-shot: a restart policy would run it again and again after it exited.
    assert migrate.get("restart", "no") == "no"
    assert "ports" not in migrate and "healthcheck" not in migrate
    assert "SECRET_KEY" not in migrate["environment"], "a migration signs no token"
    assert services["backend"]["depends_on"]["migrate"] == {
        "condition": "service_completed_successfully"
    }
    for name, service in services.items():
        if name != "migrate":
            assert "alembic" not in " ".join(service.get("command") or []), f"{name} migrates"


def test_compose_legacy_owner_is_optional(compose_exe: str, compose06: tuple[Path, dict]) -> None:
    folder, services = compose06
    env = services["migrate"]["environment"]
    # Unset: the migration's own defaults (`legacy`, with a password nobody is told).
    assert (env["LEGACY_OWNER"], env["LEGACY_OWNER_PASSWORD"]) == ("legacy", "")
    proc = _compose(
        compose_exe,
        folder,
        "config",
        env={"LEGACY_OWNER": "old-threads", "LEGACY_OWNER_PASSWORD": "p@ss word"},
    )
    assert proc.returncode == 0, proc.stderr
    env = yaml.safe_load(proc.stdout)["services"]["migrate"]["environment"]
    assert (env["LEGACY_OWNER"], env["LEGACY_OWNER_PASSWORD"]) == ("old-threads", "p@ss word")


@pytest.mark.parametrize("unset", [None, ""], ids=["unset", "empty"])
def test_compose_refuses_to_start_without_secret_key(
    compose_exe: str, compose06: tuple[Path, dict], unset: str | None
) -> None:
    folder, _ = compose06
    proc = _compose(compose_exe, folder, "config", "-q", env={"SECRET_KEY": unset})
    assert proc.returncode != 0, "compose accepted the file without SECRET_KEY"
    assert "SECRET_KEY" in proc.stderr, proc.stderr


def test_compose_gives_every_backend_the_shells_secret_key(
    compose06: tuple[Path, dict],
) -> None:
    folder, services = compose06
    # From the environment, never a value of the file: what the shell set is what they get.
    assert services["backend"]["environment"]["SECRET_KEY"] == TEST_KEY
    raw = yaml.safe_load((folder / "compose.yaml").read_text(encoding="utf-8"))
    assert re.fullmatch(
        r"\$\{SECRET_KEY:\?[^}]+\}", raw["services"]["backend"]["environment"]["SECRET_KEY"]
    )
    # Only the backends: the page checks no token, the migration signs none.
    for name, service in services.items():
        if name != "backend":
            assert "SECRET_KEY" not in (service.get("environment") or {}), name


# --- nginx ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nginx_exe() -> str:
    exe = balancer.nginx_binary()
    if exe is None:
        _missing("nginx", "nginx")
    return exe


def _nginx_test(exe: str, text: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on `text`, with the upstream resolvable here and every path under `folder`."""
    assert "server backend:8000 " in text
    text = text.replace("server backend:8000 ", "server 127.0.0.1:8000 ")
    temp = "".join(
        f"    {kind}_temp_path {folder}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace("\nhttp {\n", "\nhttp {\n" + temp, 1)
    conf = folder / "nginx.conf"
    conf.write_text(text, encoding="utf-8")
    pid = f"pid {folder}/nginx.pid;"  # not the system's /run/nginx.pid
    return subprocess.run(
        [exe, "-t", "-p", str(folder), "-c", str(conf), "-e", "stderr", "-g", pid],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("deploy", _copies(*CHAPTERS))
def test_nginx_conf_passes_nginx_t(
    nginx_exe: str, deploy: tuple[Chapter, Path], tmp_path: Path
) -> None:
    _, folder = deploy
    proc = _nginx_test(nginx_exe, (folder / "nginx.conf").read_text(encoding="utf-8"), tmp_path)
    assert proc.returncode == 0, f"nginx -t failed:\n{proc.stderr}"
    assert "test is successful" in proc.stderr


def test_nginx_t_rejects_a_misspelled_directive(nginx_exe: str, tmp_path: Path) -> None:
    text = (CH06.solution / "nginx.conf").read_text(encoding="utf-8")
    proc = _nginx_test(
        nginx_exe, text.replace("proxy_next_upstream ", "proxy_next_upstrem "), tmp_path
    )
    assert proc.returncode != 0 and "proxy_next_upstrem" in proc.stderr, proc.stderr


def _directives(text: str) -> dict[str, list[str]]:
    """Every `name value;` directive outside comments: name -> its values, in order."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if m := re.fullmatch(r"([a-z_]+)\s+([^{};]+);", line):
            found.setdefault(m[1], []).append(m[2].strip())
    return found


@BY_CHAPTER
def test_nginx_conf_follows_the_rules_of_the_graders_balancer(chapter: Chapter) -> None:
    ours = _directives((chapter.solution / "nginx.conf").read_text(encoding="utf-8"))
    graders = _directives(balancer.CONFIG.replace("{{", "{").replace("}}", "}"))
    # Retry only what no backend saw: never `non_idempotent`, never on an answer (http_5xx).
    assert ours["proxy_next_upstream"] == ["error timeout"]
    for name in (
        "proxy_next_upstream",
        "proxy_next_upstream_tries",
        "proxy_connect_timeout",
        "proxy_read_timeout",
        "proxy_http_version",
        "client_max_body_size",
        "keepalive",
    ):
        assert ours[name] == graders[name], f"{name}: {ours[name]} here, {graders[name]} there"
    # Keepalive to the backends needs HTTP/1.1 without "Connection: close".
    assert 'Connection ""' in ours["proxy_set_header"]
    # One server line for the compose service, with the grader's failure accounting.
    source = Path(balancer.__file__).read_text(encoding="utf-8")
    accounting = re.search(r"max_fails=\d+ fail_timeout=\w+", source)
    assert accounting is not None
    assert ours["server"] == [f"backend:8000 {accounting[0]}"]
    assert ours["listen"] == ["80"], "compose publishes nginx's port 80"
