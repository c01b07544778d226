"""``fleetwave schema --kind ...`` accepts exactly what the loaders accept.

For every kind: the examples in the repository are valid, a table of bad inputs is
invalid, and generated inputs (hypothesis) get the same verdict from ``jsonschema``
and from the loader. Where JSON Schema cannot say what the loader checks, the
generators leave the case out and the comment next to it says which.
"""

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetwave.cli import main
from fleetwave.cli.plan import SCHEMAS, pipeline_json_schema
from fleetwave.config.schema import (
    AnyOf,
    Day,
    Field,
    ListOf,
    Locator,
    MapOf,
    Obj,
    Spec,
    Str,
    json_schema,
)
from fleetwave.config.schemas import (
    agent_json_schema,
    package_json_schema,
    topology_json_schema,
)
from fleetwave.config.spec import PIPELINE_SPEC
from fleetwave.config.topology import TOPOLOGY_SPEC
from fleetwave_agent.config import parse_config
from fleetwave_agent.package import load_package_config
from fleetwave_core.errors import ConfigError, FleetwaveError
from fleetwave_core.yamlsrc import YamlDocument

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def as_json(value: Any) -> Any:
    """YAML data as the JSON a schema validator sees (dates are strings there)."""
    if isinstance(value, dict):
        return {str(k): as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_json(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def valid(schema: dict[str, Any], value: Any) -> bool:
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    return validator.is_valid(as_json(value))


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.mark.unit
@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_every_schema_is_a_valid_draft_2020_12_schema(kind, capsys):
    assert main(["schema", "--kind", kind]) == 0
    schema = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"].endswith(f"/{kind}.json")


# ------------------------------------------------------------------ the examples


PIPELINES = sorted(
    [
        *EXAMPLES.glob("*/pipeline.yaml"),
        *EXAMPLES.glob("production/*.yaml"),
        EXAMPLES / "production" / "team" / "defaults.yaml",
    ]
)
TOPOLOGIES = sorted(EXAMPLES.glob("**/topology.yaml"))
PACKAGES = sorted(EXAMPLES.glob("**/fleetwave-package.yaml*"))


@pytest.mark.integration
@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_pipelines_are_valid(path):
    assert valid(pipeline_json_schema(), load(path))


@pytest.mark.integration
@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_topologies_are_valid(path):
    assert valid(topology_json_schema(), load(path))


@pytest.mark.integration
@pytest.mark.parametrize("path", PACKAGES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_package_files_are_valid(path):
    data = yaml.safe_load(path.read_text().replace("@PORT@", "8080"))
    assert valid(package_json_schema(), data)


def _doc_agent_yaml() -> str:
    text = (REPO / "docs" / "agent.md").read_text()
    block = re.search(r"```yaml\n(root: .*?)```", text, re.S)
    assert block is not None
    return block.group(1)


@pytest.mark.integration
@pytest.mark.parametrize(
    "text",
    [
        (REPO / "packaging" / "deb" / "agent.yaml").read_text(),
        _doc_agent_yaml(),
    ],
    ids=["packaging/deb/agent.yaml", "docs/agent.md"],
)
def test_example_agent_configs_are_valid_and_accepted(text):
    assert valid(agent_json_schema(), yaml.safe_load(text))
    assert _agent_accepts(yaml.safe_load(text))


@pytest.mark.unit
def test_the_pipeline_examples_cover_the_schema():
    assert len(PIPELINES) >= 5
    assert len(TOPOLOGIES) >= 3
    assert len(PACKAGES) >= 2


# ------------------------------------------------------------------ bad inputs


MINIMAL = {"name": "p", "service": "s", "topology": "t.yaml", "waves": [{"regions": ["r1"]}]}


@pytest.mark.unit
@pytest.mark.parametrize(
    "patch",
    [
        {"name": "web 1"},  # not anchored, the old pattern matched its prefix
        {"name": "-web"},
        {"name": "web\n"},
        {"service": ""},
        {"unit": "rack"},
        {"rolling": {"max_batch": 0}},
        {"rolling": {"max_batch": "0%"}},
        {"rolling": {"min_healthy": "101%"}},
        {"rolling": {"max_batch": True}},
        {"stage_bake": {"time": "soon"}},
        {"stage_bake": {"time": -1}},
        {"onebox": {"enabld": True}},
        {"waves": []},
        {"waves": [{"regions": []}]},
        {"alarms": [{"name": "bad name", "metric": "errors"}]},
        {"deploy": {"ssh": {"port": 70000}}},
        {"deploy": {"load_balancers": [{"name": "x"}]}},
        {"bogus": 1},
    ],
)
def test_bad_pipelines_are_invalid_for_both(patch):
    doc = {**MINIMAL, **patch}
    strict = json_schema(PIPELINE_SPEC, title="t", schema_id="t", partial=False)
    assert not valid(strict, doc)
    assert not _spec_accepts(PIPELINE_SPEC, doc)


@pytest.mark.unit
def test_the_minimal_pipeline_is_valid_for_both():
    strict = json_schema(PIPELINE_SPEC, title="t", schema_id="t", partial=False)
    assert valid(strict, MINIMAL)
    assert _spec_accepts(PIPELINE_SPEC, MINIMAL)
    assert valid(strict, {**MINIMAL, "name": 2024})  # YAML reads it as a number
    assert valid(strict, {**MINIMAL, "onebox": None})  # `onebox:` with nothing after it


@pytest.mark.unit
@pytest.mark.parametrize(
    "topology",
    [
        {},
        {"regions": {}},
        {"regions": {"r 1": {"traffic": "low", "timezone": "UTC", "azs": {"a": []}}}},
        {"regions": {"r1": {"traffic": "mid", "timezone": "UTC", "azs": {"a": []}}}},
        {"regions": {"r1": {"traffic": "low", "timezone": "UTC", "azs": {}}}},
        {"regions": {"r1": {"traffic": "low", "azs": {"a": []}}}},
        {"regions": {"r1": {"traffic": "low", "timezone": "UTC", "azs": {"a": [{"name": "h"}]}}}},
        {
            "regions": {
                "r1": {
                    "traffic": "low",
                    "timezone": "UTC",
                    "azs": {"a": [{"name": "h", "address": "x", "lb": None}]},
                }
            }
        },
    ],
)
def test_bad_topologies_are_invalid_for_both(topology):
    assert not valid(topology_json_schema(), topology)
    assert not _spec_accepts(TOPOLOGY_SPEC, topology)


def _agent_accepts(data: Any) -> bool:
    try:
        parse_config(YamlDocument(path=Path("/etc/fleetwave/agent.yaml"), data=data))
    except FleetwaveError:
        return False
    return True


def _package_accepts(data: Any, tmp: Path) -> bool:
    path = tmp / "fleetwave-package.yaml"
    path.write_text(yaml.safe_dump(data))
    try:
        load_package_config(path)
    except FleetwaveError:
        return False
    return True


BAD_AGENT = [
    [],
    {"root": ""},
    {"rooot": "/x"},
    {"trusted_keys": "/k.pub"},
    {"revoked_key_ids": ["0123456789ABCDEF"]},
    {"revoked_key_ids": ["0123456789abcdef\n"]},
    {"keep_releases": 1},
    {"keep_releases": True},
    {"limits": {"max_members": 0}},
    {"limits": {"max_files": 1}},
    {"stop_failure": "ignore"},
    {"stop_timeout": "0s"},
    {"stop_timeout": 0},
    {"hook_output_max_bytes": 1000},
    {"exporter": {"port": 65536}},
    {"exporter": {"health_interval": "0ms"}},
    {"app": {"metrics": {}}},
    {"app": {"metrics": {"prometheus": "ftp://x", "access_log": {"path": "a"}}}},
    {"app": {"metrics": {"prometheus": {"requests_metric": "r"}}}},
    {"app": {"metrics": {"access_log": {"format": "x"}}}},
    {"app": {"metrics": {"access_log": {"path": "a", "duration_unit": "us"}}}},
    {"app": {"log": {}}},
    {"app": {"process": {"pid_file": "p", "name": "n"}}},
    {"app": {"process": {}}},
    {"rpc_socket": 5},
]


@pytest.mark.unit
@pytest.mark.parametrize("data", BAD_AGENT, ids=lambda d: json.dumps(d)[:60])
def test_bad_agent_configs_are_invalid_for_both(data):
    assert not valid(agent_json_schema(), data)
    assert not _agent_accepts(data)


BAD_PACKAGE = [
    [],
    {"hook": {}},
    {"hooks": {"restart": {"argv": ["x"]}}},
    {"hooks": {"start": None}},
    {"hooks": {"start": {"argv": []}}},
    {"hooks": {"start": {"argv": [1]}}},
    {"hooks": {"start": {"argv": ["x"], "timeout": "0s"}}},
    {"hooks": {"start": {"argv": ["x"], "retries": 1}}},
    {"hooks": ["start"]},
    {"health_checks": {"name": "x"}},
    {"health_checks": [{"name": "h", "kind": "udp"}]},
    {"health_checks": [{"name": "", "kind": "tcp", "port": 1}]},
    {"health_checks": [{"name": "h", "kind": "http"}]},
    {"health_checks": [{"name": "h", "kind": "http", "url": "ftp://x"}]},
    {"health_checks": [{"name": "h", "kind": "http", "url": "http://x", "expect_status": 99}]},
    {"health_checks": [{"name": "h", "kind": "http", "url": "http://x", "port": 80}]},
    {"health_checks": [{"name": "h", "kind": "tcp"}]},
    {"health_checks": [{"name": "h", "kind": "tcp", "port": 0}]},
    {"health_checks": [{"name": "h", "kind": "tcp", "port": 1, "host": ""}]},
    {"health_checks": [{"name": "h", "kind": "command", "argv": []}]},
    {"health_checks": [{"name": "h", "kind": "command", "argv": ["x"], "deadline": "0ms"}]},
]


@pytest.mark.integration
@pytest.mark.parametrize("data", BAD_PACKAGE, ids=lambda d: json.dumps(d)[:60])
def test_bad_package_files_are_invalid_for_both(data, tmp_path):
    assert not valid(package_json_schema(), data)
    assert not _package_accepts(data, tmp_path)


@pytest.mark.integration
def test_known_gap_duplicate_health_check_names(tmp_path):
    # JSON Schema cannot require a property to be unique across list items.
    data = {"health_checks": [{"name": "h", "kind": "tcp", "port": 1}] * 2}
    assert valid(package_json_schema(), data)
    assert not _package_accepts(data, tmp_path)


# ------------------------------------------------------------------ generated inputs

# Letters that matter to the patterns: digits, unit letters, separators, '%', space, newline.
_TEXT = st.text(alphabet="0123456789.-_:%smhdwHMSab \n+eE", max_size=8)
_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=70000),
    # JSON has one number type: 5.0 is the integer 5 to a schema, not to Python's
    # isinstance(), so integral floats are left out.
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e3, max_value=1e20).filter(
        lambda f: not f.is_integer()
    ),
    _TEXT,
)


