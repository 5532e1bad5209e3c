"""docker/ and docker/k8s/ checked without a Docker daemon, a cluster or Helm: the compose file parses, every
service's command is a real entry point of the image (console scripts of the installed packages, their
sub-commands and options), every environment variable set is a setting or a known Dagster / PostgreSQL /
Qdrant variable, docker/dagster.yaml loads as a Dagster instance on the local PostgreSQL server, and the Helm
values use only keys Dagster's chart documents."""

from __future__ import annotations

import re
import shutil
from importlib.metadata import entry_points

import click
import pytest
import yaml

from face_pipeline.settings import Settings
from face_pipeline_tests.conftest import PG_HOST, PG_PORT, PG_USER, REPO_ROOT

DOCKER = REPO_ROOT / "docker"

# Variables read by something other than face_pipeline.settings, each with who reads it.
KNOWN_ENV = {
    # Dagster
    "DAGSTER_HOME": "dagster: instance folder",
    "DAGSTER_CURRENT_IMAGE": "dagster code server: the image the DockerRunLauncher starts runs in",
    # docker/dagster.yaml reads these through {env: …} (checked below against that file)
    "DAGSTER_PG_HOST": "docker/dagster.yaml", "DAGSTER_PG_PORT": "docker/dagster.yaml",
    "DAGSTER_PG_USERNAME": "docker/dagster.yaml", "DAGSTER_PG_PASSWORD": "docker/dagster.yaml",
    "DAGSTER_PG_DB": "docker/dagster.yaml",
    # face_pipeline outside Settings
    "FACE_KEEP_DAGSTER_HOME": "face_pipeline/home.py: keep the production DAGSTER_HOME",
    # official postgres image
    "POSTGRES_USER": "postgres image", "POSTGRES_PASSWORD": "postgres image", "POSTGRES_DB": "postgres image",
    # official qdrant image (config override QDRANT__SECTION__KEY)
    "QDRANT__SERVICE__API_KEY": "qdrant image: service.api_key",
}


def _settings_env_names() -> set[str]:
    """Every environment name pydantic-settings reads for a Settings field (prefix FACE_, or the aliases)."""
    names = set()
    prefix = Settings.model_config.get("env_prefix", "")
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if alias is None:
            names.add(f"{prefix}{name}".upper())
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:  # AliasChoices
            names.update(str(c).upper() for c in alias.choices)
    return names


_INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?]([^}]*))?\}")


def _interpolate(value, env: dict[str, str]):
    """Compose variable substitution (${X}, ${X:-default}, ${X:?error}, $$) for the values this file uses."""
    if isinstance(value, str):
        def sub(m):
            if m.group(1) in env:
                return env[m.group(1)]
            return m.group(2) or ""
        return _INTERPOLATION.sub(sub, value).replace("$$", "$")
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict:
    raw = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return _interpolate(raw, {"POSTGRES_PASSWORD": "pw", "QDRANT_API_KEY": "key", "PHOTOS_DIR": "/srv/photos",
                              "FACE_WEB_TOKEN": "t", "FACE_WEB_ADMIN_TOKEN": "a"})


IMAGE_FILES = {"/opt/dagster/dagster_home/workspace.yaml": DOCKER / "workspace.yaml"}  # COPY in both Dockerfiles
OUR_SERVICES = ("init", "pool-ingest", "pool-library", "code", "webserver", "daemon", "review")


