"""Textual widgets with the wizard's workarounds: ``OrderedInput``, ``FollowLog``,
``MarkedRadioButton``.

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

from typing import Any

from textual import events
from textual.binding import Binding
from textual.markup import escape
from textual.reactive import reactive
from textual.widgets import Input, Log, RadioButton

from ds_wizard.core.base.text import sanitize


def safe_markup(text: str) -> str:
    """Text from a file, a name or an error, made safe inside Textual markup: escape
    sequences and control characters removed (:func:`sanitize`), ``[`` escaped."""
    return escape(sanitize(text))


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


class FollowLog(Log):
    """A Log that follows new lines until the user scrolls up, and says which it does.

    Following is the user's choice, not a guess from the scroll position: a terminal
    resize moves the end of the log without the user scrolling, and must not pause it.
    Up, PageUp, Home or the mouse wheel up pause; End (or scrolling back down to the end)
    follows again. The border subtitle shows the state.
    """

    following: reactive[bool] = reactive(True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(auto_scroll=False, **kwargs)

    def on_mount(self) -> None:
        self.watch_following(self.following)

    def watch_following(self, following: bool) -> None:
        self.border_subtitle = "following" if following else "paused — End to follow"
        if following:
            self.scroll_end(animate=False, immediate=True, x_axis=False)

    def add_lines(self, lines: list[str]) -> None:
        # job output is the user's program's: escapes in it never reach the terminal
        self.write_lines([sanitize(line) for line in lines], scroll_end=False)
        if self.following:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
            # lines that arrive before a layout (a loaded machine, a burst of output) are
            # measured against the old size: scroll again once the size is known
            self.call_after_refresh(self.scroll_end, animate=False, immediate=True,
                                    x_axis=False)

    def on_resize(self, event: events.Resize) -> None:
        if self.following:
            self.call_after_refresh(self.scroll_end, animate=False, immediate=True,
                                    x_axis=False)

    def _pause(self) -> None:
        if self.max_scroll_y > 0:
            self.following = False

    def _follow_if_at_end(self) -> None:
        if self.scroll_y >= self.max_scroll_y:
            self.following = True

    def action_scroll_up(self) -> None:
        self._pause()
        super().action_scroll_up()

    def action_page_up(self) -> None:
        self._pause()
        super().action_page_up()

    def action_scroll_home(self) -> None:
        self._pause()
        super().action_scroll_home()

    def action_scroll_end(self) -> None:
        self.following = True
        super().action_scroll_end()

    def action_scroll_down(self) -> None:
        super().action_scroll_down()
        self.call_after_refresh(self._follow_if_at_end)

    def action_page_down(self) -> None:
        super().action_page_down()
        self.call_after_refresh(self._follow_if_at_end)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self._pause()

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        self.call_after_refresh(self._follow_if_at_end)


class MarkedRadioButton(RadioButton):
    """A radio button whose selected state is a glyph, not only a colour (NO_COLOR)."""

    @property
    def BUTTON_INNER(self) -> str:
        return "●" if self.value else " "
