"""Imports every module that defines tables, so ``Base.metadata`` is complete.

Alembic's ``env.py`` and the models-vs-migrations test import this module; a new model module is
one more import line here.
"""

from __future__ import annotations

import appliance.audit.models
import appliance.db.identity_models
import appliance.db.models  # noqa: F401
from appliance.db.base import Base

__all__ = ["metadata"]

metadata = Base.metadata
