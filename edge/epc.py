"""EPC decoding (GS1 Tag Data Standard) with epcpy: SSCC-96, SGTIN-96 and GID-96 to
their pure-identity URIs and GS1 keys.

Where epcpy falls short for us: it raises bare ValueError/ConvertException for bad
input (translated here), and decodes any known header, including schemes we do not
use on parcels (GIAI, GRAI...). We accept only the three 96-bit schemes the issue
names and report anything else as "not decodable" so the raw hex still travels.
GID has no GS1 key (it is not a GS1 key type), so `gs1_key` is None for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from epcpy.epc_schemes.gid import GID
from epcpy.epc_schemes.sgtin import SGTIN
from epcpy.epc_schemes.sscc import SSCC, SSCCFilterValue
from epcpy.utils.common import ConvertException
from epcpy.utils.parsers import hex_to_tag_encodable

# 96-bit headers of the schemes we decode (TDS table 14-1).
HEADERS = {0x31: "sscc", 0x30: "sgtin", 0x35: "gid"}


@dataclass(frozen=True, slots=True)
class DecodedEpc:
    scheme: str  # sscc, sgtin, gid
    uri: str  # urn:epc:id:...
    gs1_key: str | None  # SSCC (18 digits) or GTIN-14; None for GID
    element_string: str | None  # e.g. (00)106141412345678908


def decode_epc(epc_hex: str) -> DecodedEpc | None:
    """The EPC's identity when it is SSCC-96, SGTIN-96 or GID-96; otherwise None."""
    if len(epc_hex) != 24:
        return None
    try:
        header = int(epc_hex[:2], 16)
        if header not in HEADERS:
            return None
        tag = hex_to_tag_encodable(epc_hex.upper())
    except (ValueError, ConvertException):
        return None
    if isinstance(tag, SSCC | SGTIN):
        return DecodedEpc(HEADERS[header], tag.epc_uri, tag.gs1_key(), tag.gs1_element_string())
    if isinstance(tag, GID):
        return DecodedEpc("gid", tag.epc_uri, None, None)
    return None


def sscc_to_epc_hex(sscc: str, company_prefix_digits: int = 7, filter_value: int = 0) -> str:
    """The SSCC-96 EPC (hex) a parcel's tag carries for an 18-digit SSCC; the scenario
    and simulator use it so tags and labels agree."""
    tag = SSCC.from_gs1_element_string(f"(00){sscc}", company_prefix_digits)
    return str(tag.hex(filter_value=SSCCFilterValue(str(filter_value)))).upper()
