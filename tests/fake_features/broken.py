"""An optional feature whose module fails at import, as a router with a broken import would."""

import a3e_module_that_does_not_exist  # noqa: F401

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1/broken")
