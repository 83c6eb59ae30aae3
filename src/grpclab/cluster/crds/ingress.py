"""What the sandbox accepts of two built-in kinds: Ingress (class nginx) and TLS Secrets.

Kubernetes' own schema checks their shape; these checks say what the sandbox's nginx
cannot serve, with the same code that renders its config.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from grpclab.cluster.crds.shapes import Kinds
from grpclab.cluster.nginx_conf import IngressConfigError, check_ingress
from grpclab.xds.translation import TranslationError, object_label

TLS_SECRET_TYPE = "kubernetes.io/tls"


class SecretConfigError(TranslationError):
    """A Secret the sandbox cannot keep; names the object and the field."""


def check_secret(secret: Mapping[str, Any]) -> None:
    """The sandbox keeps TLS Secrets only: type kubernetes.io/tls with PEM tls.crt and tls.key."""
    label = object_label(secret)
    if secret.get("type") != TLS_SECRET_TYPE:
        raise SecretConfigError(
            label,
            "type",
            f"the sandbox stores only {TLS_SECRET_TYPE} Secrets (for TLS at its ingress and "
            f"gateways), not {secret.get('type') or 'Opaque'}",
        )
    if secret.get("stringData"):
        raise SecretConfigError(label, "stringData", "give tls.crt and tls.key under data")
    data = secret.get("data") or {}
    for key, marker in (("tls.crt", b"CERTIFICATE"), ("tls.key", b"PRIVATE KEY")):
        if key not in data:
            raise SecretConfigError(label, f"data[{key!r}]", "required in a TLS Secret")
        try:
            pem = base64.b64decode(data[key], validate=True)
        except (binascii.Error, ValueError):
            raise SecretConfigError(label, f"data[{key!r}]", "not base64") from None
        if b"-----BEGIN " not in pem or marker not in pem:
            raise SecretConfigError(label, f"data[{key!r}]", f"not a PEM {marker.decode().lower()}")


# The sandbox runs Ingresses (class nginx) and holds TLS Secrets; Kubernetes' schemas apply.
KINDS: Kinds = {
    ("networking.k8s.io/v1", "Ingress"): (None, check_ingress, IngressConfigError),
    ("v1", "Secret"): (None, check_secret, SecretConfigError),
}
