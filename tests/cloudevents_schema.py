"""Validation of outgoing CloudEvents against the CloudEvents 1.0 JSON schema, with format checks.

The schema is the spec repository's ``cloudevents/cloudevents.json`` (tests/data/webhooks/README.md has
its provenance and licence). ``jsonschema`` checks ``format`` only for formats whose checker library is
installed, and otherwise passes silently: ``uri-reference`` (``source``) needs ``rfc3986-validator`` and
``date-time`` (``time``) needs ``rfc3339-validator``, both in the test extra. :data:`CHECKER` refuses to
exist without them, so a missing library fails loudly instead of turning the check into a no-op.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator, FormatChecker
from jsonschema.exceptions import ValidationError

SCHEMA_PATH = Path(__file__).parent / "data" / "webhooks" / "cloudevents-1.0.schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))

CHECKER = FormatChecker()
_missing = {"uri-reference", "uri", "date-time"} - set(CHECKER.checkers)
if _missing:
    raise ImportError(f"jsonschema cannot check the formats {sorted(_missing)}: install the test extra "
                      "(rfc3986-validator, rfc3339-validator)")
VALIDATOR = Draft7Validator(SCHEMA, format_checker=CHECKER)


class InvalidCloudEvent(ValueError):
    """A CloudEvent the CloudEvents 1.0 schema refuses; str() lists every reason."""


def problems(event: Any) -> list[str]:
    return [f"{'/'.join(str(p) for p in err.absolute_path) or '<event>'}: {err.message}"
            for err in VALIDATOR.iter_errors(event)]


def validate_cloudevent(event: Any) -> None:
    found = problems(event)
    if found:
        raise InvalidCloudEvent("; ".join(found))


__all__ = ["InvalidCloudEvent", "ValidationError", "problems", "validate_cloudevent"]
