"""docker/'s Prometheus config, alert rules and Grafana dashboard work against the real server.

promtool checks the config and rules and runs the rules' own unit tests; every series the dashboard
and the rules query must exist in a scrape of the test server; and a real Prometheus, started with
the shipped config pointed at the test server, reads the token counters back through its query API
and evaluates every dashboard query and alert rule without error.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
import yaml

from tests.support.metrics import scrape
from tests.support.ports import free_port
from tests.support.repo import REAL_MODEL, ROOT
from tests.support.servers import running_command
from tests.support.waiting import wait_for

DOCKER = ROOT / "docker"
PROMETHEUS_CONFIG = DOCKER / "prometheus" / "prometheus.yml"
ALERT_RULES = DOCKER / "prometheus" / "alerts.yml"
ALERT_TESTS = DOCKER / "prometheus" / "alerts.test.yml"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "wai.json"
# Series Prometheus makes itself, never in a scrape.
PROMETHEUS_SERIES = {"up"}
# What Grafana puts in place of its variables when it sends a query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$model": ".*"}
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: `make test` installs Debian's prometheus package"
    return path


def promtool(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run([tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        # label_values(metric, label) is Grafana's; the metric inside it is what Prometheus sees.
        queries.append(re.fullmatch(r"label_values\((.+), \w+\)", variable["definition"]).group(1))
    return queries


def rule_queries() -> list[str]:
    rules = yaml.safe_load(ALERT_RULES.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def for_prometheus(query: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    return query


def series_names(query: str) -> set[str]:
    """The metric names a PromQL expression reads (not functions, labels, keywords or numbers)."""
    text = re.sub(r'"[^"]*"', "", query)  # label values
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", text)  # grouping labels
    names = set()
    for match in re.finditer(r"(?<![\w:.$])[a-zA-Z_:][\w:]*", text):  # not the unit of 5m
        following = text[match.end() :].lstrip()
        if not following.startswith("(") and match.group().lower() not in PROMQL_WORDS:
            names.add(match.group())
    return names


def test_series_names_are_read_from_promql():
    query = (
        'histogram_quantile(0.99, sum by (model, le) (rate(wai_x_bucket{model=~"$m", le!="1"}[5m]))) '
        "/ on (model) group_left sum(vllm:y_total offset 5m) > bool 0.5 and up == 0"
    )
    assert series_names(query) == {"wai_x_bucket", "vllm:y_total", "up"}


def test_prometheus_config_and_rules_pass_promtool():
    assert "SUCCESS" in promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert "SUCCESS: 5 rules found" in promtool("check", "rules", str(ALERT_RULES))


def test_every_alert_fires_in_the_rules_unit_tests():
    assert "SUCCESS" in promtool("test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)


@pytest.fixture(scope="module")
def traffic(server):
    """One answer and one error, so that every series the dashboard reads has samples."""
    with server.client() as client:
        ok = client.post(server.run_url(), json={"prompt": "Name three colours.", "max_tokens": 8})
        assert ok.status_code == 200, ok.text
        assert client.post(server.run_url(), json={"prompt": ""}).status_code == 400
    return ok.json()["result"]["usage"]


def test_every_series_the_dashboard_and_rules_query_is_served(server, traffic):
    queried = set().union(*(series_names(q) for q in dashboard_queries() + rule_queries()))
    # The extraction found the series the panels are about (so this check is not vacuous).
    assert {
        "wai_prompt_tokens_total",
        "wai_generation_tokens_total",
        "vllm:kv_cache_usage_perc",
        "wai_time_to_first_token_seconds_bucket",
        "wai_workers_ai_cost_usd_total",
    } <= queried
    missing = queried - PROMETHEUS_SERIES - scrape(server).names()
    assert not missing, f"queried but not served: {sorted(missing)}"


@pytest.fixture(scope="module")
def prometheus(server, traffic, tmp_path_factory):
    """A real Prometheus with the shipped config, scraping the test server every second."""
    folder = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ALERT_RULES)]
    config["scrape_configs"][0]["static_configs"] = [{"targets": [urlparse(server.base_url).netloc]}]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{free_port()}"
    command = [
        tool("prometheus"),
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address={urlparse(url).netloc}",
    ]
    with running_command(command, url, "/-/ready", folder / "prometheus.log") as prometheus:
        yield prometheus.url


def query(prometheus: str, expr: str) -> dict:
    body = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=30).json()
    assert body["status"] == "success", (expr, body)
    return body["data"]


def test_prometheus_reads_the_token_counters_the_server_exports(server, prometheus):
    served = scrape(server)
    for counter in ("wai_prompt_tokens_total", "wai_generation_tokens_total"):
        expected = served.value(counter, model=REAL_MODEL, lora="none")
        assert expected > 0
        expr = f'{counter}{{job="wai", model="{REAL_MODEL}", lora="none"}}'

        def read_back(expr=expr, expected=expected) -> bool:
            result = query(prometheus, expr)["result"]
            return len(result) == 1 and float(result[0]["value"][1]) == expected

        wait_for(read_back, f"Prometheus to read {counter} = {expected}", timeout=60)


def test_every_dashboard_query_returns_data_in_prometheus(prometheus):
    # rate() needs two scrapes in its window: wait until each query has a result, then it is proven.
    for expr in dashboard_queries():
        wait_for(
            lambda expr=expr: query(prometheus, for_prometheus(expr))["result"], f"a result for {expr}", timeout=60
        )


def test_prometheus_evaluates_every_alert_rule(prometheus):
    def evaluated() -> list[dict]:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=30).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if rules and all(rule.get("health") == "ok" for rule in rules) else []

    rules = wait_for(evaluated, "every rule to be evaluated", timeout=60)
    assert {rule["name"] for rule in rules} == {
        "WaiDown",
        "WaiEngineNotReady",
        "WaiKVCacheNearlyFull",
        "WaiHighErrorRatio",
        "WaiSlowFirstToken",
    }
    # The server is up and its engine ready: those two stay quiet (the others depend on load).
    states = {rule["name"]: rule["state"] for rule in rules}
    assert states["WaiDown"] == states["WaiEngineNotReady"] == "inactive"


def test_compose_mounts_these_files_and_scrapes_its_wai_service():
    # The images are not built by the tests (no Docker needed); their wiring is checked here.
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), volume
    build = services["wai"]["build"]
    assert ((DOCKER / build["context"]).resolve() / build["dockerfile"]).is_file()
    scrape_config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"][0]
    host, port = scrape_config["static_configs"][0]["targets"][0].split(":")
    assert host in services and f"{port}:{port}" in services[host]["ports"][0]
    datasource = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert {panel["datasource"]["uid"] for panel in json.loads(DASHBOARD.read_text())["panels"]} == {
        datasource["datasources"][0]["uid"]
    }
