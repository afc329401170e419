"""The one error type a user can cause; the CLI turns it into a message and exit code 2."""
import sys
from typing import Callable


class UserError(ValueError):
    """Bad input from the user: a preset, ratio, plan, file or option that cannot be used.

    The message names the bad value and, where there is a fixed set, the valid choices.
    """


def choice_error(what: str, value, choices) -> UserError:
    return UserError(f"unknown {what} {value!r}; valid choices: {', '.join(sorted(map(str, choices)))}")


def exit_status(command: Callable[[], int | None]) -> int:
    """A script's exit status: what `command` returns (0 for None), or 2 after one `error:` line on
    stderr when it raises a UserError."""
    try:
        return command() or 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
