"""Typed names for the untyped prometheus-client helpers this project calls.

prometheus-client ships no annotations for these two functions; naming their real
signatures once here keeps `mypy --strict` meaningful everywhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from prometheus_client import disable_created_metrics as _disable_created_metrics
from prometheus_client.utils import floatToGoString as _float_to_go_string

# The text Prometheus' exposition format uses for a number ("1.0", "+Inf", "1e+06").
float_to_go: Callable[[float], str] = cast("Callable[[float], str]", _float_to_go_string)
# Stops prometheus-client from exporting a *_created series beside every counter.
disable_created_metrics: Callable[[], None] = cast("Callable[[], None]", _disable_created_metrics)