def _expressible(spec: Spec) -> bool:
    """Specs whose checks JSON Schema can state: no conversion code, no dates."""
    if isinstance(spec, Str):
        return spec.convert is None
    if isinstance(spec, Day):
        return False  # date.fromisoformat takes more shapes than format: date
    if isinstance(spec, Obj):
        return all(_expressible(f.spec) for f in spec.fields)
    if isinstance(spec, ListOf):
        return _expressible(spec.item)
    if isinstance(spec, MapOf):
        return _expressible(spec.value)
    if isinstance(spec, AnyOf):
        return all(_expressible(o) for o in spec.options)
    return True


def _nodes(spec: Spec, out: dict[int, Spec]) -> dict[int, Spec]:
    out.setdefault(id(spec), spec)
    children: list[Spec] = []
    if isinstance(spec, Obj):
        children = [f.spec for f in spec.fields]
    elif isinstance(spec, ListOf):
        children = [spec.item]
    elif isinstance(spec, MapOf):
        children = [spec.value]
    elif isinstance(spec, AnyOf):
        children = list(spec.options)
    for child in children:
        _nodes(child, out)
    return out


def _spec_accepts(spec: Spec, value: Any) -> bool:
    try:
        spec.check(value, "", Locator())
    except ConfigError:
        return False
    return True


