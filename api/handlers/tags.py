"""Tags (digest 3.10): labels for events, jobs and tickets."""

from __future__ import annotations

from storage.families import TAGS

from ..definitions import FamilySpec, Field, register_family

TAG_SPEC = FamilySpec(
    family=TAGS,
    singular="tag",
    plural="tags",
    prefix="t",
    create="create_tags",
    edit="edit_tags",
    delete="delete_tags",
    fields=(
        Field("title", "title", required=True),
        Field("icon", "icon", default=""),
        Field("notes", "text"),
    ),
)

tags = register_family(TAG_SPEC)
