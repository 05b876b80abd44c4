"""User-facing errors.

Any :class:`AttriblmError` raised from the library reaches the command line as one line on
stderr and exit code 2. The message must name the file, row, option or name at fault. Anything
else escaping a command is treated as a bug in attriblm: one line, a hint to rerun with
``--debug``, exit code 1 (``attriblm.cli.main``).
"""

from __future__ import annotations


class AttriblmError(Exception):
    """Bad input or configuration the user can fix; the CLI prints it and exits with code 2."""


class DataError(AttriblmError):
    """A data file is missing, unreadable or malformed (the message names the file and row)."""


class ModelError(AttriblmError):
    """A model, tokenizer or adapter cannot be loaded or does not fit (the message names it)."""


class ConfigError(AttriblmError):
    """An option has an invalid value or names something unknown (a method, a task, ...)."""


class OutputError(AttriblmError):
    """An output path cannot be used: a file, a foreign or locked directory, an unwritable
    parent (the message names the path and the option)."""


class FileFormatError(DataError, ValueError):
    """A JSON, YAML or safetensors file is not valid (the message names it). Also a
    ``ValueError``, so code that treats an unparsable file as absent keeps doing so."""


def one_line(exc: BaseException) -> str:
    """``exc``'s message as one line for an error message: its first non-blank line (joined with
    the next when it ends in a colon, a header), cut to 400 characters; the class name when the
    message is empty."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0]
    if text.endswith(":") and len(lines) > 1:
        text = f"{text} {lines[1]}"
    return text[:400]