def test_compose_has_the_production_layout(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "qdrant", *OUR_SERVICES}
    for name in OUR_SERVICES:
        assert services[name]["image"].startswith("face-pipeline:"), name
    assert services["init"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert (DOCKER / services["init"]["build"]["context"]).resolve() == REPO_ROOT.resolve()  # builds from the repo
    # photos read-only everywhere they are mounted; the library home and models are volumes
    for name in ("init", "code", "review"):
        vols = services[name]["volumes"]
        assert "photos:/photos:ro" in vols and "home:/data/home" in vols and "models:/models" in vols
    assert compose["volumes"]["photos"]["driver_opts"]["device"] == "/srv/photos"
    # run containers get the same volumes (docker/dagster.yaml names them by their fixed names)
    launcher = yaml.safe_load((DOCKER / "dagster.yaml").read_text())["run_launcher"]["config"]
    fixed = {v["name"] for v in compose["volumes"].values()}
    for mount in launcher["container_kwargs"]["volumes"]:
        assert mount.split(":")[0] in fixed, mount
    assert "/photos:ro" in " ".join(launcher["container_kwargs"]["volumes"])
    assert launcher["network"] == compose["networks"]["face_pipeline"]["name"]
    # secrets come from the environment: compose refuses to start without them
    raw = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    for name, svc in raw["services"].items():
        for var, value in (svc.get("environment") or {}).items():
            if "PASSWORD" in var or "API_KEY" in var or "TOKEN" in var:
                assert str(value).startswith("${") and ":?" in str(value), f"{name}: {var} must come from the environment"
    url = raw["x-face-env"]["DATABASE_URL"]
    assert "${POSTGRES_PASSWORD:?" in url
    review = raw["services"]["review"]["environment"]
    assert "FACE_WEB_TOKEN" in review and "FACE_WEB_ADMIN_TOKEN" in review  # 0.0.0.0 needs tokens on every request


def _console_scripts() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group="console_scripts")}


def _click_command(script: str) -> click.Command:
    """The click command behind a console script: the object itself, the typer app's command, or (dagster's
    ``main`` wrappers) the module's ``cli`` that ``main`` invokes."""
    import importlib

    import typer

    ep = _console_scripts()[script]
    obj = ep.load()
    if isinstance(obj, click.Command):
        return obj
    if isinstance(obj, typer.Typer):
        return typer.main.get_command(obj)
    module = importlib.import_module(ep.module)
    if script == "face-pipeline":
        return typer.main.get_command(module.app)
    cli = getattr(module, "cli", None)
    assert isinstance(cli, click.Command), f"{script} -> {ep.value}: no click command found"
    return cli


def _resolve(script: str, args: list[str]) -> tuple[click.Command, list[str], str]:
    """Walk sub-commands like click does; returns (leaf command, its args, dotted path)."""
    cmd = _click_command(script)
    path = script
    while isinstance(cmd, click.Group):
        assert args, f"{path} needs a sub-command"
        sub = cmd.get_command(click.Context(cmd), args[0])
        assert sub is not None, f"{path} has no sub-command {args[0]!r}"
        path, cmd, args = f"{path} {args[0]}", sub, args[1:]
    return cmd, args, path


@pytest.mark.parametrize("service", OUR_SERVICES)
def test_every_command_is_a_real_entry_point_with_valid_options(compose, service):
    command = compose["services"][service]["command"]
    script, args = command[0], command[1:]
    assert script in _console_scripts(), f"{script} is not a console script of the installed packages"
    if script == "face-pipeline" and args[0] == "serve":
        from face_pipeline.cli import app
        import typer

        if "serve" not in typer.main.get_command(app).commands:
            pytest.skip("`face-pipeline serve` (the review web app, another branch) is not in this checkout yet")
    # Files the Dockerfile copies into the image are checked at their source in the repository.
    args = [str(IMAGE_FILES.get(a, a)) for a in args]
    cmd, rest, path = _resolve(script, list(args))
    # Parse the options exactly as the program would (unknown options or bad values raise), without running it.
    ctx = cmd.make_context(path, rest, resilient_parsing=False)
    assert ctx.params is not None


