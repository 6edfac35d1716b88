"""deploy/ validated offline: no broker, no cluster, no network.

- every Kubernetes manifest in deploy/k8s against the Kubernetes JSON schemas that the
  ``kubernetes-validate`` package bundles (strict: unknown fields are errors);
- KEDA ScaledObjects (a CRD, not in those schemas) against tests/data's own schema;
- deploy/docker-compose.yml against the Compose Specification schema (vendored in
  tests/data, source and license noted there);
- the commands the containers run, parsed by the real ``chat-notifier`` CLI parser;
- the facts that tie the files together: probes and resources on every container, the
  headless Service the StatefulSet names, one sender Deployment per channel on its web
  port, ScaledObjects on each process's consumer group and topic and not above the
  partition count, environment names the settings object knows.

Each check has a negative case built here from a broken copy, so it can fail.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from processors import topics as t
from processors.cli import build_parser
from processors.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
DATA = Path(__file__).resolve().parent / "data"

# The newest Kubernetes version whose schemas kubernetes-validate 1.37 bundles.
K8S_VERSION = "1.37.0"

# Web port of each long-running command (the CLI defaults: worker 6066, `senders` 6067,
# `senders --channel X` 6068-6071); the manifests pass them explicitly.
WEB_PORTS = {
    "worker": 6066,
    "senders": 6067,
    "senders-email": 6068,
    "senders-sms": 6069,
    "senders-push": 6070,
    "senders-browser": 6071,
}

Doc = dict[str, Any]


# ---------------------------------------------------------------- loading


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def load_docs(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def all_docs() -> list[Doc]:
    return [d for p in manifest_files() for d in load_docs(p)]


def docs_of(kind: str) -> list[Doc]:
    return [d for d in all_docs() if d["kind"] == kind]


def one(kind: str, name: str) -> Doc:
    found = [d for d in docs_of(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def doc_id(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def workloads() -> list[Doc]:
    return [d for d in all_docs() if d["kind"] in ("Deployment", "StatefulSet")]


def containers(workload: Doc) -> Iterator[Doc]:
    yield from workload["spec"]["template"]["spec"]["containers"]


# ---------------------------------------------------------------- validators


def validate_k8s(doc: Doc) -> None:
    """Raise if ``doc`` breaks the Kubernetes schema (or, for KEDA, ours)."""
    if doc.get("apiVersion", "").startswith("keda.sh/"):
        jsonschema.validate(doc, keda_schema())
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def keda_schema() -> Doc:
    schema: Doc = json.loads((DATA / "keda-scaledobject.schema.json").read_text())
    return schema


def validate_compose(doc: Doc) -> None:
    schema = json.loads((DATA / "compose-spec.json").read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator_class(schema).validate(doc)


def parse_command(argv: list[str]) -> Any:
    """``argv`` (what follows ``chat-notifier``) parsed by the real CLI, or AssertionError."""
    try:
        return build_parser(argv).parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"chat-notifier {' '.join(argv)}: not a valid command") from exc


def command_name(args: Any) -> str:
    """The key of WEB_PORTS for parsed ``args``."""
    if args.command == "senders" and args.channel != "all":
        return f"senders-{args.channel}"
    return str(args.command)


def consumer_group(args: Any) -> str:
    """The app id (= consumer group) the process runs under, as the CLI chooses it
    (``processors.live.worker`` default; ``processors.senders.worker.run``)."""
    if args.command == "worker":
        return str(args.app_id)
    assert args.command == "senders"
    return str(
        args.app_id
        or "chat-notifier-senders" + ("" if args.channel == "all" else f"-{args.channel}")
    )


def is_setting(env_name: str) -> bool:
    """Whether ``env_name`` names a field of the settings object (``A`` or ``A__B``)."""
    section, _, field = env_name.lower().partition("__")
    info = Settings.model_fields.get(section)
    if info is None:
        return False
    if not field:
        return True
    model = info.annotation
    return isinstance(model, type) and issubclass(model, BaseModel) and field in model.model_fields


def check_workload(doc: Doc) -> None:
    """Probes, resources and a valid command on every container of a workload."""
    for c in containers(doc):
        where = f"{doc_id(doc)} container {c['name']}"
        for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
            assert probe in c, f"{where}: no {probe}"
            assert c[probe]["httpGet"]["path"] == path, f"{where}: {probe} not on {path}"
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        args = parse_command(c["args"])
        port = WEB_PORTS[command_name(args)]
        assert args.web_port == port, f"{where}: --web-port {args.web_port}, expected {port}"
        assert ports.get("http") == port, f"{where}: http port {ports.get('http')} != {port}"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe in c:
                assert c[probe]["httpGet"]["port"] in ("http", port), f"{where}: {probe} port"
        annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/port") == str(port), f"{where}: scrape port"
        resources = c.get("resources", {})
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(part, {})), f"{where}: {part}"
        for env in c.get("env", []):
            assert is_setting(env["name"]), f"{where}: {env['name']} is not a setting"


def check_compose_commands(doc: Doc) -> None:
    """Every service built from our image runs a real ``chat-notifier`` command."""
    for name, service in doc["services"].items():
        if "build" not in service and not str(service.get("image", "")).startswith("chat-notifier"):
            continue
        argv = service.get("command")
        assert isinstance(argv, list) and argv, f"service {name}: no command list"
        args = parse_command([str(a) for a in argv])
        if args.command in ("worker", "senders"):
            port = WEB_PORTS[command_name(args)]
            assert args.web_port in (None, port), f"service {name}: --web-port {args.web_port}"


def check_scaled_object(scaled: Doc) -> None:
    """A ScaledObject targets a workload of ours, on its consumer group and one of its
    input topics, and never above the partitions that bound that workload."""
    target = scaled["spec"]["scaleTargetRef"]
    workload = one(target["kind"], target["name"])
    config = one("ConfigMap", "chat-notifier")["data"]
    (container,) = list(containers(workload))
    args = parse_command(container["args"])
    if args.command == "worker":
        topics_in = {
            name
            for name, spec in t.TOPICS.items()
            if spec.group in ("conversation", "user") and name in t.INPUT_TOPICS + (t.CANDIDATES,)
        }
        partitions = min(int(config["CONVERSATION_PARTITIONS"]), int(config["USER_PARTITIONS"]))
        assert scaled["spec"].get("minReplicaCount", 0) >= 1, "batches close on a timer"
    else:
        topics_in = {t.CHANNEL_TOPICS[args.channel]}
        partitions = int(config["CHANNEL_PARTITIONS"])
    maximum = scaled["spec"]["maxReplicaCount"]
    assert maximum <= partitions, f"{doc_id(scaled)}: max {maximum} > {partitions} partitions"
    broker = config["KAFKA_BROKER_URL"].removeprefix("kafka://")
    for trigger in scaled["spec"]["triggers"]:
        meta = trigger["metadata"]
        assert meta["consumerGroup"] == consumer_group(args), f"{doc_id(scaled)}: group"
        prefix = config.get("TOPIC_PREFIX", "")
        assert meta["topic"] in {prefix + n for n in topics_in}, (
            f"{doc_id(scaled)}: {meta['topic']} is not an input of {target['name']}"
        )
        assert meta["bootstrapServers"] == broker, f"{doc_id(scaled)}: bootstrapServers"


# ---------------------------------------------------------------- the manifests


def test_every_manifest_is_in_the_kustomization_except_examples() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    expected = {p.name for p in manifest_files() if ".example." not in p.name}
    assert listed == expected
    assert all(".example." not in name for name in listed)


@pytest.mark.parametrize("doc", all_docs(), ids=doc_id)
def test_manifest_is_valid_offline(doc: Doc) -> None:
    validate_k8s(doc)


def test_the_validator_has_the_schemas_offline() -> None:
    # kubernetes-validate ships its schemas; an unknown kind is its own error, so a
    # misspelt kind cannot slip through as "nothing to check".
    assert kubernetes_validate.latest_version() >= K8S_VERSION.rsplit(".", 1)[0]
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(
            {"apiVersion": "apps/v1", "kind": "Deploymnt", "metadata": {"name": "x"}},
            K8S_VERSION,
            strict=True,
        )


def test_workloads_have_probes_resources_and_real_commands() -> None:
    assert workloads(), "no workloads found"
    for doc in workloads():
        check_workload(doc)


def test_worker_statefulset_names_a_headless_service_and_has_a_budget() -> None:
    worker = one("StatefulSet", "chat-notifier-worker")
    labels = worker["spec"]["template"]["metadata"]["labels"]
    service = one("Service", worker["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= labels.items()
    budgets = [
        b
        for b in docs_of("PodDisruptionBudget")
        if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ]
    assert len(budgets) == 1
    assert worker["spec"]["volumeClaimTemplates"], "RocksDB state on a volume"


def test_one_sender_deployment_per_channel() -> None:
    channels = []
    for doc in docs_of("Deployment"):
        (container,) = list(containers(doc))
        args = parse_command(container["args"])
        assert args.command == "senders"
        assert doc["metadata"]["name"] == f"chat-notifier-sender-{args.channel}"
        channels.append(args.channel)
    assert sorted(channels) == sorted(t.CHANNELS)


def test_every_workload_is_autoscaled_on_its_lag() -> None:
    scaled = docs_of("ScaledObject")
    targets = {
        (s["spec"]["scaleTargetRef"]["kind"], s["spec"]["scaleTargetRef"]["name"]) for s in scaled
    }
    assert targets == {(w["kind"], w["metadata"]["name"]) for w in workloads()}
    for s in scaled:
        check_scaled_object(s)


def test_config_and_secret_names_are_settings_and_load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = one("ConfigMap", "chat-notifier")["data"]
    secret = one("Secret", "chat-notifier-credentials")["stringData"]
    env_secrets = {k: v for k, v in secret.items() if k.isupper()}  # others are files
    for name in [*config, *env_secrets]:
        assert is_setting(name), f"{name} is not a setting"
    # Placeholders only: nothing here may look like a usable credential.
    for name, value in env_secrets.items():
        assert "FAKE" in value, f"{name}: not an obvious placeholder"
    # Every key a pod takes from the Secret exists in the example.
    for doc in workloads():
        for c in containers(doc):
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "chat-notifier-credentials"
                    assert ref["key"] in secret, f"{doc_id(doc)}: {ref['key']}"
    # The values parse as the settings object reads them (types, lists, booleans).
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name, value in {**config, **env_secrets}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.channel_partitions == int(config["CHANNEL_PARTITIONS"])
    assert [k.get_secret_value().split(":")[0] for k in settings.reply.token_keys] == ["k2", "k1"]


# ---------------------------------------------------------------- docker compose


def test_compose_file_is_valid_and_runs_real_commands() -> None:
    doc = yaml.safe_load(COMPOSE.read_text())
    validate_compose(doc)
    check_compose_commands(doc)
    commands = {s.get("command", [None])[0] for s in doc["services"].values()}
    assert {"worker", "senders"} <= commands


# ---------------------------------------------------------------- broken copies fail


def _statefulset() -> Doc:
    return copy.deepcopy(one("StatefulSet", "chat-notifier-worker"))


def _misspelt_probe(doc: Doc) -> None:
    c = doc["spec"]["template"]["spec"]["containers"][0]
    c["livenesProbe"] = c.pop("livenessProbe")


def _replicas_as_text(doc: Doc) -> None:
    doc["spec"]["replicas"] = "three"


def _no_selector(doc: Doc) -> None:
    del doc["spec"]["selector"]


@pytest.mark.parametrize("breakage", [_misspelt_probe, _replicas_as_text, _no_selector])
def test_a_broken_manifest_fails(breakage: Any) -> None:
    doc = _statefulset()
    validate_k8s(doc)  # the unbroken copy passes
    breakage(doc)
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_k8s(doc)


def test_a_workload_without_readiness_or_with_a_bad_command_fails() -> None:
    doc = _statefulset()
    del doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    with pytest.raises(AssertionError, match="no readinessProbe"):
        check_workload(doc)
    sender = copy.deepcopy(one("Deployment", "chat-notifier-sender-sms"))
    sender["spec"]["template"]["spec"]["containers"][0]["args"][2] = "fax"
    with pytest.raises(AssertionError, match="not a valid command"):
        check_workload(sender)


def _scaled_worker() -> Doc:
    return copy.deepcopy(one("ScaledObject", "chat-notifier-worker"))


def _lag_as_number(doc: Doc) -> None:
    doc["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 50


def _no_target(doc: Doc) -> None:
    del doc["spec"]["scaleTargetRef"]


def _broker_url_with_scheme(doc: Doc) -> None:
    doc["spec"]["triggers"][0]["metadata"]["bootstrapServers"] = "kafka://kafka:9092"


@pytest.mark.parametrize("breakage", [_lag_as_number, _no_target, _broker_url_with_scheme])
def test_a_broken_scaled_object_fails(breakage: Any) -> None:
    doc = _scaled_worker()
    validate_k8s(doc)
    breakage(doc)
    with pytest.raises(jsonschema.ValidationError):
        validate_k8s(doc)


def test_a_scaled_object_beyond_the_partitions_or_on_another_group_fails() -> None:
    doc = _scaled_worker()
    doc["spec"]["maxReplicaCount"] = 13
    with pytest.raises(AssertionError, match="partitions"):
        check_scaled_object(doc)
    sender = copy.deepcopy(one("ScaledObject", "chat-notifier-sender-push"))
    sender["spec"]["triggers"][0]["metadata"]["consumerGroup"] = "chat-notifier-senders"
    with pytest.raises(AssertionError, match="group"):
        check_scaled_object(sender)


def _compose() -> Doc:
    doc: Doc = yaml.safe_load(COMPOSE.read_text())
    return doc


def _bad_condition(doc: Doc) -> None:
    doc["services"]["worker"]["depends_on"] = {"kafka": {"condition": "service_happy"}}


def _ports_not_a_list(doc: Doc) -> None:
    doc["services"]["worker"]["ports"] = 6066


def _unknown_service_key(doc: Doc) -> None:
    doc["services"]["senders"]["commands"] = doc["services"]["senders"].pop("command")


@pytest.mark.parametrize("breakage", [_bad_condition, _ports_not_a_list, _unknown_service_key])
def test_a_broken_compose_file_fails(breakage: Any) -> None:
    doc = _compose()
    validate_compose(doc)
    breakage(doc)
    with pytest.raises(jsonschema.ValidationError):
        validate_compose(doc)


def test_a_compose_service_running_a_missing_command_fails() -> None:
    doc = _compose()
    doc["services"]["worker"]["command"] = ["workers"]
    with pytest.raises(AssertionError, match="not a valid command"):
        check_compose_commands(doc)


def test_settings_check_refuses_a_misspelt_name() -> None:
    assert is_setting("SMS__TWILIO_AUTH_TOKEN")
    assert is_setting("KAFKA_BROKER_URL")
    assert not is_setting("SMS__TWILIO_TOKEN")
    assert not is_setting("KAFKA_BROKER")


# ---------------------------------------------------------------- docs/operations.md

METRIC_DEFINITION = re.compile(
    r"\b(?:PromCounter|Counter|Histogram|Gauge|Summary)\(\s*\"(chat_notifier_\w+)\""
)


def metrics_defined() -> set[str]:
    return {
        m.group(1)
        for path in (ROOT / "processors").rglob("*.py")
        for m in METRIC_DEFINITION.finditer(path.read_text())
    }


def test_operations_page_explains_every_metric() -> None:
    names = metrics_defined()
    assert "chat_notifier_flushes_total" in names  # the scan finds definitions at all
    page = (ROOT / "docs" / "operations.md").read_text()
    missing = sorted(n for n in names if f"`{n}`" not in page)
    assert not missing, f"add to docs/operations.md (meaning and an alert): {missing}"
