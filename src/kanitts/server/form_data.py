"""A ``multipart/form-data`` body -> its fields, with the standard library's MIME parser
(no extra dependency). Used by the voice upload route; blocking CPU work for large bodies,
so call :func:`parse_form` from a worker thread."""

from __future__ import annotations

from dataclasses import dataclass
from email import policy
from email.parser import BytesParser


class FormError(ValueError):
    """The body is not a readable multipart form; the message is user-facing."""


@dataclass(frozen=True)
class FormField:
    """One form field: ``data`` its raw bytes, ``filename`` set for file fields."""

    name: str
    data: bytes
    filename: str | None = None

    def text(self) -> str:
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError:
            raise FormError(f"form field {self.name!r} is not UTF-8 text") from None


def parse_form(content_type: str, body: bytes) -> dict[str, FormField]:
    """Fields by name (the first of a repeated name wins). Raises :class:`FormError` when
    ``content_type`` is not ``multipart/form-data`` with a boundary or the body does not
    parse as one."""
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type.lower():
        raise FormError("send the voice as multipart/form-data (fields: name, audio, consent)")
    if "\r" in content_type or "\n" in content_type:
        raise FormError("bad Content-Type header")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    msg = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not msg.is_multipart() or msg.defects:
        raise FormError("the multipart form could not be parsed")
    fields: dict[str, FormField] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or not name:
            continue
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            raise FormError(f"form field {name!r} could not be read")
        fields.setdefault(name, FormField(name, data, part.get_filename()))
    return fields
