"""A failed run's traceback as a plugin's user should see it: the plugin's own frames only.

The stored traceback (``JobRun.traceback``) is the whole one, with the server's paths and the
scheduler's frames; operators read it in the admin. The users' run page shows
:func:`plugin_frames`: the exception lines, and only the frames in the plugin's folder, with
paths relative to it (``sample_plugin@v0_1_0/plugin.py``), so nothing of the server's layout
shows and the line that failed is easy to find.
"""

from __future__ import annotations

import re

from scheduler_app.plugin_host import plugin_root

_FRAME = re.compile(r'^  File "(?P<path>[^"]+)", line (?P<line>\d+)(?P<rest>.*)$')


def _folder_of(package: str) -> str:
    """``plugins.sample_plugin@v0_1_0.plugin.Plugin`` -> ``sample_plugin@v0_1_0``."""
    module = package.rpartition(".")[0] or package
    return plugin_root(module).split(".")[-1]


def plugin_frames(text: str, package: str) -> str:
    """``text`` (a formatted traceback) keeping only the frames in ``package``'s folder.

    Frames elsewhere are summed up as one "… N frames of the scheduler hidden" line; a
    traceback with no frame of the plugin (the failure was outside its code) keeps only its
    exception lines.
    """
    if not text.strip():
        return ""
    folder = _folder_of(package) if package else ""
    marker = f"/{folder}/" if folder else None
    out: list[str] = []
    hidden = 0
    keep_frame = False

    def flush_hidden() -> None:
        nonlocal hidden
        if hidden:
            out.append(f"  … {hidden} frame{'s' if hidden != 1 else ''} of the scheduler hidden")
            hidden = 0

    for line in text.splitlines():
        frame = _FRAME.match(line)
        if frame:
            path = frame.group("path").replace("\\", "/")
            keep_frame = bool(marker and marker in path)
            if keep_frame:
                flush_hidden()
                relative = folder + "/" + path.split(marker, 1)[1]
                out.append(f'  File "{relative}", line {frame.group("line")}{frame.group("rest")}')
            else:
                hidden += 1
            continue
        if line.startswith("    ") or (line.strip() and set(line.strip()) <= set("^~ ")):
            # a frame's source line or its ^^^^ markers: shown with their frame only
            if keep_frame:
                out.append(line)
            continue
        flush_hidden()
        keep_frame = False
        out.append(line)
    flush_hidden()
    return "\n".join(out).strip("\n")
