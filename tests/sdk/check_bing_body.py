"""Checks an ApplyOfflineConversions REST body against Microsoft's own
definition of the operation: the v13 Campaign Management service
description shipped in the `bingads` Python SDK (PyPI). A mistake that our
Bing mock shares with our dispatcher (a misspelt field, a number sent as a
string) passes the mock but not this.

Usage: check_bing_body.py BATCH_ERROR_FIELDS < body.json
  BATCH_ERROR_FIELDS: the BatchError fields pushwerk reads from an answer's
  PartialErrors, as `Name:type,…` (type one of int, string).
Exit 0 when the body conforms; 1 with the reasons on stderr; 3 when the SDK
is not installed.
"""

import json
import os
import sys
import xml.etree.ElementTree as ET
from datetime import datetime

XS = "{http://www.w3.org/2001/XMLSchema}"


def service_description():
    try:
        import bingads
    except ImportError:
        print("the bingads SDK is not installed (pip install bingads)", file=sys.stderr)
        sys.exit(3)
    path = os.path.join(
        os.path.dirname(bingads.__file__),
        "v13", "proxies", "production", "campaignmanagement_service.xml",
    )
    return ET.parse(path).getroot()


def fields(root, name):
    """Element name -> (type, nillable) of the complex type or element `name`."""
    for node in root.iter():
        if node.tag in (XS + "complexType", XS + "element") and node.get("name") == name:
            seq = node.find(".//" + XS + "sequence")
            if seq is None:
                continue
            return {
                e.get("name"): (e.get("type"), e.get("nillable") == "true")
                for e in seq.findall(XS + "element")
            }
    raise SystemExit(f"{name} is not in the SDK's service description")


def check_value(where, value, xs_type, nillable, problems):
    if value is None:
        if not nillable:
            problems.append(f"{where}: null, but {xs_type} is not nillable")
        return
    local = xs_type.split(":")[-1]
    if local == "string":
        ok = isinstance(value, str)
    elif local in ("double", "decimal", "float"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif local in ("int", "long", "short"):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif local == "dateTime":
        ok = isinstance(value, str)
        if ok:
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                ok = False
    else:
        problems.append(f"{where}: type {xs_type} is not checked here")
        return
    if not ok:
        problems.append(f"{where}: {json.dumps(value)} is not an {xs_type}")


def main():
    root = service_description()
    body = json.load(sys.stdin)
    problems = []
    request = fields(root, "ApplyOfflineConversionsRequest")
    for key in body:
        if key not in request:
            problems.append(f"top level: `{key}` is not a field of ApplyOfflineConversionsRequest")
    items_type = request["OfflineConversions"][0].split(":")[-1]
    item_type = next(iter(fields(root, items_type).values()))[0].split(":")[-1]
    conversion = fields(root, item_type)
    items = body.get("OfflineConversions")
    if not isinstance(items, list) or not items:
        problems.append("OfflineConversions: not a non-empty array")
        items = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(f"OfflineConversions[{i}]: not an object")
            continue
        for key, value in item.items():
            if key not in conversion:
                problems.append(f"OfflineConversions[{i}].{key}: not a field of {item_type} (fields: {', '.join(sorted(conversion))})")
                continue
            xs_type, nillable = conversion[key]
            check_value(f"OfflineConversions[{i}].{key}", value, xs_type, nillable, problems)
    # What pushwerk reads from an answer's PartialErrors.
    response = fields(root, "ApplyOfflineConversionsResponse")
    errors_type = response["PartialErrors"][0].split(":")[-1]
    error_type = next(iter(fields(root, errors_type).values()))[0].split(":")[-1]
    batch_error = fields(root, error_type)
    for spec in filter(None, sys.argv[1].split(",") if len(sys.argv) > 1 else []):
        name, want = spec.split(":")
        if name not in batch_error:
            problems.append(f"{error_type}.{name}: not a field (fields: {', '.join(sorted(batch_error))})")
        elif batch_error[name][0].split(":")[-1] != want:
            problems.append(f"{error_type}.{name}: the SDK says {batch_error[name][0]}, pushwerk reads {want}")
    for p in problems:
        print(p, file=sys.stderr)
    print(f"checked {len(items)} conversions against {item_type} ({len(conversion)} fields)")
    sys.exit(1 if problems else 0)


main()
