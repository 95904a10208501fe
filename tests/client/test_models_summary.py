"""``GET /models`` lists a summary of each model (no stored card, no training history); the whole card is
at ``GET /models/{name}``, which the summary names as ``card_url`` and the OpenAPI document describes."""

from __future__ import annotations

import httpx

from service.client import MadeClient


def test_list_is_a_summary_and_the_card_is_one_route_away(server_url: str) -> None:
    listing = httpx.get(f"{server_url}/models").json()
    for m in listing["models"]:
        assert "card" not in m and "data" not in m
        assert m["card_url"] == f"/models/{m['name']}"
        assert {"shape", "value_range", "binary", "completion", "metrics", "ready"} <= set(m)
        whole = httpx.get(server_url + m["card_url"]).json()
        assert whole["card"]["name"] == m["name"] and "data" in whole
        assert {k: v for k, v in whole.items() if k not in ("card", "data")} == {
            k: v for k, v in m.items() if k != "card_url"
        }


def test_client_reads_both(server_url: str) -> None:
    with MadeClient(server_url) as c:
        summary = {m.name: m for m in c.models().models}
        assert summary["tiny"].card == {} and summary["tiny"].can_complete
        assert c.model("tiny").card["name"] == "tiny"


def test_openapi_documents_the_two_routes(server_url: str) -> None:
    spec = httpx.get(f"{server_url}/openapi.json").json()
    listed = spec["paths"]["/models"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    one = spec["paths"]["/models/{name}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert listed["$ref"].endswith("/ModelSummaryList") and one["$ref"].endswith("/ModelCard")
    summary = spec["components"]["schemas"]["ModelSummary"]["properties"]
    assert "card_url" in summary and "card" not in summary
    assert "card" in spec["components"]["schemas"]["ModelCard"]["properties"]
