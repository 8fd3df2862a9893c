"""docker-compose.yml is checked without a Docker engine: the services of the production shape
exist, the medialog services are built from the one Dockerfile and run the right roles, every
``MEDIALOG_*`` variable is a real ``Settings`` field, and no secret is written in the file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from medialog.config import ALL_ROLES, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"

BACKING = ("kafka", "postgres", "clickhouse")
S3_CANDIDATES = ("s3", "seaweedfs", "minio")
ROLE_SERVICES = {role: role for role in ALL_ROLES}  # service name → role it runs
REQUIRED_ENV = (
    "MEDIALOG_KAFKA_BOOTSTRAP",
    "MEDIALOG_POSTGRES_DSN",
    "MEDIALOG_CLICKHOUSE_URL",
    "MEDIALOG_S3_ENDPOINT",
    "MEDIALOG_S3_ACCESS_KEY",
    "MEDIALOG_S3_SECRET_KEY",
    "MEDIALOG_SIGNING_KEYS",
    "MEDIALOG_VIEWER_SALT",
    "MEDIALOG_JWT_ISSUER",
    "MEDIALOG_JWT_AUDIENCE",
    "MEDIALOG_JWT_ALGORITHMS",
    "MEDIALOG_API_HOST",
)
FIELDS = {f"MEDIALOG_{name.upper()}" for name in Settings.model_fields}
# A value that is only a compose substitution: ${VAR}, ${VAR:?msg}, ${VAR:-default}, …
SUBSTITUTION = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[-?+][^}]*)?\}$")
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|_KEY$|_KEYS$|TOKEN)", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE.read_text()


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict[str, Any]:
    doc = yaml.safe_load(compose_text)
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict)
    return doc


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", …]
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def medialog_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if "build" in s}


def s3_service(compose: dict[str, Any]) -> str:
    found = [n for n in S3_CANDIDATES if n in compose["services"]]
    assert found, f"no S3 service (one of {S3_CANDIDATES})"
    return found[0]


def test_services_of_the_production_shape_exist(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in (*BACKING, "migrate", "topics", *ROLE_SERVICES):
        assert name in services, f"service {name!r} missing"
    s3_service(compose)


def test_backing_services_use_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in (*BACKING, s3_service(compose)):
        image = services[name].get("image", "")
        assert image and "build" not in services[name], f"{name} must run a published image"
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")


def test_kafka_runs_kraft_with_a_listener_for_other_containers(compose: dict[str, Any]) -> None:
    env = env_of(compose["services"]["kafka"])
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]
    assert "kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    bootstrap = {env_of(s)["MEDIALOG_KAFKA_BOOTSTRAP"] for s in medialog_services(compose).values()}
    assert bootstrap == {"kafka:9092"}


def test_kafka_runs_the_embedded_brokers_version(compose: dict[str, Any]) -> None:
    from medialog.embedded.kafka_broker import kafka_version

    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{kafka_version()}"


def test_medialog_services_are_built_from_the_dockerfile(compose: dict[str, Any]) -> None:
    services = medialog_services(compose)
    for name in ("migrate", "topics", *ROLE_SERVICES):
        assert name in services, f"{name} must be built from the Dockerfile"
    for name, service in services.items():
        build = service["build"]
        if isinstance(build, str):
            build = {"context": build}
        context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")
        assert (ROOT / context / dockerfile).resolve() == (ROOT / "Dockerfile").resolve(), name
    assert (ROOT / "Dockerfile").is_file()
    assert len({s.get("image") for s in services.values()}) == 1, "one image for every role"


def test_roles_and_one_shot_commands(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, role in ROLE_SERVICES.items():
        assert command_of(services[name]) == ["run", "--roles", role], name
    assert command_of(services["migrate"])[:1] == ["migrate"]
    assert command_of(services["topics"])[:1] == ["topics"]
    api_ports = [str(p) for p in services["api"].get("ports", [])]
    assert any(p.endswith(":8080") or p == "8080" for p in api_ports), api_ports


def test_roles_wait_for_healthy_services_and_completed_init(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in (*BACKING, s3_service(compose)):
        assert "healthcheck" in services[name], f"{name} needs a healthcheck"
    for name in ROLE_SERVICES:
        deps = services[name].get("depends_on")
        assert isinstance(deps, dict), f"{name}: depends_on with conditions"
        for backing in (*BACKING, s3_service(compose)):
            assert deps[backing]["condition"] == "service_healthy", (name, backing)
        for init in ("migrate", "topics"):
            assert deps[init]["condition"] == "service_completed_successfully", (name, init)


def test_every_medialog_variable_is_a_settings_field(compose_text: str) -> None:
    used = set(re.findall(r"MEDIALOG_[A-Z0-9_]+", compose_text))
    assert used, "docker-compose.yml configures medialog through MEDIALOG_* variables"
    unknown = sorted(used - FIELDS)
    assert not unknown, f"not fields of Settings: {unknown}"


def test_the_env_block_is_written_once(compose: dict[str, Any], compose_text: str) -> None:
    assert "x-medialog-env" in compose
    assert compose_text.count("MEDIALOG_POSTGRES_DSN:") == 1
    envs = [env_of(s) for s in medialog_services(compose).values()]
    assert all(e == envs[0] for e in envs)


def test_required_settings_are_set_for_every_medialog_service(compose: dict[str, Any]) -> None:
    for name, service in medialog_services(compose).items():
        env = env_of(service)
        missing = [v for v in REQUIRED_ENV if not env.get(v)]
        assert not missing, f"{name} lacks {missing}"
        assert env["MEDIALOG_API_HOST"] == "0.0.0.0"
        assert env["MEDIALOG_CLICKHOUSE_URL"].startswith("http://") and ":8123/" in env[
            "MEDIALOG_CLICKHOUSE_URL"], "split roles need a ClickHouse server, not chDB"
        assert env.get("MEDIALOG_S3_PUBLIC_ENDPOINT"), "presigned URLs must name a reachable host"
        # the file settles what the api verifies: a local issuer key and/or a JWKS URL
        assert env.get("MEDIALOG_JWT_PRIVATE_KEY_FILE") or env.get("MEDIALOG_JWT_JWKS_URL")
        Settings.model_validate(  # every literal value parses (substitutions are the operator's)
            {k.removeprefix("MEDIALOG_").lower(): v for k, v in env.items() if "${" not in v})


def test_no_literal_secrets(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key, value in env_of(service).items():
            if SECRET_NAME.search(key) and not key.endswith("_FILE"):
                assert SUBSTITUTION.match(value), f"{name}: {key} must be a ${{…}} substitution"
            # passwords inside connection URLs too: scheme://user:PASSWORD@host
            for password in re.findall(r"://[^:/@\s]+:(.+)@[^@]*$", value):
                assert SUBSTITUTION.match(password), f"{name}: password in {key} is a literal"


def test_required_secrets_fail_loudly_when_missing(compose: dict[str, Any]) -> None:
    env = env_of(medialog_services(compose)["api"])
    for key in ("MEDIALOG_S3_ACCESS_KEY", "MEDIALOG_S3_SECRET_KEY", "MEDIALOG_SIGNING_KEYS",
                "MEDIALOG_VIEWER_SALT"):
        assert ":?" in env[key], f"{key}: use ${{VAR:?set VAR in .env}}"


def strings(node: Any) -> list[str]:
    """Every string value (and key) of a parsed YAML document: comments excluded."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*strings(k), *strings(v))]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return [node] if isinstance(node, str) else []


