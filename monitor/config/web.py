"""`tls:`: the daemon's own server certificate (the exporter-toolkit web config is monitor/web/webconfig.py)."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from pydantic import (
    model_validator,
)

from monitor.config.common import FieldError, Model, ssl_reason


class ServerTLSConfig(Model):
    """The endpoints' own certificate. Kept working for existing configs; the exporter
    convention is `--web.config.file` (tls_server_config), which also re-reads files."""

    # PEM certificate (chain) served by the endpoints.
    cert_file: Path
    # PEM private key of cert_file.
    key_file: Path

    @model_validator(mode="after")
    def _loads(self) -> ServerTLSConfig:
        for key in ("cert_file", "key_file"):
            if not os.access(getattr(self, key), os.R_OK):
                raise FieldError(key, f"cannot read {getattr(self, key)}")
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(self.cert_file), str(self.key_file))
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise FieldError("cert_file", f"the certificate and key do not load: {ssl_reason(exc)}") from None
        return self
