"""Textual widgets with the wizard's workarounds.

``OrderedInput``: Textual 8.2.8's ``Input`` inserts printable keys in its own ``_on_key``,
but its bound keys (Backspace, Delete, arrows, Home/End, ctrl+k …) run only after the key
event has bubbled, one message queue at a time, up to the App, which then looks up the
binding. Keys that arrive in one terminal read are all queued at once, so a digit typed
right after a Backspace is inserted while the Backspace is still on its way up, and the
Backspace then deletes the digit (Textualize/textual#6605; fix proposed in #6631). Over a
laggy SSH link a fast edit reads wrong. This subclass runs the Input's own bindings when
the key reaches it, in order with the typed characters.
"""

from __future__ import annotations

from textual import events
from textual.binding import Binding
from textual.widgets import Input


def _own_bindings(cls: type[Input]) -> dict[str, str]:
    """key → action for the bindings Input declares itself (its public BINDINGS)."""
    keys: dict[str, str] = {}
    for binding in cls.BINDINGS:
        if isinstance(binding, Binding):
            key_text, action = binding.key, binding.action
        else:
            key_text, action = binding[0], binding[1]
        for key in key_text.split(","):
            keys.setdefault(key.strip(), action)
    return keys


INPUT_KEYS = _own_bindings(Input)


class OrderedInput(Input):
    """An Input whose editing keys apply in the order they were typed."""

    async def on_key(self, event: events.Key) -> None:
        action = INPUT_KEYS.get(event.key)
        if action is None or event.is_printable:
            return
        # handled here, so it does not bubble on and fire the binding a second time
        event.stop()
        event.prevent_default()
        await self.run_action(action)