def test_env_example_covers_every_required_substitution(compose: dict[str, Any]) -> None:
    required = {name for value in strings(compose)
                for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?", value)}
    example = (ROOT / ".env.example").read_text()
    defined = set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=", example, re.MULTILINE))
    assert required, "secrets are required substitutions"
    assert required <= defined, f"missing in .env.example: {sorted(required - defined)}"
    assert not set(re.findall(r"MEDIALOG_[A-Z0-9_]+", example)) - FIELDS


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".medialog", ".git", ".env"} <= ignored


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's substitution for the forms this file uses: $$, ${VAR}, ${VAR:-default},
    ${VAR:?message}; a required variable that is unset or empty raises KeyError."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        current = env.get(name, "")
        if op == ":?" and not current:
            raise KeyError(f"{name}: {arg}")
        return current or (arg if op == ":-" else "")

    return re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-?])([^}]*))?\}", one, value)


def test_env_example_leaves_every_secret_to_fill_in(compose: dict[str, Any]) -> None:
    """A copied .env.example stops compose until each required secret is set: no value published
    in this repository can end up deployed."""
    example = (ROOT / ".env.example").read_text()
    env = dict(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", example, re.MULTILINE))
    required = {name for value in strings(compose)
                for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?", value)}
    assert {name: env[name] for name in required} == dict.fromkeys(required, "")
    with pytest.raises(KeyError):
        for service in compose["services"].values():
            for value in strings(service):
                interpolate(value, env)


def test_env_example_filled_in_gives_a_valid_configuration(compose: dict[str, Any]) -> None:
    from medialog.signing import SigningKeys

    example = (ROOT / ".env.example").read_text()
    env = dict(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", example, re.MULTILINE))
    secret = "x" * 43  # what `secrets.token_urlsafe(32)` gives: 43 characters
    env |= {name: f"k1:{secret}" if name == "MEDIALOG_SIGNING_KEYS" else secret
            for name, value in env.items() if not value}
    for name, service in medialog_services(compose).items():
        resolved = {k: interpolate(v, env) for k, v in env_of(service).items()}
        settings = Settings.model_validate(
            {k.removeprefix("MEDIALOG_").lower(): v for k, v in resolved.items()})
        SigningKeys.parse(settings.signing_keys.get_secret_value())
        assert settings.postgres_dsn.get_secret_value().startswith("postgresql://medialog:")
        assert settings.clickhouse_dsn.startswith("http://medialog:"), name
    with pytest.raises(KeyError):  # a missing secret stops compose
        interpolate(env_of(compose["services"]["api"])["MEDIALOG_SIGNING_KEYS"], {})
