"""Argument checks shared across the library, with messages in the Keras style."""

import numbers


def invalid_value(name, expected, value):
    return ValueError(
        f"Received an invalid value for `{name}`, expected {expected}. Received: {name}={value!r}"
    )


def check_positive_float(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise invalid_value(name, "a positive float", value)
    return float(value)


def check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise invalid_value(name, "a positive integer", value)
    return int(value)


def check_choice(name, value, choices):
    if value not in choices:
        raise invalid_value(name, f"one of {sorted(choices)}", value)
    return value
