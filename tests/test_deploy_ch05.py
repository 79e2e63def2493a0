"""Chapter 5's deployment files (solutions/05-scale-out/deploy/), validated offline.

No cluster and no Docker engine here, so nothing is applied or started:

- every Kubernetes manifest validates against the schema of a pinned Kubernetes version, in
  strict mode (an unknown field, a misspelled probe for instance, is an error: a test below
  proves it on a modified copy), and keeps the invariants the chapter teaches (replicas, both
  probes, a rolling update that never drops below the replica count, a preStop sleep shorter
  than the grace period, the database URL from a Secret, pool arithmetic);
- the compose file passes `docker-compose config -q` (Debian's docker-compose, as
  tests/test_compose.py) and its backend can be scaled;
- nginx.conf passes `nginx -t` (Debian's nginx, on a copy whose upstream host resolves here,
  run from a temporary prefix: the system's nginx is never touched) and follows the same
  rules as the balancer the grader starts (grader/toolkit/balancer.py).

The learner's copy, chapters/05-scale-out/deploy/, is given code: the starter generator copies
it unchanged, and a test checks that it did.
"""

from __future__ import annotations

import ast
import copy
import filecmp
import functools
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import kubernetes_validate
import pytest
import yaml
from sqlalchemy.engine import make_url

from grader.toolkit import balancer

ROOT = Path(__file__).resolve().parent.parent
SLUG = "05-scale-out"
SOLUTION = ROOT / "solutions" / SLUG / "deploy"
STARTER = ROOT / "chapters" / SLUG / "deploy"
COPIES = [SOLUTION, STARTER]
COPY_IDS = ["solutions", "chapters"]
K8S = SOLUTION / "k8s"
# The oldest Kubernetes the manifests promise to run on (the preStop `sleep` action is 1.30+).
K8S_VERSION = "1.31.0"
IMAGE = "make-it-scale-ch05"
WORKLOADS = ("Deployment", "StatefulSet")


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


def test_the_starter_copy_is_the_solution_unchanged() -> None:
    want = sorted(p.relative_to(SOLUTION) for p in SOLUTION.rglob("*") if p.is_file())
    have = sorted(p.relative_to(STARTER) for p in STARTER.rglob("*") if p.is_file())
    assert want, f"{SOLUTION} holds no file"
    assert have == want, "chapters/ is out of date: run `grader dev starters`"
    for rel in want:
        assert filecmp.cmp(SOLUTION / rel, STARTER / rel, shallow=False), (
            f"chapters/{SLUG}/deploy/{rel} differs from the solution's: run `grader dev starters`"
        )


# --- Kubernetes -----------------------------------------------------------------------------


def _kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))


@functools.cache
def _resources() -> list[tuple[str, dict[str, Any]]]:
    """(file, document) for every resource kustomization.yaml applies (read once: never
    modify one, deepcopy it)."""
    out = []
    for name in _kustomization()["resources"]:
        text = (K8S / name).read_text(encoding="utf-8")
        out += [(name, doc) for doc in yaml.safe_load_all(text) if doc is not None]
    return out


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in _resources() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def _pod(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _backend() -> dict[str, Any]:
    return _one("Deployment", "backend")


def _backend_container() -> dict[str, Any]:
    (container,) = [c for c in _pod(_backend())["containers"] if c["name"] == "backend"]
    return container


def _strict_errors(doc: dict[str, Any]) -> str | None:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path) or "(top)"
        return f"{where}: {exc.message}"
    return None


def test_kustomization_applies_every_manifest() -> None:
    kustomization = _kustomization()
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    # kustomize's own schema is not among Kubernetes': at least no misspelled top-level key.
    assert set(kustomization) <= {"apiVersion", "kind", "resources", "images", "namespace"}
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files, "kustomization.yaml must list every file"
    assert len(kustomization["resources"]) == len(files), "a file listed twice"
    assert [i["name"] for i in kustomization["images"]] == [IMAGE]


@pytest.mark.parametrize(
    "resource", _resources(), ids=lambda r: f"{r[0]}:{r[1]['kind']}/{r[1]['metadata']['name']}"
)
def test_manifest_validates_strictly(resource: tuple[str, dict[str, Any]]) -> None:
    _, doc = resource
    problem = _strict_errors(doc)
    assert problem is None, f"not a valid {doc['kind']} for Kubernetes {K8S_VERSION}: {problem}"


def test_strict_validation_rejects_a_misspelled_field() -> None:
    """The validation above can fail: a misspelled probe is exactly what non-strict accepts."""
    doc = copy.deepcopy(_backend())
    container = next(c for c in _pod(doc)["containers"] if c["name"] == "backend")
    container["readynessProbe"] = container.pop("readinessProbe")
    # Kubernetes' schemas allow unknown fields unless told not to: this typo would be applied,
    # and the pod would simply have no readiness probe.
    assert kubernetes_validate.validate(doc, K8S_VERSION, strict=False)
    problem = _strict_errors(doc)
    assert problem is not None and "readynessProbe" in problem, problem
    # A wrong type fails too, strict or not.
    doc = copy.deepcopy(_backend())
    doc["spec"]["replicas"] = "three"
    assert _strict_errors(doc) is not None