def test_dockerfile_default_command_matches_the_code_service(compose):
    for name in ("Dockerfile", "Dockerfile.gpu"):
        text = (DOCKER / name).read_text()
        cmd = yaml.safe_load(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
        assert cmd == compose["services"]["code"]["command"], name
        # installs from the project's own files, with the launcher's extra
        assert "COPY pyproject.toml" in text and 'pip install ".[production' in text and "pip check" in text
        assert "COPY docker/dagster.yaml docker/workspace.yaml ${DAGSTER_HOME}/" in text
    assert "onnxruntime-gpu" in (DOCKER / "Dockerfile.gpu").read_text()


def test_every_environment_variable_is_a_setting_or_known(compose):
    settings_env = _settings_env_names()
    instance_env = set(re.findall(r"\{env: ([A-Z0-9_]+)\}", (DOCKER / "dagster.yaml").read_text()))
    launcher_env = set(yaml.safe_load((DOCKER / "dagster.yaml").read_text())["run_launcher"]["config"]["env_vars"])
    seen: set[str] = set()
    for name, svc in compose["services"].items():
        for var in svc.get("environment", {}):
            seen.add(var)
            assert var in settings_env or var in KNOWN_ENV, f"{name}: {var} is neither a Settings field nor a known variable"
        if name in ("code", "webserver", "daemon", "pool-ingest", "pool-library"):
            assert instance_env <= set(svc["environment"]), f"{name} lacks {instance_env - set(svc['environment'])}"
    # what run containers receive is also a real variable, and set where the daemon runs
    for var in launcher_env:
        assert var in settings_env or var in KNOWN_ENV, var
        assert var in compose["services"]["daemon"]["environment"], f"daemon passes {var} but does not have it"
    # FACE_KEEP_DAGSTER_HOME is really read by face_pipeline
    assert "FACE_KEEP_DAGSTER_HOME" in (REPO_ROOT / "face_pipeline/home.py").read_text()
    # the settings the production layout relies on exist with those names
    assert {"DATABASE_URL", "QDRANT_URL", "QDRANT_API_KEY", "FACE_LIBRARY", "FACE_PIPELINE_HOME",
            "FACE_PHOTOS_INBOX", "FACE_QDRANT_QUANTIZATION"} <= settings_env & seen


def test_env_example_names_every_variable_compose_needs():
    text = (DOCKER / "compose.yaml").read_text()
    needed = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    example = {line.split("=")[0] for line in (DOCKER / ".env.example").read_text().splitlines() if "=" in line and not line.startswith("#")}
    assert needed - {"DAGSTER_UI_PORT", "REVIEW_PORT"} <= example, needed - example


def test_docker_dagster_yaml_loads_as_an_instance_on_postgres(pg_database, tmp_path, monkeypatch):
    pytest.importorskip("dagster_docker", reason="dagster-docker (the `production` extra) not installed")
    import dagster as dg
    from dagster._core.instance.config import PoolGranularity  # noqa: F401 - the API the pools config needs

    db, _url = pg_database()
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DOCKER / "dagster.yaml", home / "dagster.yaml")
    for var, value in {"DAGSTER_PG_HOST": PG_HOST, "DAGSTER_PG_PORT": str(PG_PORT), "DAGSTER_PG_USERNAME": PG_USER,
                       "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_DB": db}.items():
        monkeypatch.setenv(var, value)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        from dagster_docker import DockerRunLauncher
        from dagster._core.run_coordinator import QueuedRunCoordinator

        assert isinstance(instance.run_launcher, DockerRunLauncher)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert instance.get_runs() == []  # the schema was created in the fresh database
        assert instance.run_monitoring_enabled and instance.run_monitoring_max_resume_run_attempts == 0
        cfg = instance.get_concurrency_config()
        assert cfg.pool_config.default_pool_limit == 1
        assert cfg.run_queue_config.max_concurrent_runs == 8
        assert {"key": "face_pipeline/exclusive", "limit": 1} in cfg.run_queue_config.tag_concurrency_limits
        # both pools sized the way the pool-* services do it (explicit limits: dagster-io/dagster#33552)
        instance.event_log_storage.set_concurrency_slots("face_ingest", 2)
        instance.event_log_storage.set_concurrency_slots("face_library", 1)
        assert instance.event_log_storage.get_concurrency_info("face_ingest").slot_count == 2
        assert instance.event_log_storage.get_concurrency_info("face_library").slot_count == 1


