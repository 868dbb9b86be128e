"""Schemathesis hooks for .ci/run's fuzz_openapi step.

POST /import takes an export as NDJSON (application/x-ndjson), a media type
schemathesis has no serializer for: the generated body (a string, as the
OpenAPI document declares it) is sent as its UTF-8 bytes, so the server's
answers to garbage imports are checked like any other.
"""

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    """Sends the generated body verbatim: bytes as they are, anything else as its text."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")
