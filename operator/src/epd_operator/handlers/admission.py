"""kopf glue of the validating admission webhook: one handler calling `api.admission.review`.

kopf serves it over HTTPS (`settings.admission.server`, configured in __main__ from the
certificate the chart mounts) at `/<handler id>`; the chart's ValidatingWebhookConfiguration
points the apiserver there. kopf does not manage the configuration itself (that would need
cluster-wide write access to webhook configurations).
"""

from __future__ import annotations

from typing import Any

import kopf

from epd_operator.api import constants as c
from epd_operator.api.admission import WEBHOOK_ID, review


def register_admission(registry: kopf.OperatorRegistry) -> None:
    def validate(*, body: kopf.Body, warnings: list[str], **kwargs: Any) -> None:
        old = kwargs.get("old")
        verdict = review(
            str(kwargs.get("operation")),
            dict(body.items()),
            dict(old.items()) if old is not None else None,
        )
        warnings.extend(verdict.warnings)
        if verdict.error is not None:
            # 422 like a schema error; the message leads with the field path.
            raise kopf.AdmissionError(str(verdict.error), code=422)

    kopf.on.validate(
        c.GROUP,
        c.VERSION,
        c.PLURAL,
        id=WEBHOOK_ID,
        registry=registry,
        operations=["CREATE", "UPDATE"],
    )(validate)