# --- Helm -------------------------------------------------------------------------------------------------------
# Keys of Dagster's official chart (helm/dagster in dagster-io/dagster), from its pydantic schema, which generates
# the chart's values.schema.json:
#   schema/charts/dagster/values.py            @835892b4  top-level keys (DagsterHelmValues)
#   schema/charts/dagster/subschema/concurrency.py @7dade769 `concurrency` (and schema_tests/test_concurrency.py)
#   schema/charts/dagster/subschema/run_launcher.py @969d7265 runLauncher, K8sRunLauncherConfig, RunK8sConfig
#   schema/charts/dagster/subschema/daemon.py  @835892b4  dagsterDaemon, RunCoordinator, QueuedRunCoordinatorConfig
#   schema/charts/dagster_user_deployments/subschema/user_deployments.py @58b05650 UserDeployments, UserDeployment
#   schema/charts/dagster/subschema/webserver.py @288c6113, postgresql.py @3f2daa0d, telemetry.py
#   templates/configmap-instance.yaml @835892b4  the keys read from dagsterDaemon.runMonitoring (a free dict)
HELM_KEYS = {
    "": {"dagsterWebserver", "dagster-user-deployments", "postgresql", "generatePostgresqlPasswordSecret",
         "generateCeleryConfigSecret", "rabbitmq", "redis", "flower", "ingress", "imagePullSecrets", "computeLogManager",
         "scheduler", "runLauncher", "pythonLogs", "dagsterDaemon", "busybox", "migrate", "telemetry", "serviceAccount",
         "global", "retention", "additionalInstanceConfig", "concurrency"},
    "concurrency": {"enabled", "pools", "runs"},
    "concurrency.pools": {"defaultLimit", "granularity", "opGranularityRunBuffer"},
    "concurrency.runs": {"maxConcurrentRuns", "tagConcurrencyLimits"},
    "concurrency.runs.tagConcurrencyLimits[]": {"key", "value", "limit"},
    "runLauncher": {"type", "config"},
    "runLauncher.config": {"celeryK8sRunLauncher", "k8sRunLauncher", "customRunLauncher"},
    "runLauncher.config.k8sRunLauncher": {"image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile",
                                          "envConfigMaps", "envSecrets", "envVars", "volumeMounts", "volumes", "labels",
                                          "failPodOnRunFailure", "resources", "schedulerName", "securityContext", "runK8sConfig"},
    "runLauncher.config.k8sRunLauncher.runK8sConfig": {"containerConfig", "podSpecConfig", "podTemplateSpecMetadata",
                                                       "jobSpecConfig", "jobMetadata"},
    "dagsterDaemon": {"enabled", "image", "runCoordinator", "heartbeatTolerance", "env", "envConfigMaps", "envSecrets",
                      "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations", "podSecurityContext",
                      "securityContext", "resources", "livenessProbe", "readinessProbe", "startupProbe", "annotations",
                      "runMonitoring", "runRetries", "sensors", "schedules", "schedulerName", "volumeMounts", "volumes"},
    "dagsterDaemon.runCoordinator": {"enabled", "type", "config"},
    "dagsterDaemon.runCoordinator.config": {"queuedRunCoordinator", "customRunCoordinator"},
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator": {"maxConcurrentRuns", "tagConcurrencyLimits",
                                                                 "dequeueIntervalSeconds", "dequeueNumWorkers", "dequeueUseThreads"},
    "dagsterDaemon.runMonitoring": {"enabled", "startTimeoutSeconds", "cancelTimeoutSeconds", "maxResumeRunAttempts",
                                    "pollIntervalSeconds", "freeSlotsAfterRunEndSeconds"},
    "dagster-user-deployments": {"enabled", "enableSubchart", "imagePullSecrets", "deployments"},
    "dagster-user-deployments.deployments[]": {"name", "image", "dagsterApiGrpcArgs", "codeServerArgs",
                                               "includeConfigInLaunchedRuns", "port", "env", "envConfigMaps", "envSecrets",
                                               "annotations", "nodeSelector", "affinity", "tolerations", "podSecurityContext",
                                               "securityContext", "resources", "livenessProbe", "readinessProbe",
                                               "startupProbe", "labels", "volumeMounts", "volumes", "schedulerName"},
    "dagster-user-deployments.deployments[].image": {"repository", "tag", "pullPolicy"},
    "dagster-user-deployments.deployments[].includeConfigInLaunchedRuns": {"enabled"},
    "dagsterWebserver": {"replicaCount", "image", "nameOverride", "pathPrefix", "service", "workspace", "env", "envConfigMaps",
                         "envSecrets", "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations",
                         "podSecurityContext", "securityContext", "resources", "readinessProbe", "livenessProbe",
                         "startupProbe", "annotations", "enableReadOnly", "dbStatementTimeout", "dbPoolRecycle", "logLevel",
                         "schedulerName", "volumeMounts", "volumes"},
    "postgresql": {"image", "enabled", "postgresqlHost", "postgresqlUsername", "postgresqlPassword", "postgresqlDatabase",
                   "postgresqlParams", "postgresqlScheme", "service"},
    "postgresql.service": {"port"},
    "telemetry": {"enabled"},
}


