"""Process-wide test environment: fake AWS credentials and the handlers' configuration.

Handlers read their environment at import, so it is set here, before any test
module imports them. Nothing here reaches AWS: moto intercepts botocore, and the
Management API is a local server on 127.0.0.1.
"""

from __future__ import annotations

import os

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    }
)
for name in list(os.environ):
    if name.startswith("AWS_ENDPOINT_URL") or name in ("AWS_PROFILE", "AWS_CONFIG_FILE"):
        del os.environ[name]
os.environ.update(
    {
        "CONNECTIONS_TABLE": "connections-test",
        "TOKEN_SECRET_PARAMETER": "/realtime/test/token-secret",
        "MANAGEMENT_ENDPOINT": "http://127.0.0.1:9/dev",  # tests hand the broadcaster a real one
    }
)
