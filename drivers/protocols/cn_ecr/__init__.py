"""UnionPay-style ECR ("MIS") link between a till and a Chinese bank POS terminal.

* :mod:`.framing` -- bytes -> frame bodies (LRC, strict resync): :class:`CnEcrFramer`.
* :mod:`.fields` -- frame contents: the DFxx TLV list and its field values; :func:`parse_body`.
* :mod:`.interpret` -- frame bodies -> events: :class:`CnEcrDecoder`.
* :mod:`.encode` -- frames a terminal sends, for the simulator and round-trip tests.

Wire format (see tests/data/cn-ecr/README.md for the provenance)::

    [06]  02   LL LL        DFxx len value ...   03    LRC
    ACK   STX  BCD length   TLV body             ETX   XOR

* The length is the body length written as four decimal digits in BCD
  (a 262-byte body is ``02 62``); the terminal's own receiver refuses 0 and
  anything over 1024.
* The LRC is an XOR; vendors differ in its start value (0x00 or 0x7F) and in
  which bytes it covers, hence the ``lrc_init`` / ``lrc_covers`` options.
* The body is a list of TLVs with two-byte ``DFxx`` tags and a length of one
  byte (< 0x80), ``81 n`` or ``82 hi lo``. A response carries DF01 (packet
  type), DF02 (transaction type), DF04 (random echo), DF06 (a nested TLV list
  with the receipt fields) and DF07 (response code).

Framing is deliberately strict so that a corrupted length cannot swallow the
frame after it: a candidate is accepted only when the body is a well-formed
TLV list ending exactly at the ETX, and the LRC matches (unless
``verify_lrc=False``). Every check is a function of the bytes seen so far,
so the outcome never depends on how the stream was chunked; a candidate is
rejected as soon as its prefix proves it wrong, without waiting for the
length it claims.

The transaction-type numbers (POS_* constants) live in a vendor header that
was never published; only 45 (sale, 消费) and 46 (void, 撤销) are confirmed
by captured frames. :data:`DEFAULT_TYPE_MAP` documents the assumption made
for the rest, and ``type_map=`` replaces it per terminal.
"""

from __future__ import annotations

from drivers.protocols.cn_ecr.encode import (
    encode_bcd,
    encode_frame,
    encode_length,
    encode_request,
    encode_response,
    encode_tlv,
    format_amount,
)
from drivers.protocols.cn_ecr.fields import (
    APPROVED_CODES,
    DEFAULT_TYPE_MAP,
    ENTRY_MODES_BY_CODE,
    Amount,
    EcrResult,
    SchemeTotals,
    TlvError,
    bcd_digits,
    entry_mode,
    parse_amount_field,
    parse_body,
    parse_df_tlv,
)
from drivers.protocols.cn_ecr.framing import LRC_COVERAGES, MAX_BODY, CnEcrFramer, LrcCoverage, lrc
from drivers.protocols.cn_ecr.interpret import CnEcrDecoder

__all__ = [
    "APPROVED_CODES", "DEFAULT_TYPE_MAP", "ENTRY_MODES_BY_CODE", "LRC_COVERAGES", "MAX_BODY", "Amount", "CnEcrDecoder",
    "CnEcrFramer", "EcrResult", "LrcCoverage", "SchemeTotals", "TlvError", "bcd_digits", "encode_bcd", "encode_frame",
    "encode_length", "encode_request", "encode_response", "encode_tlv", "entry_mode", "format_amount", "lrc",
    "parse_amount_field", "parse_body", "parse_df_tlv",
]
