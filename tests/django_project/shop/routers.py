"""The delegate router: chooses the database for a model (pgrouter picks the host in a set)."""

from typing import Any


class NotesRouter:
    """Notes live on ``direct``, an alias in no set; everything else: no opinion (``default``)."""

    def _choose(self, model: Any, **hints: Any) -> str | None:
        return "direct" if model is not None and model._meta.model_name == "note" else None

    db_for_read = _choose
    db_for_write = _choose
