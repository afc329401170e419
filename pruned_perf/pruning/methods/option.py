"""Option: one method-specific keyword option, as a method module declares it in OPTIONS.

The command line builds its flags from these (pruned_perf.cli), so a method with a new option touches
only its own module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Option:
    """`flag` sets the keyword option the OPTIONS entry is named after.

    parse: reads the flag's value (a ValueError names what is wrong with it); None makes the flag a switch
        that sets the option to False (the method's default is on).
    help: what the option does, for --help; the command line prefixes the methods that take it.
    """

    flag: str
    help: str
    parse: Callable[[str], Any] | None = None
    metavar: str | None = None
