from __future__ import annotations

from service import errors
from service.metrics import REJECTION_REASONS


def test_every_client_error_has_a_4xx_or_5xx_status_and_a_pre_initialised_reason() -> None:
    classes = [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.ServiceError) and cls is not errors.ServiceError
    ]
    assert len(classes) >= 8
    for cls in classes:
        assert 400 <= cls.status < 600 and cls.reason in REJECTION_REASONS, cls
    assert errors.Unavailable("x", reason="overloaded").headers == {"Retry-After": "1"}
