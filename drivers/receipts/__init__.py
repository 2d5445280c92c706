"""Receipt templates: what a printed slip records, read from its text lines.

:mod:`.extract` applies templates to receipt text (pure); :mod:`.load` reads and validates the TOML
files they come from (the only file I/O here).
"""

from __future__ import annotations

from drivers.receipts.extract import (
    FIELD_NAMES,
    TEMPLATE_KINDS,
    FieldRule,
    ReceiptTemplate,
    SettlementRule,
    TemplateError,
    extract,
    lookup,
    parse_printed_amount,
    read_receipt,
)
from drivers.receipts.lines import looks_like_a_sale, normalise
from drivers.receipts.load import bundled_template_dir, load_template, load_templates, parse_template

__all__ = [
    "FIELD_NAMES",
    "TEMPLATE_KINDS",
    "FieldRule",
    "ReceiptTemplate",
    "SettlementRule",
    "TemplateError",
    "bundled_template_dir",
    "extract",
    "load_template",
    "load_templates",
    "looks_like_a_sale",
    "lookup",
    "normalise",
    "parse_printed_amount",
    "parse_template",
    "read_receipt",
]