NODES = [
    s
    for s in {**_nodes(PIPELINE_SPEC, {}), **_nodes(TOPOLOGY_SPEC, {})}.values()
    if _expressible(s) and not isinstance(s, Obj | ListOf | MapOf)
]


def _values_for(spec: Spec) -> st.SearchStrategy[Any]:
    """Generated values for a spec: random scalars, plus shapes near the valid ones."""
    if isinstance(spec, Obj):
        keys = st.sampled_from([f.name for f in spec.fields] + ["bogus"])
        return st.dictionaries(keys, st.deferred(lambda: _VALUE), max_size=4)
    return _VALUE


_VALUE = st.recursive(
    _SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(_TEXT, inner, max_size=3),
    ),
    max_leaves=6,
)


@pytest.mark.unit
def test_there_are_generated_cases_for_each_leaf_kind():
    kinds = {type(s).__name__ for s in NODES}
    assert {"Str", "Int", "Bool", "Duration", "Amount"} <= kinds


@pytest.mark.unit
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_leaf_schema_verdict_equals_the_loader_verdict(data):
    spec = data.draw(st.sampled_from(NODES))
    value = data.draw(_values_for(spec))
    assert valid(spec.json(), value) == _spec_accepts(spec, value), (spec, value)


_CONTAINERS = [
    s
    for s in {**_nodes(PIPELINE_SPEC, {}), **_nodes(TOPOLOGY_SPEC, {})}.values()
    if _expressible(s) and isinstance(s, Obj)
]