def test_backend_runs_three_replicas_with_a_rolling_update_that_keeps_them() -> None:
    spec = _backend()["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["strategy"]["rollingUpdate"]["maxSurge"] == 1


def test_backend_probes() -> None:
    container = _backend_container()
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    # Readiness answers within 1 s (READY_TIMEOUT_SECONDS); the probe must wait longer.
    assert container["readinessProbe"].get("timeoutSeconds", 1) >= 2
    startup = container.get("startupProbe")
    if startup is not None:
        assert startup["httpGet"]["path"] == "/health"


def test_every_container_has_resource_requests() -> None:
    for _, doc in _resources():
        if doc["kind"] not in WORKLOADS:
            continue
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


@pytest.mark.parametrize(
    ("service", "workload"),
    [("backend", "Deployment"), ("frontend", "Deployment"), ("postgres", "StatefulSet")],
)
def test_service_selects_its_pods_and_their_port(service: str, workload: str) -> None:
    svc, owner = _one("Service", service), _one(workload, service)
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


def test_backend_listens_on_its_container_port_and_runs_the_chapter() -> None:
    container = _backend_container()
    command = container["command"]
    port = int(command[command.index("--port") + 1])
    assert port in _port_names(container).values()
    app_dir = command[command.index("--app-dir") + 1]
    assert app_dir == f"chapters/{SLUG}" and (ROOT / app_dir / "backend" / "main.py").is_file()
    # The same command the image runs by default.
    dockerfile = (SOLUTION / "Dockerfile").read_text(encoding="utf-8")
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert cmd and ast.literal_eval(cmd[1]) == command


def test_the_grace_period_outlasts_the_prestop_sleep() -> None:
    pod = _pod(_backend())
    pre_stop = _backend_container()["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        sleep = int(pre_stop["sleep"]["seconds"])
    else:  # exec: ["sleep", "N"]
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep", command
        sleep = int(command[1])
    assert sleep >= 5, "the sleep must outlast the endpoint removal (a few seconds)"
    # What is left after the sleep is uvicorn's drain: at least the database deadline (5 s).
    assert pod["terminationGracePeriodSeconds"] >= sleep + 10


def _secret_keys() -> dict[str, set[str]]:
    return {
        d["metadata"]["name"]: set(d.get("stringData", {})) | set(d.get("data", {}))
        for _, d in _resources()
        if d["kind"] == "Secret"
    }


def test_database_url_comes_from_a_secret() -> None:
    secrets = _secret_keys()
    for _, doc in _resources():
        if doc["kind"] not in WORKLOADS:
            continue
        for container in _containers(_pod(doc)):
            env = {e["name"]: e for e in container.get("env", [])}
            for name in ("DATABASE_URL", "POSTGRES_PASSWORD"):
                if name not in env:
                    continue
                assert "value" not in env[name], f"{container['name']}: {name} written inline"
                ref = env[name]["valueFrom"]["secretKeyRef"]
                assert ref["key"] in secrets.get(ref["name"], set()), ref
    container = _backend_container()
    assert "DATABASE_URL" in {e["name"] for e in container["env"]}


def test_the_secret_url_matches_the_postgres_it_ships() -> None:
    secret = _one("Secret", "database")["stringData"]
    url = make_url(secret["DATABASE_URL"])
    env = {e["name"]: e for e in _pod(_one("StatefulSet", "postgres"))["containers"][0]["env"]}
    assert url.password == secret["POSTGRES_PASSWORD"], "percent-encoding: decoded, they match"
    assert url.username == env["POSTGRES_USER"]["value"]
    assert url.database == env["POSTGRES_DB"]["value"]
    assert (url.host, url.port) == ("postgres", 5432)
    assert url.drivername == "postgresql+psycopg"


def _pool_per_instance() -> int:
    """POOL_SIZE + MAX_OVERFLOW of the chapter's backend/db.py (read, not imported)."""
    tree = ast.parse((ROOT / "solutions" / SLUG / "backend" / "db.py").read_text("utf-8"))
    values = {
        node.targets[0].id: node.value.value
        for node in tree.body
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


def test_pool_arithmetic_fits_postgres() -> None:
    spec = _backend()["spec"]
    during_rollout = spec["replicas"] + spec["strategy"]["rollingUpdate"]["maxSurge"]
    postgres = _pod(_one("StatefulSet", "postgres"))["containers"][0]
    assert during_rollout * _pool_per_instance() < _max_connections(postgres["args"])


def test_images_are_the_placeholder_or_pinned() -> None:
    for _, doc in _resources():
        if doc["kind"] not in WORKLOADS:
            continue
        for container in _containers(_pod(doc)):
            image = container["image"]
            if image.startswith(f"{IMAGE}:"):
                # A loaded image (kind) runs only if Kubernetes does not insist on pulling it.
                assert not image.endswith(":latest")
                assert container.get("imagePullPolicy") == "IfNotPresent"
            else:
                assert re.fullmatch(r"[\w./-]+:\d[\w.-]*", image), f"unpinned image {image}"


def test_the_dockerfile_copies_what_exists() -> None:
    dockerfile = (SOLUTION / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11", dockerfile, re.M)
    ignore = (SOLUTION / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    assert {".venv", ".git"} <= set(ignore), "the build context would carry .venv/ and .git/"


# --- compose --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_exe() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        _missing("docker-compose", "docker-compose")
    return exe


def _compose(exe: str, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # A developer's shell may set these; the file's defaults are what is under test.
    env = {k: v for k, v in os.environ.items() if k not in ("ASSISTANT_PROVIDER", "DATABASE_URL")}
    return subprocess.run(
        [exe, "-f", str(folder / "compose.yaml"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module", params=COPIES, ids=COPY_IDS)
def compose_config(request: pytest.FixtureRequest, compose_exe: str) -> dict[str, Any]:
    """`docker-compose config` of one copy: validated, interpolated, paths made absolute."""
    folder = request.param
    quiet = _compose(compose_exe, folder, "config", "-q")
    assert quiet.returncode == 0, f"docker-compose config -q failed:\n{quiet.stderr}"
    proc = _compose(compose_exe, folder, "config")
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load(proc.stdout)
    config["folder"] = folder
    return config


def test_compose_has_the_four_services(compose_config: dict[str, Any]) -> None:
    assert set(compose_config["services"]) == {"postgres", "backend", "nginx", "frontend"}


def test_compose_backend_can_be_scaled(compose_config: dict[str, Any]) -> None:
    backend = compose_config["services"]["backend"]
    # A fixed host port or a container name exists once per host: `--scale backend=3` fails.
    assert "ports" not in backend
    assert "container_name" not in backend
    assert "/health/ready" in " ".join(backend["healthcheck"]["test"])
    command = " ".join(backend["command"])
    assert f"--app-dir chapters/{SLUG}" in command and "grader db wait" in command


def test_compose_publishes_on_loopback_only(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            text = port if isinstance(port, str) else f"{port.get('host_ip')}:{port}"
            assert text.startswith("127.0.0.1:"), f"{name} publishes {port} beyond 127.0.0.1"
    assert [p.split(":")[:3] for p in services["nginx"]["ports"]] == [
        ["127.0.0.1", "8000", "80/tcp"]
    ]
    assert services["frontend"]["environment"]["BACKEND_URL"] == "http://nginx"
    assert services["nginx"]["depends_on"]["backend"]["condition"] == "service_healthy"


def test_compose_mounts_the_repository_and_its_nginx_conf(compose_config: dict[str, Any]) -> None:
    services, folder = compose_config["services"], compose_config["folder"]
    for name in ("backend", "frontend"):
        mounts = {v.split(":")[1]: v.split(":")[0] for v in services[name]["volumes"]}
        assert Path(mounts["/workbook"]) == ROOT, f"{name} mounts {mounts['/workbook']}"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["nginx"]["volumes"]}
    assert Path(mounts["/etc/nginx/nginx.conf"]) == folder / "nginx.conf"


def test_compose_url_matches_its_postgres(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    url = make_url(services["backend"]["environment"]["DATABASE_URL"])
    env = services["postgres"]["environment"]
    assert url.password == env["POSTGRES_PASSWORD"] == unquote("p%40ss%3Aw%2Frd%2542")
    assert (url.username, url.database, url.host) == (
        env["POSTGRES_USER"],
        env["POSTGRES_DB"],
        "postgres",
    )
    # The arithmetic the header comment states: 3 backends fit with room to spare.
    assert 3 * _pool_per_instance() < _max_connections(services["postgres"]["command"])


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


@pytest.mark.parametrize("folder", COPIES, ids=COPY_IDS)
def test_nginx_conf_passes_nginx_t(nginx_exe: str, folder: Path, tmp_path: Path) -> None:
    proc = _nginx_test(nginx_exe, (folder / "nginx.conf").read_text(encoding="utf-8"), tmp_path)
    assert proc.returncode == 0, f"nginx -t failed:\n{proc.stderr}"
    assert "test is successful" in proc.stderr


def test_nginx_t_rejects_a_misspelled_directive(nginx_exe: str, tmp_path: Path) -> None:
    text = (SOLUTION / "nginx.conf").read_text(encoding="utf-8")
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


def test_nginx_conf_follows_the_rules_of_the_graders_balancer() -> None:
    ours = _directives((SOLUTION / "nginx.conf").read_text(encoding="utf-8"))
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
