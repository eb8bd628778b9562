"""Process titles, so `ps` shows what each queuectl process is doing."""

from setproctitle import setproctitle


def set_title(title: str) -> None:
    setproctitle(title)

