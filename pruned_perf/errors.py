"""The one error type a user can cause; the CLI turns it into a message and exit code 2."""


class UserError(ValueError):
    """Bad input from the user: a preset, ratio, plan, file or option that cannot be used.

    The message names the bad value and, where there is a fixed set, the valid choices.
    """


def choice_error(what: str, value, choices) -> UserError:
    return UserError(f"unknown {what} {value!r}; valid choices: {', '.join(sorted(map(str, choices)))}")
