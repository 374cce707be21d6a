"""schemathesis against ``/openapi.json``: no 5xx and no response that breaks the document, for valid
and invalid inputs alike. Bounded: a few examples per operation, derandomized so a run is repeatable.

Each operation is called with a token whose role may use it (developer for generation, admin for
``/v1/admin``, auditor for ``/v1/audit``), so the fuzzing reaches the handlers, not only the 401s.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.appliance.api.conftest import Appliance, build_appliance

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    data = tmp_path_factory.mktemp("fuzz")
    a = build_appliance(data, f"sqlite:///{data / 'enclave.db'}")
    try:
        yield a
    finally:
        a.close()


# /v1 routes that take no token and no parameters: nothing invalid can be sent to them.
PUBLIC_WITHOUT_INPUT = frozenset({"/v1/auth/methods"})


def _role_for(path: str) -> str:
    if path.startswith(("/v1/admin", "/scim/")):
        return "adm"
    if path.startswith("/v1/audit"):
        return "aud"
    return "dev"


def _fuzz(operation: Any, mode: GenerationMode, token: str) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def exercise(case: schemathesis.Case) -> None:
        headers: dict[str, Any] = {**dict(case.headers or {}), "Authorization": f"Bearer {token}"}
        case.call_and_validate(headers=headers, checks=CHECKS)

    exercise()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_openapi_document(fuzzed: Appliance, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed.app)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    assert len(operations) > 30

    for operation in operations:
        try:
            _fuzz(operation, mode, fuzzed.tokens[_role_for(operation.path)])
        except Unsatisfiable:
            # An operation without parameters has no invalid input to generate.
            assert mode is GenerationMode.NEGATIVE and (
                not operation.path.startswith("/v1/") or operation.path in PUBLIC_WITHOUT_INPUT
            )
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