def _walk(node, path: str, out: list[tuple[str, str]]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((path, key))
            child = f"{path}.{key}" if path else key
            if child in HELM_KEYS or f"{child}[]" in HELM_KEYS:
                _walk(value, child, out)
    elif isinstance(node, list):
        for item in node:
            _walk(item, f"{path}[]", out)


def test_helm_values_use_only_keys_the_chart_documents():
    values = yaml.safe_load((DOCKER / "k8s" / "values.yaml").read_text())
    pairs: list[tuple[str, str]] = []
    _walk(values, "", pairs)
    unknown = [f"{p}.{k}" if p else k for p, k in pairs if p in HELM_KEYS and k not in HELM_KEYS[p]]
    assert not unknown, f"keys the dagster chart does not document: {unknown}"
    checked = {p for p, _ in pairs if p in HELM_KEYS}
    assert {"runLauncher.config.k8sRunLauncher.runK8sConfig", "concurrency.pools", "dagsterDaemon.runMonitoring",
            "dagster-user-deployments.deployments[]"} <= checked


def test_helm_values_say_what_the_issue_asks():
    v = yaml.safe_load((DOCKER / "k8s" / "values.yaml").read_text())
    assert v["runLauncher"]["type"] == "K8sRunLauncher"
    run_k8s = v["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    assert run_k8s["podSpecConfig"]["nodeSelector"] and run_k8s["containerConfig"]["resources"]["requests"]["nvidia.com/gpu"] == 1
    dep = v["dagster-user-deployments"]["deployments"][0]
    assert dep["codeServerArgs"][:2] == ["-m", "face_pipeline.definitions"] and dep["image"]["repository"]
    assert v["concurrency"]["enabled"] and v["concurrency"]["pools"]["defaultLimit"] == 1
    assert v["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert v["dagsterDaemon"]["runMonitoring"]["enabled"]
    # the env of the code location (inherited by runs) is made of real settings
    settings_env = _settings_env_names()
    for var in dep["env"]:
        assert var in settings_env or var in KNOWN_ENV, var
    # the code server args parse as `dagster code-server start` would
    cmd, rest, path = _resolve("dagster", ["code-server", "start", "-p", str(dep["port"]), *dep["codeServerArgs"]])
    cmd.make_context(path, rest)
