"""Errors that name the arguments they are about, in the caller's words.

A library function says ``batch_size 10 is not divisible by devices 4``; the command that
passed ``--batch-size 10 --devices 4`` says ``--batch-size 10 is not divisible by --devices
4``. One message, two renderings: the message is a template naming each argument as
``{name}`` (its Python name), and the command renders the same template with its flags
(:meth:`ArgumentError.render`) — no message is rewritten.

>>> e = ArgumentError("{batch_size} 10 is not divisible by {devices} 4")
>>> str(e)
'batch_size 10 is not divisible by devices 4'
>>> e.render(lambda name: "--" + name.replace("_", "-"))
'--batch-size 10 is not divisible by --devices 4'
"""

from collections.abc import Callable


class ArgumentError(ValueError):
    """A bad argument (or combination of arguments). ``template`` names every argument as
    ``{name}``, by its Python name; a value that holds braces is written as ``{{`` and ``}}``
    (or passed through :func:`literal`)."""

    def __init__(self, template: str):
        self.template = template
        super().__init__(self.render())

    def render(self, name: Callable[[str], str] = str) -> str:
        """The message, each argument written as ``name(argument)``."""
        return self.template.format_map(_Names(name))


class _Names(dict):
    def __init__(self, name: Callable[[str], str]):
        super().__init__()
        self.name = name

    def __missing__(self, key: str) -> str:
        return self.name(key)


def literal(value) -> str:
    """``value`` as text to put in a template: its braces doubled."""
    return str(value).replace("{", "{{").replace("}", "}}")
