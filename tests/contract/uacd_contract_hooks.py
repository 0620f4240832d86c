"""Schemathesis hooks for tests/api_contract.rs.

Generated connections may carry any registrar host; uacd would start
registering to it at once. Before each call, every proxy/outbound_proxy
host that uacd would accept is rewritten to a loopback address (nothing
listens there), so no test traffic leaves 127.0.0.0/8 and no DNS lookup
happens. Hosts that uacd would reject are left alone, so negative cases stay
negative.
"""

import os
import re

import schemathesis

LOOPBACK = os.environ.get("UACD_CONTRACT_BLACKHOLE", "127.0.0.89")
LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST = re.compile(rf"^{LABEL}(\.{LABEL})*\.?$")
URI = re.compile(r"^(sips?:)([^:;?\[\]]*|\[[^\]]*\])(.*)$", re.S | re.I)


def _safe(value):
    m = URI.match(value)
    if not m:
        return value
    host = m.group(2)
    if host.startswith("["):
        return f"{m.group(1)}[::1]{m.group(3)}"
    if HOST.match(host) and len(host) <= 253:
        return f"{m.group(1)}{LOOPBACK}{m.group(3)}"
    return value


@schemathesis.hook
def before_call(context, case, kwargs):
    body = case.body
    if not isinstance(body, dict):
        return
    ext = body.get("external_uac_settings")
    if not isinstance(ext, dict):
        return
    for key in ("proxy", "outbound_proxy"):
        if isinstance(ext.get(key), str):
            ext[key] = _safe(ext[key])