@pytest.mark.unit
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_object_schema_verdict_equals_the_loader_verdict(data):
    spec = data.draw(st.sampled_from(_CONTAINERS))
    value = data.draw(st.one_of(st.none(), _values_for(spec)))
    assert valid(spec.json(), value) == _spec_accepts(spec, value), (spec, value)


@pytest.mark.unit
@settings(max_examples=200, deadline=None)
@given(
    name=st.text(alphabet="abAZ09_.-:/ \n", max_size=6)
    | st.integers(-5, 10**20)
    | st.floats(-1, 1e20).filter(lambda f: not f.is_integer())  # see _SCALAR
)
def test_name_patterns_agree_with_fullmatch(name):
    for pattern_spec in (Str(pattern=r"[A-Za-z0-9][A-Za-z0-9_.\-]*"),):
        assert valid(pattern_spec.json(), name) == _spec_accepts(pattern_spec, name), name
    field = MapOf(Str(), key_pattern=r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
    doc = {str(name): "x"}
    assert valid(field.json(), doc) == _spec_accepts(field, doc), name


_AGENT_KEYS = [
    "root",
    "trusted_keys",
    "revoked_key_ids",
    "keep_releases",
    "limits",
    "stop_failure",
    "stop_timeout",
    "hook_output_max_bytes",
    "exporter",
    "app",
    "rpc_socket",
]
_AGENT_VALUES = st.one_of(
    _VALUE,
    st.sampled_from(
        [
            "continue",
            "abort",
            "/k.pub",
            ["0123456789abcdef"],
            ["a.pub", ""],
            {"port": 9731, "listen": "0.0.0.0", "health_interval": "5s"},
            {"port": -1},
            {"max_members": 10},
            {"metrics": {"prometheus": "http://x/metrics"}},
            {"metrics": {"prometheus": {"url": "https://x", "timeout": "1s"}}},
            {"metrics": {"access_log": {"path": "a", "duration_unit": "ms"}}},
            {"log": {"path": "l"}},
            {"process": {"name": "app"}},
            {"process": {"pid_file": ""}},
            1024,
            2,
        ]
    ),
)


@pytest.mark.unit
@settings(max_examples=300, deadline=None)
@given(data=st.dictionaries(st.sampled_from([*_AGENT_KEYS, "other"]), _AGENT_VALUES, max_size=4))
def test_agent_schema_verdict_equals_the_agents_verdict(data):
    assert valid(agent_json_schema(), data) == _agent_accepts(data), data


_CHECKS = st.fixed_dictionaries(
    {"name": st.sampled_from(["a", "b", "", 3]), "kind": st.sampled_from(["http", "tcp", "x"])},
    optional={
        "url": st.sampled_from(["http://x/health", "x", 5]),
        "port": st.sampled_from([0, 1, 65535, 65536, "80"]),
        "host": st.sampled_from(["h", ""]),
        "argv": st.sampled_from([["./x"], [], "x"]),
        "expect_status": st.sampled_from([200, 99, 600, "200"]),
        # Durations under half a millisecond round to 0 ms, which only the agent
        # refuses (a gap of the schema), so none are generated.
        "timeout": st.sampled_from(["1s", "0s", 0, 2, "1ms", "bad", 0.5]),
    },
)


@pytest.mark.integration
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    hooks=st.one_of(
        st.none(),
        st.dictionaries(
            st.sampled_from(["start", "stop", "validate", "restart"]),
            st.one_of(
                st.none(),
                st.fixed_dictionaries(
                    {"argv": st.sampled_from([["./bin/start"], [], ["a", 1]])},
                    optional={"timeout": st.sampled_from(["30s", "0s", 1, "x"])},
                ),
            ),
            max_size=2,
        ),
    ),
    checks=st.one_of(st.none(), st.lists(_CHECKS, max_size=1)),
)
def test_package_schema_verdict_equals_the_agents_verdict(hooks, checks, tmp_path):
    data: dict[str, Any] = {}
    if hooks is not None:
        data["hooks"] = hooks
    if checks is not None:
        data["health_checks"] = checks
    assert valid(package_json_schema(), data) == _package_accepts(data, tmp_path), data


@pytest.mark.unit
def test_schema_documents_render_without_the_loader_running():
    # A field added to a spec must be rendered too (no hand-kept copy of the names).
    schema = topology_json_schema()
    region = schema["properties"]["regions"]["additionalProperties"]
    assert set(region["properties"]) == {f.name for f in _region_fields()}


def _region_fields() -> tuple[Field, ...]:
    regions = TOPOLOGY_SPEC.field_named("regions").spec
    assert isinstance(regions, MapOf)
    assert isinstance(regions.value, Obj)
    return regions.value.fields
