"""Property-based fuzzing of the whole API from its own /openapi.json (schemathesis, in-process ASGI).

Every operation gets schema-valid and schema-invalid requests; no answer may be a 5xx, and every
answer must match what the schema declares (status, content type, body, headers). Bounded and
deterministic: a fixed number of examples per operation and mode, derandomized, no example database.
(schemathesis's own pytest plugin does not run under pytest 9, so Hypothesis drives its strategies.)
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.api import create_app
from tests.api.conftest import settings_for

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
EXAMPLES = int(os.environ.get("MADE_FUZZ_EXAMPLES", "15"))  # per operation and mode


@pytest.fixture(scope="module")
def api_schema(model_repo: Path) -> Iterator[schemathesis.BaseSchema]:
    """The app (tiny models, small limits) and its schema; its lifespan runs on schemathesis's loop."""
    app = create_app(settings_for(model_repo, request_timeout_s=10.0))
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    shutdown_lifespans()


def operations(schema: schemathesis.BaseSchema) -> list[schemathesis.APIOperation]:
    return [result.ok() for result in schema.get_all_operations()]


def test_every_route_is_in_the_schema(api_schema: schemathesis.BaseSchema) -> None:
    labels = {op.label for op in operations(api_schema)}
    for label in ("POST /log-prob", "POST /sample", "POST /complete", "GET /models", "GET /metrics"):
        assert label in labels


def fuzzer(
    op: schemathesis.APIOperation,
    mode: schemathesis.GenerationMode,
    pinned: dict[str, str] | None,
    statuses: Counter[tuple[str, int]],
) -> Callable[[], None]:
    """A bounded, derandomized Hypothesis test of one operation that counts the statuses it saw."""

    @given(case=op.as_strategy(generation_mode=mode, path_parameters=pinned))
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call_and_validate(checks=CHECKS)
        statuses[op.label, response.status_code] += 1

    return fuzz


MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]


@pytest.mark.parametrize("model", [None, "tiny"], ids=["any-name", "served-model"])
@pytest.mark.parametrize("mode", MODES, ids=[m.value for m in MODES])
def test_api_never_fails_and_matches_its_schema(
    api_schema: schemathesis.BaseSchema, mode: schemathesis.GenerationMode, model: str | None
) -> None:
    """Random names mostly meet 404s; the second pass pins ``{name}`` to a served model, so the
    handlers behind the lookup see the generated queries too."""
    failures: dict[str, str] = {}
    statuses: Counter[tuple[str, int]] = Counter()
    for op in operations(api_schema):
        pinned = {"name": model} if model and "{name}" in op.path else None
        if model and not pinned:
            continue

        fuzz = fuzzer(op, mode, pinned, statuses)
        try:
            fuzz()
        except Unsatisfiable:
            # nothing about this operation can be made invalid (no body, free-form path parameters)
            assert mode == schemathesis.GenerationMode.NEGATIVE, op.label
        except Exception as e:
            failures[op.label] = f"{type(e).__name__}: {e}"
    print(sorted(statuses.items()))
    assert not failures, "\n\n".join(f"{k}\n{v}" for k, v in failures.items())
    assert not any(status >= 500 for _, status in statuses)
